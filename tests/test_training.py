"""The training recipe's pieces: the balanced-accuracy metric on one-hot and integer labels, one-hot
labels, soft targets and MixUp in the tf.data pipeline, distillation targets from teacher bundles, the
8-view test-time average, label smoothing reaching the loss, the checkpointed moving average of the weights,
the logit-adjusted loss, tempered class weights and the held-out source's figures epoch by epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skin_model.labels import CODES, MELANOMA, NUM_CLASSES

MEL = CODES.index(MELANOMA)


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, NUM_CLASSES, 300)
    labels[:5] = 6  # every class present, unevenly
    probs = rng.dirichlet(np.ones(NUM_CLASSES), 300)
    probs[np.arange(150), labels[:150]] += 1.0  # half the images predicted right
    return labels, probs / probs.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("one_hot", [False, True])
def test_balanced_accuracy_metric_matches_sklearn(predictions, one_hot):
    from skin_model.training.stages import BalancedAccuracy

    labels, probs = predictions
    metric = BalancedAccuracy()
    y_true = np.eye(NUM_CLASSES, dtype=np.float32)[labels] if one_hot else labels
    for start in range(0, len(labels), 64):  # accumulated over batches, like an epoch
        metric.update_state(y_true[start:start + 64], probs[start:start + 64])
    expected = balanced_accuracy_score(labels, probs.argmax(axis=1))
    assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    assert 0.3 < expected < 0.9, "a fixture that can tell a wrong metric apart"


def test_training_step_compiles_under_xla(predictions):
    """train.py compiles with XLA on a GPU: the loss and both metrics must build under ``jit_compile=True``
    (XLA also runs on this CPU). A ``bincount`` in the metric failed here with "must be a compile-time
    constant"."""
    import keras

    from skin_model.training.stages import compile_stage

    labels, _ = predictions
    x = np.random.default_rng(0).normal(size=(len(labels), 4)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    compile_stage(model, 1e-3, jit_compile=True)
    logs = model.fit(x, y, batch_size=64, epochs=1, verbose=0).history
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    result = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"][0])
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-6)


def test_dataset_yields_one_hot_labels_in_order():
    from skin_model.data.pipeline import make_tf_dataset

    labels = np.array([0, 3, 6, 5, 1], np.int32)
    images = np.zeros((len(labels), 32, 32, 3), np.uint8)
    (_, y), = make_tf_dataset(images, labels, batch_size=len(labels), training=False).as_numpy_iterator()
    np.testing.assert_array_equal(y, np.eye(NUM_CLASSES)[labels])


def test_dataset_passes_soft_targets_through_unchanged():
    from skin_model.data.pipeline import make_tf_dataset

    targets = np.random.default_rng(0).dirichlet(np.ones(NUM_CLASSES), 5).astype(np.float32)
    images = np.zeros((len(targets), 32, 32, 3), np.uint8)
    (_, y), = make_tf_dataset(images, targets, batch_size=len(targets), training=False).as_numpy_iterator()
    np.testing.assert_array_equal(y, targets)


def test_distillation_targets_blend_label_and_teacher():
    from skin_model.training.stages import distillation_targets

    labels = np.array([0, 4, 6])
    teacher = np.random.default_rng(1).dirichlet(np.ones(NUM_CLASSES), 3)
    np.testing.assert_allclose(distillation_targets(labels, teacher, 0.0), np.eye(NUM_CLASSES)[labels])
    np.testing.assert_allclose(distillation_targets(labels, teacher, 1.0), teacher)
    blended = distillation_targets(labels, teacher, 0.3)
    np.testing.assert_allclose(blended, 0.7 * np.eye(NUM_CLASSES)[labels] + 0.3 * teacher)
    np.testing.assert_allclose(blended.sum(axis=1), 1.0)
    assert (blended.argmax(axis=1) == labels).all(), "up to 0.5 the label stays the largest target"
    confident_other = np.full((3, NUM_CLASSES), 0.01)
    confident_other[:, 1] = 1 - 0.01 * (NUM_CLASSES - 1)  # the teachers favour class 1 for every image
    assert (distillation_targets(labels, confident_other, 0.5).argmax(axis=1) == labels).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        distillation_targets(labels, teacher, 1.5)
    with pytest.raises(ValueError, match="shape"):
        distillation_targets(labels, teacher[:2], 0.5)


def test_teacher_probabilities_average_the_calibrated_bundles(tiny_bundle, tmp_path):
    import shutil

    from skin_model.bundle import ModelMetadata
    from skin_model.serving.calibration import apply_temperature
    from skin_model.model import load_bundle
    from skin_model.training.stages import predict_arrays, teacher_probabilities

    # A second teacher: the same network with another temperature, so only calibration tells them apart.
    hotter = Path(shutil.copytree(tiny_bundle, tmp_path / "hotter"))
    metadata = ModelMetadata.from_json(hotter / "metadata.json")
    metadata.temperature = 3.0
    metadata.to_json(hotter / "metadata.json")
    model, tiny_meta = load_bundle(tiny_bundle)
    images = np.random.default_rng(2).integers(0, 256, (4, tiny_meta.input_size, tiny_meta.input_size, 3),
                                                dtype=np.uint8)
    raw = predict_arrays(model, images)
    expected = (apply_temperature(raw, tiny_meta.temperature) + apply_temperature(raw, 3.0)) / 2
    np.testing.assert_allclose(teacher_probabilities([tiny_bundle, hotter], images), expected, atol=1e-6)
    with pytest.raises(ValueError, match="--image-size"):
        teacher_probabilities([tiny_bundle], np.zeros((1, 32, 32, 3), np.uint8))


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_mixup_blends_images_and_labels_with_the_same_weight(alpha):
    from skin_model.data.augment import AugmentConfig
    from skin_model.data.imaging import scale_pixels
    from skin_model.data.pipeline import make_tf_dataset

    # Flat grey images, one level per class: flips, crops, contrast, saturation and hue leave them as they
    # are, and brightness jitter is off, so any pixel of a training image is the blend of its class levels
    # with the same weights as its label.
    levels = np.array([0, 40, 80, 120, 160, 200, 240], np.float32)
    labels = np.arange(64, dtype=np.int32) % NUM_CLASSES
    images = np.broadcast_to(levels[labels].astype(np.uint8)[:, None, None, None], (64, 16, 16, 3)).copy()
    still = AugmentConfig(brightness=0.0, mixup_alpha=alpha)
    batches = list(make_tf_dataset(images, labels, 16, training=True, augment_config=still).as_numpy_iterator())
    x, y = (np.concatenate(part) for part in zip(*batches))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert ((y > 1e-6).sum(axis=1) <= 2).all(), "a blend of two images at most"
    expected = np.asarray(scale_pixels(y @ levels))
    np.testing.assert_allclose(x[:, 8, 8, 0], expected, atol=2e-3)
    blended = (y.max(axis=1) < 0.99).mean()
    if alpha:
        assert 0.2 < blended < 1.0, f"MixUp should blend some but not all pairs ({blended:.0%})"
    else:
        assert blended == 0.0
        np.testing.assert_array_equal(np.sort(y.argmax(axis=1)), np.sort(labels))


def test_label_smoothing_reaches_the_loss():
    import keras

    from skin_model.training.stages import compile_stage

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(8) % NUM_CLASSES]
    probs = model.predict_on_batch(x)
    losses = {}
    for smoothing in (0.0, 0.2):
        compile_stage(model, 1e-3, jit_compile=False, label_smoothing=smoothing)
        losses[smoothing] = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    target = y * 0.8 + 0.2 / NUM_CLASSES
    assert losses[0.0] == pytest.approx(float(np.mean(-np.log(probs[y == 1]))), rel=1e-4)
    assert losses[0.2] == pytest.approx(float(np.mean(-(target * np.log(probs)).sum(axis=1))), rel=1e-4)


def test_checkpoint_holds_the_validated_moving_average(tmp_path):
    """With EMA on, the weights validated, logged and checkpointed are the moving average: reloading the
    checkpoint reproduces the logged validation loss (the raw weights give another loss)."""
    import csv

    import keras

    from skin_model.training.stages import compile_stage, stage_callbacks

    def small_model() -> keras.Model:
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])

    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, 64)]
    model = small_model()
    compile_stage(model, 0.05, jit_compile=False, ema_momentum=0.9)
    model.fit(x, y, batch_size=8, epochs=1, validation_data=(x, y), verbose=0, shuffle=False,
              callbacks=stage_callbacks(tmp_path, "finetune", patience=None, ema=True))
    with open(tmp_path / "history_finetune.csv") as fh:
        logged = float(next(csv.DictReader(fh))["val_loss"])
    restored = small_model()
    restored.load_weights(tmp_path / "best_finetune.weights.h5")
    compile_stage(restored, 0.05, jit_compile=False)
    assert restored.evaluate(x, y, verbose=0, return_dict=True)["loss"] == pytest.approx(logged, rel=1e-5)
    raw = small_model()
    compile_stage(raw, 0.05, jit_compile=False)
    raw.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # the same steps without the average
    assert raw.evaluate(x, y, verbose=0, return_dict=True)["loss"] != pytest.approx(logged, rel=1e-3)


def test_held_out_monitor_logs_the_protocol_figures_of_each_epoch(tmp_path):
    """A network that calls every melanoma a naevus and gets the rest right: balanced accuracy 6/7, melanoma
    sensitivity 0, and (every image scoring melanoma alike) melanoma AUC 0.5, in the stage's CSV history."""
    import csv

    import keras

    from skin_model.training.stages import HeldOutMonitor, compile_stage, stage_callbacks

    labels = np.repeat(np.arange(NUM_CLASSES), 4)
    called = np.where(labels == MEL, CODES.index("nv"), labels)
    images = np.zeros((len(labels), 8, 8, 3), np.uint8)
    images[np.arange(len(labels)), 0, called, 0] = 255  # the network's answer, as one bright pixel
    picks = np.zeros((8 * 8 * 3, NUM_CLASSES), np.float32)
    picks[np.arange(NUM_CLASSES) * 3, np.arange(NUM_CLASSES)] = 10.0  # pixel (0, k) channel 0 -> class k
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    model.layers[-1].set_weights([picks, np.zeros(NUM_CLASSES, np.float32)])
    compile_stage(model, 0.0, jit_compile=False)
    x = images.astype(np.float32) / 127.5 - 1.0
    y = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    model.fit(x, y, batch_size=7, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=stage_callbacks(tmp_path, "finetune", None, held_out=HeldOutMonitor(images, labels)))
    with open(tmp_path / "history_finetune.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for row in rows:
        assert float(row["heldout_balanced_accuracy"]) == pytest.approx(6 / 7)
        assert float(row["heldout_melanoma_sensitivity"]) == 0.0
        assert float(row["heldout_melanoma_auc"]) == pytest.approx(0.5)
        assert float(row["val_balanced_accuracy"]) == pytest.approx(6 / 7), "validation sees the same network"
    with pytest.raises(ValueError, match="labels"):
        HeldOutMonitor(images, labels[:3])


def test_logit_adjusted_loss_shifts_the_softmax_by_the_log_prior():
    """The loss is the cross-entropy of softmax(log p + tau * log prior); with a uniform prior it is plain
    cross-entropy, and a rare true class costs more than a common one at the same predicted probability."""
    from skin_model.training.stages import logit_adjusted_loss, prior_shift

    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(NUM_CLASSES), 6).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[[0, 1, 2, 3, 4, 5]]
    labels = np.repeat(np.arange(NUM_CLASSES), [3, 5, 11, 1, 11, 67, 2])
    shift = prior_shift(labels, tau=1.0)
    np.testing.assert_allclose(shift, np.log(np.array([3, 5, 11, 1, 11, 67, 2]) / 100))
    np.testing.assert_allclose(prior_shift(labels, tau=0.5), shift / 2)
    adjusted = np.log(probs) + shift
    expected = -np.mean((y * (adjusted - np.log(np.exp(adjusted).sum(axis=1, keepdims=True)))).sum(axis=1))
    assert float(logit_adjusted_loss(shift)(y, probs)) == pytest.approx(expected, rel=1e-5)
    uniform = np.full(NUM_CLASSES, np.log(1 / NUM_CLASSES))
    assert float(logit_adjusted_loss(uniform)(y, probs)) == pytest.approx(
        float(np.mean(-np.log(probs[y == 1]))), rel=1e-5)
    even = np.full((1, NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
    rare, common = (float(logit_adjusted_loss(shift)(np.eye(NUM_CLASSES, dtype=np.float32)[[c]], even))
                    for c in (3, 5))
    assert rare > common


def test_served_probabilities_with_tta_are_invariant_to_flips_and_rotations(tiny_bundle):
    """The 8-view average covers every flip/rotation, so turning the inputs first must not change it,
    while a single view does change (the network itself is not invariant); both are the app's path."""
    from skin_model.serving.inference import Predictor
    from skin_model.model import load_bundle
    from skin_model.training.stages import served_probabilities

    model, meta = load_bundle(tiny_bundle)
    images = np.random.default_rng(5).integers(0, 256, (3, meta.input_size, meta.input_size, 3), dtype=np.uint8)
    turned = np.ascontiguousarray(np.rot90(images[:, ::-1], k=1, axes=(1, 2)))  # flip, then rotate 90 degrees
    predictor = Predictor(model, meta)
    averaged = served_probabilities(predictor, images, tta=True, chunk=2)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(served_probabilities(predictor, turned, tta=True), averaged, atol=1e-5)
    single, single_turned = (served_probabilities(predictor, x) for x in (images, turned))
    assert np.abs(single - single_turned).max() > 1e-4


def test_the_litert_copy_train_py_evaluates_with_gives_the_keras_probabilities(tiny_bundle, tmp_path):
    """train.py predicts its evaluations through a LiteRT export of the trained network (as the app serves
    it): single view and 8-view average must match the Keras model's, at the bundle's temperature."""
    from skin_model.serving.inference import Predictor
    from skin_model.serving.lite import LitePredictor, export_lite
    from skin_model.model import load_bundle
    from skin_model.training.stages import in_training_metadata, served_probabilities

    model, meta = load_bundle(tiny_bundle)
    images = np.random.default_rng(6).integers(0, 256, (5, meta.input_size, meta.input_size, 3), dtype=np.uint8)
    lite = LitePredictor(export_lite(model, tmp_path / "model.tflite"),
                         in_training_metadata(meta.input_size, meta.temperature))
    keras_path = Predictor(model, meta)
    for tta in (False, True):
        np.testing.assert_allclose(served_probabilities(lite, images, tta=tta, chunk=2),
                                   served_probabilities(keras_path, images, tta=tta), atol=1e-5)


def test_a_resumed_stage_does_not_shorten_the_next_one(tmp_path):
    """Keras' BackupAndRestore leaves the restored epoch on the model; the next stage must still run all its
    epochs (it ran one fewer per restored epoch before ForgetRestoredEpoch)."""
    import keras

    from skin_model.training.stages import compile_stage, stage_callbacks

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("session ended")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(32) % NUM_CLASSES]
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
    compile_stage(model, 1e-2, jit_compile=False)
    fit = {"x": x, "y": y, "validation_data": (x, y), "batch_size": 8, "verbose": 0}
    with pytest.raises(KeyboardInterrupt):
        model.fit(epochs=4, callbacks=[*stage_callbacks(tmp_path, "head", None), Interrupt()], **fit)
    resumed = model.fit(epochs=4, callbacks=stage_callbacks(tmp_path, "head", None), **fit)
    assert len(resumed.history["loss"]) == 2, "the head stage resumed after its second epoch"
    compile_stage(model, 1e-3, jit_compile=False)
    finetune = model.fit(epochs=3, callbacks=stage_callbacks(tmp_path, "finetune", None), **fit)
    assert len(finetune.history["loss"]) == 3


def test_class_weight_power_tempers_the_balanced_weights():
    from skin_model.training.stages import class_weights

    labels = np.repeat([0, 4, 5], [10, 40, 150])
    balanced = class_weights(labels)
    assert balanced == pytest.approx({0: 200 / 30, 4: 200 / 120, 5: 200 / 450})
    assert sum(balanced[c] * n for c, n in zip((0, 4, 5), (10, 40, 150))) == pytest.approx(200)
    tempered = class_weights(labels, 0.5)
    assert tempered == pytest.approx({c: w ** 0.5 for c, w in balanced.items()})
    assert tempered[0] / tempered[5] == pytest.approx((balanced[0] / balanced[5]) ** 0.5)  # 15 -> 3.9
    assert class_weights(labels, 0.0) == {0: 1.0, 4: 1.0, 5: 1.0}


def test_early_stopping_of_a_resumed_stage_counts_the_epochs_before_the_stop(tmp_path):
    """Best validation score at epoch 1 of 4 logged, patience 3: a resumed stage stops after one more epoch
    without improvement, as the run would have without the interruption; with no history it waits 3 epochs."""
    import keras

    from skin_model.training.stages import MONITOR, ResumableEarlyStopping

    class FixedScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs[MONITOR] = 0.55

    def epochs_run(history_csv: Path, initial_epoch: int) -> int:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(NUM_CLASSES, activation="softmax")])
        model.compile("adam", "categorical_crossentropy")
        x, y = np.zeros((8, 4), np.float32), np.eye(NUM_CLASSES, dtype=np.float32)[np.arange(8) % NUM_CLASSES]
        history = model.fit(x, y, epochs=initial_epoch + 10, initial_epoch=initial_epoch, verbose=0,
                            callbacks=[FixedScore(), ResumableEarlyStopping(history_csv, patience=3)])
        return len(history.history["loss"])

    logged = tmp_path / "history_finetune.csv"
    logged.write_text(f"epoch,{MONITOR}\n0,0.5\n1,0.7\n2,0.6\n3,0.6\n")
    assert epochs_run(logged, initial_epoch=4) == 1
    assert epochs_run(tmp_path / "none.csv", initial_epoch=0) == 4
