"""train.py end to end on ~70 synthetic HAM10000-like images (tests/synthetic.py) at 96 px from a random backbone
weights file, one epoch per stage, with the weights' moving average, label smoothing, MixUp, sampling balanced
over classes and sources, MixStyle and distillation (from the tiny test bundle) on (about a minute on a CPU);
then scripts/finish_bundle.sh on a copy of what it wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_model.data.dataset import SPLITS
from skin_model.labels import CODES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--extra-data", "--max-images", "70", "--image-size", "96", "--head-epochs", "1", "--finetune-epochs", "1",
        "--batch-size", "16", "--ema-momentum", "0.998", "--label-smoothing", "0.1",
        "--mixup", "0.2", "--sampling", "class-source", "--mixstyle", "0.5"]


def train_module():
    spec = importlib.util.spec_from_file_location("train", PROJECT_ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_ham: Path, random_backbone_weights: Path, tiny_bundle: Path) -> Path:
    out = tmp_path_factory.mktemp("train_smoke")
    code = train_module().main([*ARGS, "--data-dir", str(synthetic_ham),
                                "--backbone-weights", str(random_backbone_weights),
                                "--output-dir", str(out), "--distill-from", str(tiny_bundle)])
    assert code == 0
    return out


def test_writes_a_loadable_bundle_that_predicts(trained, lesion_path):
    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor
    from skin_model.model import load_bundle

    model, metadata = load_bundle(trained)
    assert model.input_shape[1:] == (96, 96, 3) and metadata.input_size == 96
    assert not [layer.name for layer in model.layers if "mixstyle" in layer.name], "training-only layers left out"
    prediction = Predictor.from_dir(trained).predict(load_image(lesion_path))
    assert len(prediction.probabilities) == len(CODES)
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= p <= 1.0 for p in prediction.probabilities)
    served = LitePredictor.from_dir(trained).predict(load_image(lesion_path))  # the app's model.tflite
    assert served.probabilities == pytest.approx(prediction.probabilities, abs=1e-5)


def test_metadata_records_classes_temperature_and_data_counts(trained):
    metadata = json.loads((trained / "metadata.json").read_text())
    split = pd.read_csv(trained / "split.csv")
    assert [c["code"] for c in metadata["classes"]] == list(CODES)
    assert metadata["temperature"] > 0 and metadata["temperature"] != 1.0, "fitted on validation"
    assert 0.0 <= metadata["unsure_threshold"] <= 1.0
    for s in SPLITS:
        expected = split.loc[split["split"] == s, "dx"].value_counts().reindex(CODES, fill_value=0).to_dict()
        assert metadata["data"]["counts"][s] == expected
        assert metadata["data"]["lesions"][s] == split.loc[split["split"] == s, "lesion_id"].nunique()
    assert metadata["training"]["max_images"] == 70 and metadata["training"]["image_size"] == 96
    assert metadata["training"]["epochs_run"] == {"head": 1, "finetune": 1}
    assert len(metadata["training"]["distill_from"]) == 1 and metadata["training"]["distill_weight"] == 0.5
    assert metadata["training"]["sampling"] == "class-source" and metadata["training"]["class_weights"] is None
    assert "--mixstyle 0.5" in metadata["training"]["recipe"]


def test_split_keeps_each_lesion_in_one_split(trained):
    split = pd.read_csv(trained / "split.csv")
    assert set(split["split"]) == set(SPLITS)
    assert (split.groupby("lesion_id")["split"].nunique() == 1).all()
    assert 60 <= len(split) <= 200, "about --max-images images (whole lesions)"
    assert set(split["dx"]) == set(CODES)


def test_reports_match_the_split(trained):
    from skin_model.evaluation.metrics import EvaluationReport

    split = pd.read_csv(trained / "split.csv")
    for s in ("val", "test"):
        report = EvaluationReport.from_json(trained / f"evaluation_{s}.json")
        ids = split.loc[split["split"] == s, "image_id"]
        assert report.n_images == len(ids)
        assert sorted(p["image_id"] for p in report.predictions) == sorted(ids)
        assert np.array(report.confusion_matrix).sum() == len(ids)
    history = json.loads((trained / "history.json").read_text())
    assert [len(history["head"]), len(history["finetune"])] == [1, 1]
    assert "val_balanced_accuracy" in history["finetune"][0]


def test_ships_the_checkpointed_moving_average_weights(trained):
    """The shipped model is the checkpoint of the best fine-tuning epoch: it reproduces the validation balanced
    accuracy logged for that epoch (with the moving average on; test_training checks the average exactly)."""
    metadata = json.loads((trained / "metadata.json").read_text())
    assert metadata["training"]["ema_momentum"] > 0 and metadata["training"]["label_smoothing"] > 0
    assert metadata["training"]["mixup"] > 0
    history = json.loads((trained / "history.json").read_text())
    best_logged = max(row["val_balanced_accuracy"] for row in history["finetune"])
    report = json.loads((trained / "evaluation_val.json").read_text())
    assert report["balanced_accuracy"] == pytest.approx(best_logged, abs=1e-6)


def test_second_run_without_resume_refuses(trained, synthetic_ham, random_backbone_weights):
    model_before = (trained / "model.keras").read_bytes()
    with pytest.raises(SystemExit) as info:
        train_module().main([*ARGS, "--data-dir", str(synthetic_ham),
                             "--backbone-weights", str(random_backbone_weights), "--output-dir", str(trained)])
    assert "--resume" in str(info.value.code) and "checkpoints" in str(info.value.code)
    assert (trained / "model.keras").read_bytes() == model_before, "the earlier bundle is untouched"


def test_resuming_a_finished_run_evaluates_without_training_again(trained, synthetic_ham, random_backbone_weights,
                                                                 tiny_bundle, tmp_path):
    """Keras deletes its epoch backup when a stage completes: a run stopped after fine-tuning (during
    evaluation) resumes at evaluation; before the fine-tuning marker it fine-tuned again from the head."""
    run = Path(shutil.copytree(trained, tmp_path / "run"))
    checkpoints = run / "checkpoints"
    best = (checkpoints / "best_finetune.weights.h5").read_bytes()
    history = (checkpoints / "history_finetune.csv").read_text()
    (run / "metadata.json").unlink()
    code = train_module().main([*ARGS, "--data-dir", str(synthetic_ham),
                                "--backbone-weights", str(random_backbone_weights), "--output-dir", str(run),
                                "--distill-from", str(tiny_bundle), "--resume"])
    assert code == 0
    assert (checkpoints / "history_finetune.csv").read_text() == history, "no fine-tuning epoch ran again"
    assert (checkpoints / "best_finetune.weights.h5").read_bytes() == best
    assert json.loads((run / "metadata.json").read_text())["training"]["epochs_run"] == {"head": 1, "finetune": 1}


def test_a_run_parked_during_evaluation_resumes_at_evaluation_on_another_machine(trained, synthetic_ham,
                                                                                random_backbone_weights,
                                                                                tiny_bundle, tmp_path):
    """Parking keeps the best fine-tuning weights without optimizer state and no head weights: the resumed run
    trains nothing and ships the same network."""
    from skin_model.model import load_bundle
    from skin_model.training.parking import park, unpark

    stopped = Path(shutil.copytree(trained, tmp_path / "stopped"))
    (stopped / "metadata.json").unlink()
    park(stopped, tmp_path / "runs" / "done", ARGS)
    run = tmp_path / "next_machine"
    unpark(tmp_path / "runs" / "done", run)
    assert not (run / "checkpoints" / "head_final.weights.h5").exists()
    code = train_module().main([*ARGS, "--data-dir", str(synthetic_ham), "--backbone-weights",
                                str(random_backbone_weights), "--output-dir", str(run),
                                "--distill-from", str(tiny_bundle), "--resume"])
    assert code == 0
    assert json.loads((run / "metadata.json").read_text())["training"]["epochs_run"] == {"head": 1, "finetune": 1}
    for a, b in zip(load_bundle(trained)[0].get_weights(), load_bundle(run)[0].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_run_parked_during_fine_tuning_resumes_from_its_epoch_backup(synthetic_ham, random_backbone_weights,
                                                                       tmp_path):
    """Stopped after the first of two fine-tuning epochs, parked and unparked elsewhere: the resumed run skips
    the head stage (its weights were not parked) and runs only the second fine-tuning epoch."""
    import keras

    from skin_model.training.parking import park, unpark

    args = ["--extra-data", "--max-images", "70", "--image-size", "96", "--head-epochs", "1", "--finetune-epochs", "2",
            "--batch-size", "16", "--data-dir", str(synthetic_ham),
            "--backbone-weights", str(random_backbone_weights)]

    class SessionEnds(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("the session ended")

    from skin_model.training import stages

    real_callbacks = stages.stage_callbacks
    with pytest.MonkeyPatch.context() as patch:  # train.py imports the stages' names when main() runs
        patch.setattr(stages, "stage_callbacks", lambda work_dir, stage, *a, **k: [
            *real_callbacks(work_dir, stage, *a, **k), *([SessionEnds()] if stage == "finetune" else [])])
        stopped = tmp_path / "stopped"
        with pytest.raises(KeyboardInterrupt):
            train_module().main([*args, "--output-dir", str(stopped)])
    first_epoch = (stopped / "checkpoints" / "history_finetune.csv").read_text()
    head_history = (stopped / "checkpoints" / "history_head.csv").read_text()
    park(stopped, tmp_path / "runs" / "mid", args[:9])
    run = tmp_path / "next_machine"
    unpark(tmp_path / "runs" / "mid", run)
    assert train_module().main([*args, "--output-dir", str(run), "--resume"]) == 0
    history = (run / "checkpoints" / "history_finetune.csv").read_text()
    assert history.startswith(first_epoch) and len(history.strip().splitlines()) == 3, "one more epoch, not two"
    assert (run / "checkpoints" / "history_head.csv").read_text() == head_history, "the head stage did not rerun"
    assert json.loads((run / "metadata.json").read_text())["training"]["epochs_run"] == {"head": 1, "finetune": 2}


def run_finish_bundle(bundle: Path, data_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "finish_bundle.sh"), str(bundle), *options],
                          env={**os.environ, "SKIN_DATA_DIR": str(data_dir), "SKIN_IMAGES_DIR": str(data_dir)},
                          capture_output=True, text=True,
                          timeout=900)


def test_finish_bundle_adds_reports_gate_and_localisation_for_this_model(trained, synthetic_ham, tmp_path):
    from skin_model.bundle.files import sha256_of
    from skin_model.serving.service import ClassifierService

    bundle = Path(shutil.copytree(trained, tmp_path / "bundle"))
    for served_copy in ("model.tflite", "model.tflite.json"):  # not committed: a run carried in git has neither
        (bundle / served_copy).unlink()
    result = run_finish_bundle(bundle, synthetic_ham, "--components", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (bundle / "model.tflite").is_file(), "the LiteRT copy the reports predict through was built"
    split = pd.read_csv(bundle / "split.csv")
    metadata = json.loads((bundle / "metadata.json").read_text())
    for s in ("val", "test"):
        report = json.loads((bundle / "evaluations" / f"{s}_tta.json").read_text())
        assert report["n_images"] == int((split["split"] == s).sum())
        assert report["model"]["tta"] is True and report["model"]["model_sha256"] == metadata["model_sha256"]
    assert metadata["ood_sha256"] == sha256_of(bundle / "ood.npz")
    assert 0.0 <= metadata["referral_threshold"] <= 1.0 and metadata["known_limits"]
    n_test = int((split["split"] == "test").sum())
    assert json.loads((bundle / "ood_figures.json").read_text())["n_dermoscopic"] == n_test
    assert json.loads((bundle / "localisation_test.json").read_text())["n_images"] == n_test
    service = ClassifierService.from_dir(bundle)
    assert service.ood_enabled, service.ood_status


def test_finish_bundle_refuses_a_folder_that_is_not_a_trained_bundle(synthetic_ham, tmp_path):
    result = run_finish_bundle(tmp_path, synthetic_ham)
    assert result.returncode == 2 and "no metadata.json" in result.stderr
    assert not (tmp_path / "evaluations").exists(), "nothing written"
