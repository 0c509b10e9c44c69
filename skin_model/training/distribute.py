"""Where ``train.py`` trains: one device, several local devices, or several hosts, through ``tf.distribute``.

``choose_distribution`` picks the strategy (``--distribute``): ``none`` (TensorFlow's default strategy, one
device), ``mirrored`` (``tf.distribute.MirroredStrategy`` over the local GPUs, or over logical CPU devices made
by ``split_cpu``), ``multiworker`` (``tf.distribute.MultiWorkerMirroredStrategy``; the cluster comes from the
standard ``TF_CONFIG`` environment variable), ``auto`` (multiworker when ``TF_CONFIG`` names 2+ workers,
mirrored when there are 2+ local GPUs or logical CPU devices, else none).

The returned ``Distribution`` knows the chief's duties: only the chief writes into ``--output-dir``; every
other worker keeps its checkpoints in a temporary folder (as in Keras' multi-worker guide), seeded with a copy
of the chief's checkpoints so that ``--resume`` restarts all workers at the same epoch.

Keras 3.15 cannot ``fit`` under ``MultiWorkerMirroredStrategy`` as released: its symbolic build reduces a
per-replica batch eagerly, and it averages the per-replica step metrics with ``axis=0`` on scalars (both raise;
see keras-team/keras#20585 and tensorflow/tensorflow#72388). ``patch_keras_for_multiworker`` fixes both, and
only multi-worker processes apply it.

TensorFlow is imported by the functions that use it, so that train.py prints its help and checks its arguments
before loading it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "none", "mirrored", "multiworker")
#: How the learning rate follows the global batch (``--lr-scaling``): multiplied by replicas ** exponent.
LR_SCALING = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


class DistributionError(RuntimeError):
    """The requested strategy cannot run here; the message says why and what to change."""


def split_cpu(replicas: int) -> None:
    """Split the first CPU into ``replicas`` logical devices (before TensorFlow starts its runtime), so that
    ``MirroredStrategy`` has several devices to mirror over on a machine without a GPU."""
    import tensorflow as tf
    if replicas < 1:
        raise DistributionError(f"--cpu-replicas must be at least 1, got {replicas}")
    if replicas == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError as exc:  # the runtime already started: too late to change devices
        raise DistributionError(f"Cannot split the CPU into {replicas} devices after TensorFlow started: {exc}") \
            from exc


def cluster_workers() -> int:
    """Workers (chief included) that ``TF_CONFIG`` names; 1 when it is unset."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 1
    try:
        cluster = json.loads(config).get("cluster", {})
    except json.JSONDecodeError as exc:
        raise DistributionError(f"TF_CONFIG is not valid JSON: {exc}") from exc
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


@dataclass
class Distribution:
    """A ``tf.distribute`` strategy and this process's place in the cluster."""

    strategy: tf.distribute.Strategy
    workers: int = 1
    task_type: str | None = None
    task_id: int = 0
    _scratch: Path | None = field(default=None, repr=False)

    @property
    def distributed(self) -> bool:
        """Whether a strategy other than TensorFlow's default (one device, no mirroring) runs the training."""
        import tensorflow as tf
        return not isinstance(self.strategy, type(tf.distribute.get_strategy()))

    @property
    def replicas(self) -> int:
        """Replicas in sync across the whole cluster (devices times workers)."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        """The one process that writes the bundle: the 'chief' task, else worker 0 (Keras' convention)."""
        return self.task_type in (None, "chief") or (self.task_type == "worker" and self.task_id == 0
                                                      and not _has_chief_task())

    def describe(self) -> dict[str, object]:
        """What ``metadata.json`` records under ``training.distribution``."""
        return {"strategy": self.strategy_name, "replicas": self.replicas, "workers": self.workers}

    @property
    def strategy_name(self) -> str:
        """The strategy's public ``tf.distribute`` name ("MultiWorkerMirroredStrategy" is implemented by a class
        named CollectiveAllReduceStrategy); "default" for TensorFlow's default strategy (one device)."""
        import tensorflow as tf
        if not self.distributed:
            return "default"
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return "MultiWorkerMirroredStrategy"
        return type(self.strategy).__name__

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def learning_rate(self, base: float, rule: str) -> float:
        """``base`` (tuned for one replica) scaled for the global batch by ``rule`` (a key of ``LR_SCALING``)."""
        return base * self.replicas ** LR_SCALING[rule]

    def checkpoint_dir(self, chief_dir: Path) -> Path:
        """Where this process keeps its checkpoints: ``chief_dir`` for the chief; for another worker a
        temporary folder holding a copy of the chief's checkpoints (when a shared filesystem shows them), so
        that a resumed run restarts every worker from the same epoch. Removed by ``finish``."""
        if self.is_chief:
            chief_dir.mkdir(parents=True, exist_ok=True)
            return chief_dir
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"skin_worker{self.task_id}_"))
            if chief_dir.is_dir():
                shutil.copytree(chief_dir, self._scratch, dirs_exist_ok=True)
        return self._scratch

    def barrier(self) -> None:
        """Wait until every replica of every worker reaches this point (a collective sum)."""
        import tensorflow as tf
        if self.workers > 1:
            ones = self.strategy.run(lambda: tf.constant(1.0))
            total = float(self.strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None))
            log.info("Barrier: %d replicas in sync", round(total))

    def finish(self) -> None:
        """Wait for the other workers, then remove a worker's temporary checkpoints."""
        self.barrier()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _has_chief_task() -> bool:
    config = os.environ.get("TF_CONFIG")
    return bool(config and json.loads(config).get("cluster", {}).get("chief"))


def choose_distribution(kind: str = "auto") -> Distribution:
    """The strategy ``train.py --distribute kind`` asks for (see the module docstring). Create it before any
    other TensorFlow work: a multi-worker strategy must configure collectives at program start."""
    import tensorflow as tf
    if kind not in STRATEGIES:
        raise DistributionError(f"Unknown strategy {kind!r}; choose from {', '.join(STRATEGIES)}")
    workers = cluster_workers()
    if kind == "auto":
        local = len(tf.config.list_physical_devices("GPU")) or len(tf.config.list_logical_devices("CPU"))
        kind = "multiworker" if workers > 1 else "mirrored" if local > 1 else "none"
    if kind == "none":
        return Distribution(tf.distribute.get_strategy())
    if kind == "mirrored":
        if workers > 1:
            raise DistributionError("TF_CONFIG names several workers: use --distribute multiworker (or auto)")
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return Distribution(tf.distribute.MirroredStrategy(devices=devices))
    if not os.environ.get("TF_CONFIG"):
        raise DistributionError("--distribute multiworker reads the cluster from TF_CONFIG, which is not set "
                                "(see docs/training.md, 'Distributed retraining')")
    patch_keras_for_multiworker()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    return Distribution(strategy, workers=workers, task_type=resolver.task_type, task_id=int(resolver.task_id or 0))


_PATCHED = False


def patch_keras_for_multiworker() -> None:
    """Make Keras 3's TensorFlow trainer fit under ``MultiWorkerMirroredStrategy`` (see the module docstring):
    build from the first local replica's batch, and average scalar step metrics with ``axis=None``."""
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer.reduce_per_replica

    def first_local(strategy, value):
        return (strategy.experimental_local_results(value)[0]
                if isinstance(value, tf.distribute.DistributedValues) else value)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(lambda v: first_local(self.distribute_strategy, v), next(it))
                break
        return original_build(self, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
