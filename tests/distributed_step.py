"""Run by tests/test_distribute.py in a fresh process (logical CPU devices must be set before TensorFlow
starts): train.py's model, compilation and input pipeline under the strategy ``--distribute`` chooses with
``--cpu-replicas`` logical CPUs, for two steps of a fixed global batch, printing the losses Keras reports
after each step as JSON on the last line of stdout.

    python tests/distributed_step.py --cpu-replicas 2 --global-batch 8 --backbone-weights FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from skin_model.training.distribute import choose_distribution, split_cpu  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-replicas", type=int, default=1)
    p.add_argument("--distribute", default="auto")
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--backbone-weights", required=True)
    p.add_argument("--image-size", type=int, default=64)
    args = p.parse_args()
    split_cpu(args.cpu_replicas)
    dist = choose_distribution(args.distribute)

    import keras
    import numpy as np

    from skin_model.model import build_classifier, set_trainable_backbone
    from skin_model.data.pipeline import make_tf_dataset
    from skin_model.training.stages import compile_stage

    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    n = 2 * args.global_batch
    images = rng.integers(0, 256, size=(n, args.image_size, args.image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, size=n).astype(np.int32)
    dataset = make_tf_dataset(images, labels, args.global_batch, training=False)  # fixed order, no augmentation
    losses: list[float] = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"])))
    with dist.strategy.scope():
        model = build_classifier(args.image_size, args.backbone_weights, dropout=0.0)  # no random masks
        set_trainable_backbone(model, "block_16")
        compile_stage(model, 1e-3, jit_compile=False)
        model.fit(dataset, epochs=1, verbose=0, callbacks=[record])
    print(json.dumps({"strategy": dist.strategy_name, "replicas": dist.replicas, "losses": losses}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
