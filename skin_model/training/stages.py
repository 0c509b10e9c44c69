"""Pieces of the training recipe used by ``train.py``: the balanced-accuracy metric, class weights,
distillation targets, stage compilation, callbacks and batched prediction on in-memory images."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops
from sklearn.utils.class_weight import compute_class_weight

from skin_model.bundle import ModelMetadata
from skin_model.data.imaging import scale_pixels
from skin_model.serving.inference import CalibratedPredictor, Predictor
from skin_model.labels import NUM_CLASSES

log = logging.getLogger(__name__)
MONITOR = "val_balanced_accuracy"


@keras.saving.register_keras_serializable(package="skin_model")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall, accumulated over an epoch from a confusion matrix (ignores sample weights).

    The matrix is a product of one-hot matrices, not a ``bincount``: every shape is static, so the metric
    compiles under XLA (``train.py`` uses XLA on a GPU)."""

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "balanced_accuracy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.matrix = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                        name="confusion", dtype="float32")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if len(y_true.shape) == 2 and y_true.shape[-1] == self.num_classes:  # one-hot (or smoothed) labels
            y_true = ops.argmax(y_true, axis=-1)
        truth = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes, dtype="float32")
        pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype="float32")
        self.matrix.assign_add(ops.matmul(ops.transpose(truth), pred))  # rows: true class, columns: predicted

    def result(self):
        support = ops.sum(self.matrix, axis=1)
        recall = ops.diagonal(self.matrix) / ops.maximum(support, 1.0)
        present = ops.cast(support > 0, "float32")
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self) -> None:
        self.matrix.assign(ops.zeros_like(self.matrix))

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


def class_weights(labels: np.ndarray, power: float = 1.0) -> dict[int, float]:
    """'Balanced' class weights (n_samples / (n_classes * count)) for the classes present, raised to
    ``power``: 1 is fully balanced, 0.5 tempers them to their square roots, 0 weighs every class 1."""
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    return {int(c): float(w) ** power for c, w in zip(present, weights)}


def prior_shift(labels: np.ndarray, tau: float) -> np.ndarray:
    """``tau`` * log of the class frequencies in ``labels`` (absent classes count as 1e-6): the logit
    adjustment of ``logit_adjusted_loss``."""
    prior = np.bincount(labels, minlength=NUM_CLASSES) / max(len(labels), 1)
    return tau * np.log(np.maximum(prior, 1e-6))


def logit_adjusted_loss(log_prior_shift: np.ndarray, label_smoothing: float = 0.0):
    """Logit-adjusted cross-entropy (Menon et al. 2021, "Long-tail learning via logit adjustment"): the loss
    sees the softmax output shifted by ``log_prior_shift`` (tau * log of the training class prior), so the
    network's own output learns the class-balanced posterior without per-sample class weights."""
    shift = ops.convert_to_tensor(np.asarray(log_prior_shift, np.float32))
    cross_entropy = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=label_smoothing)

    def loss(y_true, y_pred):
        # log-softmax = logits minus a per-image constant, which the softmax inside the loss ignores
        return cross_entropy(y_true, ops.log(ops.maximum(y_pred, 1e-12)) + shift)

    return loss


def teacher_probabilities(teacher_dirs: list[Path], images: np.ndarray) -> np.ndarray:
    """The mean of the calibrated probabilities (each bundle's own temperature, one view) that the model
    bundles in ``teacher_dirs`` give uint8 (N, S, S, 3) images. Every teacher must take S-pixel inputs."""
    from skin_model.model import load_bundle

    if not teacher_dirs:
        raise ValueError("No teacher model given")
    probs = []
    for teacher_dir in teacher_dirs:
        model, metadata = load_bundle(Path(teacher_dir))
        if metadata.input_size != images.shape[1]:
            raise ValueError(f"Teacher {teacher_dir} takes {metadata.input_size}-pixel images but training uses "
                             f"{images.shape[1]}: pass --image-size {metadata.input_size} or another teacher")
        probs.append(served_probabilities(Predictor(model, metadata), images))
        log.info("Teacher %s (version %s): predicted %d images", teacher_dir, metadata.version, len(images))
        del model
    return np.mean(probs, axis=0)


def distillation_targets(labels: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """Soft training targets for knowledge distillation (Hinton et al. 2015, at temperature 1):
    ``(1 - weight) * one-hot label + weight * teacher probabilities``. Up to 0.5 the true class stays the
    largest target, so class weights (which Keras takes from its argmax) still follow the label."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"Distillation weight must be between 0 and 1, got {weight}")
    if teacher_probs.shape != (len(labels), NUM_CLASSES):
        raise ValueError(f"Teacher probabilities have shape {teacher_probs.shape}, expected "
                         f"({len(labels)}, {NUM_CLASSES})")
    return (1.0 - weight) * np.eye(NUM_CLASSES)[labels] + weight * teacher_probs


@keras.saving.register_keras_serializable(package="skin_model")
class AdamWClipAfterSum(keras.optimizers.AdamW):
    """AdamW whose ``clipnorm`` (per variable) clips the gradient summed over the replicas, as one device would.
    Keras 3 clips each replica's share before the sum (measured: the second step of a 2-replica run then differs
    from one device by 0.06 in loss, against 2e-7 without clipping); here clipping follows the sum."""

    def _clip_gradients(self, grads):
        return grads  # clipped in _all_reduce_sum_gradients, after the replicas' gradients are summed

    def _all_reduce_sum_gradients(self, grads_and_vars):
        import tensorflow as tf

        summed = super()._all_reduce_sum_gradients(grads_and_vars)
        if not self.clipnorm:
            return summed
        return [(g if g is None else tf.clip_by_norm(g, self.clipnorm), v) for g, v in summed]


def compile_stage(model: keras.Model, learning_rate, jit_compile: bool | str = "auto", label_smoothing: float = 0.0,
                  ema_momentum: float = 0.0, log_prior_shift: np.ndarray | None = None) -> None:
    """AdamW (gradient norm clipped at 1, after the replicas' gradients are summed; keeping an exponential
    moving average of the weights when ``ema_momentum`` > 0) + categorical cross-entropy on one-hot labels with ``label_smoothing`` (logit-adjusted
    by ``log_prior_shift`` when given), reporting accuracy and balanced accuracy."""
    optimizer = AdamWClipAfterSum(learning_rate=learning_rate, weight_decay=1e-4, clipnorm=1.0,
                                  use_ema=ema_momentum > 0, ema_momentum=ema_momentum)
    loss = (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if log_prior_shift is None
            else logit_adjusted_loss(log_prior_shift, label_smoothing))
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"), BalancedAccuracy()],
                  jit_compile=jit_compile)


def warmup_cosine(peak: float, total_steps: int, warmup_steps: int):
    """Linear warm-up to ``peak`` then cosine decay to zero."""
    return keras.optimizers.schedules.CosineDecay(0.0, max(total_steps - warmup_steps, 1), warmup_target=peak,
                                                  warmup_steps=warmup_steps)


class BatchLog(keras.callbacks.Callback):
    """Logs running training metrics every ``every`` batches (a progress line that suits a log file)."""

    def __init__(self, every: int = 50) -> None:
        super().__init__()
        self.every = every

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and (batch + 1) % self.every == 0:
            log.info("batch %d: %s", batch + 1, ", ".join(f"{k} {float(v):.4f}" for k, v in logs.items()))


class HeldOutMonitor(keras.callbacks.Callback):
    """After every epoch, scores the network on the held-out source's images (single view) and adds the
    protocol's figures (``compare.FIGURES``: balanced accuracy, melanoma AUC and sensitivity, macro AUC; none
    changes with the temperature fitted later) to the epoch's logs as ``heldout_<figure>``, so the stage's CSV
    history shows epoch by epoch how a clinic the network never sees fares. For choosing a schedule on
    held-out sources; checkpoints and early stopping still follow validation."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> None:
        super().__init__()
        if len(images) != len(labels) or not len(labels):
            raise ValueError(f"HeldOutMonitor needs images and their labels: {len(images)} images, "
                             f"{len(labels)} labels")
        self.images, self.labels, self.batch_size = images, np.asarray(labels), batch_size

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from skin_model.evaluation.compare import FIGURES

        if logs is None:
            return
        probs = predict_arrays(self.model, self.images, self.batch_size)
        for name, figure in FIGURES.items():
            try:
                logs[f"heldout_{name}"] = figure(self.labels, probs)
            except ValueError:  # e.g. an AUC of a class the held-out images lack
                logs[f"heldout_{name}"] = float("nan")
        log.info("Held-out source after epoch %d: %s", epoch + 1,
                 ", ".join(f"{name} {logs[f'heldout_{name}']:.3f}" for name in FIGURES))


class ForgetRestoredEpoch(keras.callbacks.Callback):
    """Keras' ``BackupAndRestore`` resumes a stage by setting the model's initial epoch, and the model keeps it:
    the next ``fit`` on the same model (the fine-tuning stage after a resumed head stage) would start at that
    epoch and run that many epochs too few. Clear it when a stage ends."""

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model._initial_epoch = None


@dataclass(frozen=True)
class Checkpoints:
    """The files train.py keeps in a run's checkpoints folder, per stage ("head", "finetune"); nothing else
    names them. Keras deletes a stage's epoch backup when the stage completes, so each stage leaves its own
    marker: the head stage its final weights (fine-tuning starts from them), fine-tuning a small JSON record
    (only its best checkpoint is used afterwards)."""

    folder: Path

    def history(self, stage: str) -> Path:
        """The stage's per-epoch CSV history (CSVLogger)."""
        return self.folder / f"history_{stage}.csv"

    def backup(self, stage: str) -> Path:
        """The stage's epoch backup folder (BackupAndRestore: weights and optimizer state) while it runs."""
        return self.folder / f"backup_{stage}"

    def best(self, stage: str) -> Path:
        """The stage's best-on-validation weights (ModelCheckpoint)."""
        return self.folder / f"best_{stage}.weights.h5"

    @property
    def head_done(self) -> Path:
        return self.folder / "head_final.weights.h5"

    @property
    def finetune_done(self) -> Path:
        return self.folder / "finetune_done.json"

    @property
    def finetune_begun(self) -> bool:
        """True once fine-tuning has an epoch backup or has finished: the head weights are no longer needed
        (the backup holds the whole model; after the stage its best checkpoint is loaded)."""
        return self.finetune_done.exists() or self.backup("finetune").is_dir()


def logged_values(csv_path: Path, monitor: str = MONITOR) -> list[float]:
    """The values of ``monitor``, epoch by epoch, already in a CSVLogger file (none when it does not exist)."""
    if not csv_path.is_file():
        return []
    with open(csv_path) as fh:
        return [float(row[monitor]) for row in csv.DictReader(fh) if row.get(monitor)]


def best_logged(csv_path: Path, monitor: str = MONITOR) -> float | None:
    """Best value of ``monitor`` already in a CSVLogger file (to resume checkpointing without regressions)."""
    values = logged_values(csv_path, monitor)
    return max(values) if values else None


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` (maximising ``MONITOR``) that a resumed stage continues instead of restarting: its best
    value and its count of epochs without improvement come from the stage's CSV history, so a run stopped and
    resumed stops at the same epoch as one that ran through."""

    def __init__(self, history_csv: Path, patience: int) -> None:
        super().__init__(monitor=MONITOR, mode="max", patience=patience, verbose=1)
        self.history_csv = history_csv

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        values = logged_values(self.history_csv, self.monitor)
        if values:
            self.best_epoch = int(np.argmax(values))
            self.best = values[self.best_epoch]
            self.wait = len(values) - 1 - self.best_epoch


def stage_callbacks(work_dir: Path, stage: str, patience: int | None, ema: bool = False,
                    held_out: HeldOutMonitor | None = None) -> list[keras.callbacks.Callback]:
    """Resume-safe callbacks: epoch backup, CSV history, best-on-validation checkpoint, early stopping (the
    last two continue from the history of a resumed stage).
    With ``ema`` (an optimizer keeping a moving average of the weights), validation, the history and the
    checkpoint all use the averaged weights; the backup keeps the raw ones (it runs before the swap).
    ``held_out`` scores the same weights as validation, before the history is written.
    ``ForgetRestoredEpoch`` keeps a restored epoch from shortening the next stage."""
    files = Checkpoints(work_dir)
    history_csv = files.history(stage)
    callbacks: list[keras.callbacks.Callback] = [
        BatchLog(),
        ForgetRestoredEpoch(),
        keras.callbacks.BackupAndRestore(str(files.backup(stage))),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),
        *([held_out] if held_out is not None else []),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.ModelCheckpoint(
            str(files.best(stage)), monitor=MONITOR, mode="max", save_best_only=True,
            save_weights_only=True, initial_value_threshold=best_logged(history_csv), verbose=1),
    ]
    if patience:
        callbacks.append(ResumableEarlyStopping(history_csv, patience))
    return callbacks


def predict_arrays(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax output of ``model`` for uint8 (N, S, S, 3) images, batch by batch."""
    out = [model.predict_on_batch(scale_pixels(images[i:i + batch_size].astype(np.float32)))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, NUM_CLASSES))


def in_training_metadata(input_size: int, temperature: float) -> ModelMetadata:
    """The metadata a predictor needs for a model that has no bundle yet: its input size and temperature."""
    return ModelMetadata(version="in training", created="", input_size=input_size, temperature=temperature)


def served_probabilities(predictor: CalibratedPredictor, images: np.ndarray, tta: bool = False,
                         chunk: int = 256) -> np.ndarray:
    """Calibrated probabilities of uint8 (N, S, S, 3) images as the app serves them: through ``predictor``
    (the one prediction path, ``inference.CalibratedPredictor``: its temperature, and the 8-view average when
    ``tta``), ``chunk`` images at a time."""
    parts = [predictor.probabilities_of(scale_pixels(images[i:i + chunk].astype(np.float32)), tta)
             for i in range(0, len(images), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, NUM_CLASSES))


def read_history(work_dir: Path, stages: tuple[str, ...]) -> dict[str, list[dict[str, float]]]:
    """The per-epoch CSV histories of each stage, as lists of rows."""
    history = {}
    for stage in stages:
        path = Checkpoints(work_dir).history(stage)
        if path.is_file():
            with open(path) as fh:
                history[stage] = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
    return history
