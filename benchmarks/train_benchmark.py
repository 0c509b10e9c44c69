"""Training throughput and single-image inference latency on this machine.

    python benchmarks/train_benchmark.py [--steps 24] [--warmup-steps 3] [--image-size 224] [--batch-size 32]
                                         [--stages head,block_8,all] [--data real|synthetic]
                                         [--latency-runs 50] [--weights DIR] [--out FILE]
    python benchmarks/train_benchmark.py --pipeline-images 1000 [--steps 12] [--out FILE]

Figures (printed and written to benchmarks/results/train.json):

* ``training``: images per second for each stage of ``train.py``'s recipe, measured with ``model.fit`` on
  the same tf.data pipeline (augmentation included) and the same compiled optimiser: ``head`` (backbone
  frozen), ``block_8`` (top half of the backbone unfrozen) and ``all`` (the default fine-tuning). The first
  ``--warmup-steps`` batches (graph tracing) are not timed; then ``--steps`` batches are. Also the
  projected minutes per epoch on the 70 % training split of HAM10000 (7,010 images).
* ``inference_ms``: single-image latency, p50 / p95 / mean over ``--latency-runs`` real 600x450 HAM10000
  originals, of ``Predictor.predict`` on the shipped bundle (preprocessing of an already decoded image +
  compiled forward pass + temperature) and of the bare forward pass as a batch-1 ``tf.function``.

With ``--pipeline-images N`` it measures the input pipeline and the distributed path instead (written to
benchmarks/results/train_input.json), each figure in a fresh process (logical CPU devices and peak memory
need one):

* ``fit``: ``model.fit`` img/s of the head stage and of whole-backbone fine-tuning with the images decoded in
  memory or streamed from their files (``--input``), and with 1 or 2 logical CPU replicas (``MirroredStrategy``,
  same global batch);
* ``resident_memory``: peak resident memory (MB) while one epoch of the augmented training pipeline runs
  over N and over 4N images (the same files repeated), streamed and in memory.

Nothing here is a test; run it on an otherwise idle machine for meaningful numbers (the load average is
recorded).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from skin_model.config import DEFAULT_BACKBONE_WEIGHTS, DEFAULT_DATA_DIR, DEFAULT_WEIGHTS_DIR, display_path  # noqa: E402

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "train.json"
PIPELINE_RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "train_input.json"
STAGES = ("head", "block_8", "all")
TRAIN_SPLIT_IMAGES = 7010  # 70 % of HAM10000's 10,015 images

log = logging.getLogger("train_benchmark")


def summary(values_s: list[float]) -> dict[str, float]:
    ms = np.asarray(values_s) * 1000
    return {"n": int(ms.size), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean())}


def machine_info() -> dict:
    import tensorflow as tf

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpu": bool(tf.config.list_physical_devices("GPU")), "load_average_at_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------------- training
def training_images(source: str, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images and labels: real HAM10000 files (any class) or uniform noise."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, n).astype(np.int32)
    if source == "synthetic":
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels
    from skin_model.data.dataset import load_arrays

    paths = sorted((DEFAULT_DATA_DIR / "images_200x150").glob("*.jpg"))[:n]
    if len(paths) < n:
        raise SystemExit(f"Need {n} images in {DEFAULT_DATA_DIR / 'images_200x150'}; use --data synthetic")
    return load_arrays(paths, size, progress=False), labels


class StepTimer(keras.callbacks.Callback):
    """Wall time at the end of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.ends.append(time.perf_counter())


def stage_throughput(model, stage: str, dataset, steps: int, warmup: int, batch_size: int) -> dict:
    """Images per second of ``model.fit`` for one stage, after ``warmup`` (>= 1) untimed batches."""
    from skin_model.model import set_trainable_backbone
    from skin_model.training.stages import compile_stage

    set_trainable_backbone(model, None if stage == "head" else stage)
    compile_stage(model, 1e-3 if stage == "head" else 1e-4, jit_compile=False)
    timer = StepTimer()
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0, shuffle=False)
    timed = timer.ends[warmup - 1:]  # from the end of the last warm-up batch: ``steps`` intervals
    images_per_s = steps * batch_size / (timed[-1] - timed[0])
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"images_per_s": images_per_s, "step_ms": summary(list(np.diff(timed))),
            "warmup_s": timer.ends[warmup - 1] - start,
            "trainable_parameters": trainable,
            "projected_epoch_min": TRAIN_SPLIT_IMAGES / images_per_s / 60}


def training_benchmark(args: argparse.Namespace) -> dict:
    from skin_model.data.pipeline import make_tf_dataset
    from skin_model.model import build_classifier

    images, labels = training_images(args.data, args.batch_size * 4, args.image_size)
    dataset = make_tf_dataset(images, labels, args.batch_size, training=True).repeat()
    weights = str(DEFAULT_BACKBONE_WEIGHTS) if DEFAULT_BACKBONE_WEIGHTS.is_file() else None
    model = build_classifier(args.image_size, weights)
    results = {}
    for stage in args.stages:
        log.info("training stage %s: %d warm-up + %d timed steps of %d images at %d px", stage,
                 args.warmup_steps, args.steps, args.batch_size, args.image_size)
        results[stage] = stage_throughput(model, stage, dataset, args.steps, args.warmup_steps, args.batch_size)
    return results


# ---------------------------------------------------------------------------------------------- inference
def inference_benchmark(weights: Path, runs: int) -> dict:
    import tensorflow as tf

    from skin_model.data.imaging import load_image
    from skin_model.serving.inference import Predictor

    paths = sorted((DEFAULT_DATA_DIR / "images_600x450").glob("*.jpg"))
    if not paths:
        raise SystemExit(f"No HAM10000 originals in {DEFAULT_DATA_DIR / 'images_600x450'}")
    images = [load_image(paths[i % len(paths)]) for i in range(runs)]
    predictor = Predictor.from_dir(weights)
    size = predictor.input_size
    forward = tf.function(lambda x: predictor.model(x, training=False),
                          input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
    inputs = [tf.constant(predictor.model_input([im])) for im in images]
    predictor.predict(images[0])  # warm-up: first compiled call
    forward(inputs[0])
    predict_s, forward_s = [], []
    for image, x in zip(images, inputs):
        t0 = time.perf_counter()
        predictor.predict(image)
        t1 = time.perf_counter()
        forward(x).numpy()
        t2 = time.perf_counter()
        predict_s.append(t1 - t0)
        forward_s.append(t2 - t1)
    return {"weights": display_path(weights), "model_version": predictor.metadata.version, "input_size": size,
            "predictor_predict": summary(predict_s), "tf_function_batch1": summary(forward_s)}


# ---------------------------------------------------------------------------------------------- input pipeline
def catalogue_paths(n: int) -> list[Path]:
    """The first ``n`` HAM10000 images as train.py reads them (the highest-resolution copy of each)."""
    from skin_model.data.dataset import load_catalogue

    return [Path(p) for p in load_catalogue(DEFAULT_DATA_DIR)["path"][:n]]


def probe_images(args: argparse.Namespace, repeat: int = 1):
    """The probe's images, ``--pipeline-images`` files repeated ``repeat`` times, in memory or as files."""
    from skin_model.data.dataset import load_arrays
    from skin_model.data.pipeline import ImageFiles

    paths = catalogue_paths(args.pipeline_images) * repeat
    if args.probe_input == "memory":
        return load_arrays(paths, args.image_size, progress=False)
    return ImageFiles(tuple(paths), args.image_size)


def fit_probe(args: argparse.Namespace) -> dict:
    """img/s of the head stage and of whole-backbone fine-tuning, for one input and replica count."""
    from skin_model.training.distribute import choose_distribution, split_cpu

    split_cpu(args.probe_replicas)
    dist = choose_distribution("auto")
    from skin_model.model import build_classifier
    from skin_model.data.pipeline import make_tf_dataset

    images = probe_images(args)
    labels = np.random.default_rng(0).integers(0, 7, len(images)).astype(np.int32)
    dataset = make_tf_dataset(images, labels, args.batch_size, training=True).repeat()
    weights = str(DEFAULT_BACKBONE_WEIGHTS) if DEFAULT_BACKBONE_WEIGHTS.is_file() else None
    results = {"strategy": dist.strategy_name, "replicas": dist.replicas}
    with dist.strategy.scope():
        model = build_classifier(args.image_size, weights)
        for stage in ("head", "all"):
            results[stage] = stage_throughput(model, stage, dataset, args.steps, args.warmup_steps,
                                              args.batch_size)["images_per_s"]
    return results


def memory_probe(args: argparse.Namespace) -> dict:
    """Peak resident memory over one epoch of the augmented training pipeline (no model)."""
    import resource

    from skin_model.data.pipeline import make_tf_dataset

    images = probe_images(args, args.probe_repeat)
    labels = np.zeros(len(images), np.int32)
    start = time.perf_counter()
    seen = sum(len(y) for _, y in make_tf_dataset(images, labels, args.batch_size, training=True))
    return {"images": seen, "images_per_s": seen / (time.perf_counter() - start),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_probe(args: argparse.Namespace, **probe: object) -> dict:
    """One probe in a fresh process (this script with --probe ...): its JSON result."""
    import subprocess

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in probe.items()]
    command = [sys.executable, __file__, f"--pipeline-images={args.pipeline_images}", f"--steps={args.steps}",
               f"--warmup-steps={args.warmup_steps}", f"--image-size={args.image_size}",
               f"--batch-size={args.batch_size}", *flags]
    log.info("probe %s", " ".join(flags))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"probe {flags} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pipeline_benchmark(args: argparse.Namespace) -> dict:
    fit = {f"{source}, {replicas} replica(s)": run_probe(args, probe="fit", probe_input=source,
                                                         probe_replicas=replicas)
           for source, replicas in (("memory", 1), ("stream", 1), ("memory", 2))}
    memory = {f"{source}, {repeat}x": run_probe(args, probe="memory", probe_input=source, probe_repeat=repeat)
              for source in ("stream", "memory") for repeat in (1, 4)}
    return {"fit_images_per_s": fit, "resident_memory": memory}


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per stage (default 24)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed first steps per stage (default 3)")
    parser.add_argument("--image-size", type=int, default=224, help="training input size (default 224)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to time, of {', '.join(STAGES)} (default all three)")
    parser.add_argument("--data", choices=("real", "synthetic"), default="real",
                        help="real HAM10000 images (default) or uniform noise; the pipeline is the same")
    parser.add_argument("--latency-runs", type=int, default=50, help="single-image inference runs (0 skips)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS_DIR, help="bundle for the latency runs")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"result JSON (default {RESULTS}, with --pipeline-images {PIPELINE_RESULTS})")
    parser.add_argument("--pipeline-images", type=int, default=0, metavar="N",
                        help="measure the input pipeline and 1 vs 2 CPU replicas on N HAM10000 images instead")
    parser.add_argument("--probe", choices=("fit", "memory"), help=argparse.SUPPRESS)  # one fresh-process figure
    parser.add_argument("--probe-input", choices=("memory", "stream"), default="memory", help=argparse.SUPPRESS)
    parser.add_argument("--probe-replicas", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--probe-repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or (PIPELINE_RESULTS if args.pipeline_images else RESULTS)
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(args.stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup-steps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.probe:
        print(json.dumps((fit_probe if args.probe == "fit" else memory_probe)(args)))
        return 0
    if args.pipeline_images:
        return pipeline_main(args)
    report: dict = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
                    "settings": {"steps": args.steps, "warmup_steps": args.warmup_steps,
                                 "image_size": args.image_size, "batch_size": args.batch_size, "data": args.data,
                                 "latency_runs": args.latency_runs}}
    report["training"] = training_benchmark(args) if args.stages else {}
    if args.latency_runs > 0:
        if not (args.weights / "metadata.json").is_file():
            raise SystemExit(f"No model bundle in {args.weights}: train one or pass --weights DIR")
        log.info("inference latency: %d single-image runs", args.latency_runs)
        report["inference_ms"] = inference_benchmark(args.weights, args.latency_runs)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, args.out)
    return 0


def pipeline_main(args: argparse.Namespace) -> int:
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "settings": {"images": args.pipeline_images, "steps": args.steps, "warmup_steps": args.warmup_steps,
                           "image_size": args.image_size, "batch_size": args.batch_size},
              **pipeline_benchmark(args)}
    report["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"\nInput pipeline and replicas ({m['cpus']} CPUs, load average at start "
          f"{m['load_average_at_start'][0]:.1f}, end {m['load_average_at_end'][0]:.1f}); {args.image_size} px, "
          f"global batch {args.batch_size}, {args.pipeline_images} HAM10000 images")
    print(f"  {'fit img/s':24s} {'head':>7s} {'all':>7s}")
    for name, r in report["fit_images_per_s"].items():
        print(f"  {name:24s} {r['head']:7.1f} {r['all']:7.1f}")
    print(f"  {'one epoch of the pipeline':24s} {'images':>7s} {'img/s':>7s} {'peak RSS MB':>12s}")
    for name, r in report["resident_memory"].items():
        print(f"  {name:24s} {r['images']:7d} {r['images_per_s']:7.1f} {r['peak_rss_mb']:12.0f}")
    print(f"Wrote {args.out}")
    return 0


def print_report(r: dict, out: Path) -> None:
    m, s = r["machine"], r["settings"]
    print(f"\nTraining benchmark ({m['cpus']} CPUs, TensorFlow {m['tensorflow']}, load average at start "
          f"{m['load_average_at_start'][0]:.1f}, end {m['load_average_at_end'][0]:.1f}); "
          f"{s['image_size']} px, batch {s['batch_size']}, {s['data']} data, {s['steps']} timed steps")
    if r["training"]:
        print(f"  {'stage':8s} {'img/s':>7s} {'step p50 ms':>12s} {'step p95 ms':>12s} {'trainable':>11s} "
              f"{'min/epoch*':>11s}")
        for stage, t in r["training"].items():
            print(f"  {stage:8s} {t['images_per_s']:7.1f} {t['step_ms']['p50']:12.0f} {t['step_ms']['p95']:12.0f} "
                  f"{t['trainable_parameters']:11,d} {t['projected_epoch_min']:11.1f}")
        print(f"  * projected for one epoch of the {TRAIN_SPLIT_IMAGES:,}-image training split")
    if "inference_ms" in r:
        inf = r["inference_ms"]
        print(f"  single-image inference, model {inf['model_version']} at {inf['input_size']} px:")
        for name in ("predictor_predict", "tf_function_batch1"):
            v = inf[name]
            print(f"    {name:20s} p50 {v['p50']:7.1f} ms  p95 {v['p95']:7.1f} ms  (n={v['n']})")
    print(f"Wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
