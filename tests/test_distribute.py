"""Distributed training (skin_model/training/distribute.py, train.py --distribute): the mirrored strategy over logical CPU
devices steps exactly like one device with the same global batch, a mirrored train.py run writes a working
bundle, and a two-worker run on 127.0.0.1 trains with only the chief writing. Each run is a fresh process:
logical devices and multi-worker collectives must be set up before TensorFlow starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Tolerance on the losses of two runs that should be the same computation (summation order differs across
#: replicas: measured 2.4e-7 on the first step and 0 on the second).
LOSS_TOLERANCE = 1e-4
#: A train.py run on ~70 synthetic images at 64 px, one epoch per stage.
TRAIN_ARGS = ["--extra-data", "--max-images", "70", "--image-size", "64", "--head-epochs", "1", "--finetune-epochs", "1",
              "--batch-size", "8", "--fine-tune-from", "block_16"]
#: Bound on a two-worker run (about 2 minutes on 2 busy CPU cores).
MULTIWORKER_TIMEOUT_S = 900


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def first_steps(replicas: int, global_batch: int, weights: Path) -> dict:
    result = run(["tests/distributed_step.py", "--cpu-replicas", str(replicas), "--global-batch",
                  str(global_batch), "--backbone-weights", str(weights)])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_steps_match_one_device_with_the_same_global_batch(random_backbone_weights):
    one = first_steps(1, 8, random_backbone_weights)
    two = first_steps(2, 8, random_backbone_weights)
    assert (one["strategy"], one["replicas"]) == ("default", 1)
    assert (two["strategy"], two["replicas"]) == ("MirroredStrategy", 2)
    assert len(one["losses"]) == len(two["losses"]) == 2
    # The first loss checks the forward pass and the loss scaling over replicas; the second (Keras' running
    # mean over both steps) also checks that the update from the summed, clipped gradients is the same.
    assert two["losses"] == pytest.approx(one["losses"], abs=LOSS_TOLERANCE)


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory, synthetic_ham, random_backbone_weights) -> Path:
    out = tmp_path_factory.mktemp("mirrored")
    result = run(["train.py", *TRAIN_ARGS, "--cpu-replicas", "2", "--distribute", "mirrored",
                  "--data-dir", str(synthetic_ham), "--backbone-weights", str(random_backbone_weights),
                  "--output-dir", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_a_mirrored_run_writes_a_bundle_that_loads_and_predicts(mirrored_run, lesion_path):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor

    prediction = Predictor.from_dir(mirrored_run).predict(load_image(lesion_path))
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-6)
    served = LitePredictor.from_dir(mirrored_run).predict(load_image(lesion_path))
    assert served.probabilities == pytest.approx(prediction.probabilities, abs=1e-5)


def test_metadata_records_the_distribution(mirrored_run):
    training = json.loads((mirrored_run / "metadata.json").read_text())["training"]
    assert training["distribution"] == {"strategy": "MirroredStrategy", "replicas": 2, "workers": 1}
    assert training["global_batch_size"] == 16, "--batch-size is per replica"
    assert training["learning_rates"]["head"] == pytest.approx(1e-3 * 2 ** 0.5), "sqrt scaling by default"
    assert training["epochs_run"] == {"head": 1, "finetune": 1}


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_and_only_the_chief_writes(tmp_path, synthetic_ham, random_backbone_weights):
    try:
        ports = free_ports(2)
    except OSError as exc:
        pytest.skip(f"cannot bind two local ports for the workers: {exc}")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    outs = [tmp_path / "chief", tmp_path / "worker1"]
    procs = []
    for index, out in enumerate(outs):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "train.py", *TRAIN_ARGS, "--distribute", "multiworker", "--input", "stream",
             "--data-dir", str(synthetic_ham), "--backbone-weights", str(random_backbone_weights),
             "--output-dir", str(out)], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"worker{index}.log", "w")))
    try:
        codes = [p.wait(timeout=MULTIWORKER_TIMEOUT_S) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"two-worker run did not finish in {MULTIWORKER_TIMEOUT_S} s; chief's log ends: "
                    + (tmp_path / "worker0.log").read_text()[-3000:])
    assert codes == [0, 0], [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    metadata = json.loads((outs[0] / "metadata.json").read_text())
    assert metadata["training"]["distribution"] == {"strategy": "MultiWorkerMirroredStrategy", "replicas": 2,
                                                    "workers": 2}
    assert metadata["training"]["input_pipeline"] == "stream"
    assert (outs[0] / "model.tflite").is_file()
    assert not outs[1].exists() or not any(outs[1].rglob("*")), "a non-chief worker writes nothing"


def test_learning_rate_rules_and_chief_from_tf_config(monkeypatch):
    import tensorflow as tf

    from skin_model.training.distribute import Distribution, cluster_workers

    class FourReplicas:  # stands in for a strategy: only the replica count matters here
        num_replicas_in_sync = 4

    dist = Distribution(FourReplicas())  # type: ignore[arg-type]
    assert dist.learning_rate(1e-3, "sqrt") == pytest.approx(2e-3)
    assert dist.learning_rate(1e-3, "linear") == pytest.approx(4e-3)
    assert dist.learning_rate(1e-3, "none") == pytest.approx(1e-3)
    assert dist.global_batch(32) == 128
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cluster_workers() == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert cluster_workers() == 3
    strategy = tf.distribute.get_strategy()
    assert not Distribution(strategy, workers=3, task_type="worker", task_id=0).is_chief, "a chief task exists"
    assert Distribution(strategy, workers=3, task_type="chief", task_id=0).is_chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["b:1", "c:1"]}}))
    assert Distribution(strategy, workers=2, task_type="worker", task_id=0).is_chief
    assert not Distribution(strategy, workers=2, task_type="worker", task_id=1).is_chief


def test_a_worker_resumes_from_a_copy_of_the_chiefs_checkpoints(tmp_path, monkeypatch):
    import tensorflow as tf

    from skin_model.training.distribute import Distribution

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]}}))
    chief_dir = tmp_path / "out" / "checkpoints"
    chief_dir.mkdir(parents=True)
    (chief_dir / "head_final.weights.h5").write_bytes(b"weights")
    worker = Distribution(tf.distribute.get_strategy(), workers=2, task_type="worker", task_id=1)
    scratch = worker.checkpoint_dir(chief_dir)
    assert scratch != chief_dir and (scratch / "head_final.weights.h5").read_bytes() == b"weights"
    (scratch / "backup").mkdir()  # what the worker writes stays out of the chief's folder
    assert sorted(p.name for p in chief_dir.iterdir()) == ["head_final.weights.h5"]
    worker.finish()  # (the barrier is trivial on the default strategy)
    assert not scratch.exists()
