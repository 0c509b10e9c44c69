"""The classifier (flat functional MobileNetV2 + head) and its Keras file ``model.keras`` (saved beside
``metadata.json``, which ``skin_model.bundle`` owns).

The head is built on ``backbone.output`` rather than by calling a nested backbone, so the model is one flat graph
that tf-keras-vis can explain; after ``LAST_CONV_LAYER`` it is global average pooling, dropout and one dense
layer, which closed-form Grad-CAM reads from the bundle's ``head.npz`` (``dense_head``). Batch-norm layers are
never trainable, which keeps them in inference mode (Keras 3 runs a non-trainable BatchNormalization with its
moving statistics even when training).
``model.tflite`` (``skin_model.serving.lite``), the same network for serving, is built from ``model.keras`` as an
explicit step (train.py, ``make app``, ``python -m skin_model.cli.lite``).

Keras is imported inside the functions that need it: serving imports this module's layer names and never
loads TensorFlow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skin_model.bundle import (MODEL_FILE, DenseHead, ModelMetadata, UnsupportedHeadError, checked_file,
                               read_metadata, sha256_of, write_metadata)
from skin_model.bundle.head import head_problem
from skin_model.labels import CLASSES, NUM_CLASSES

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

HEAD_LAYERS = ("head_pool", "head_dropout", "predictions")
LAST_CONV_LAYER = "out_relu"  # MobileNetV2's last convolutional activation: Grad-CAM's target
#: The out-of-distribution gate's features (``skin_model.serving.ood``), averaged over space.
OOD_FEATURE_LAYER = "block_8_expand_relu"


def build_classifier(input_size: int = 224, backbone_weights: str | Path | None = None,
                     dropout: float = 0.3, colour_constancy: str = "none") -> keras.Model:
    """MobileNetV2 backbone + global average pooling + dropout + Dense(7, softmax), as one flat graph.

    ``backbone_weights``: a ``.weights.h5`` file for ``MobileNetV2(include_top=False)``, the string
    ``"imagenet"`` (Keras' own download), or None for random initialisation (tests only).
    ``colour_constancy``: "shades-of-grey" puts ``colour.ShadesOfGrey`` between the input and the backbone.
    """
    import keras

    from skin_model.data.colour import colour_constancy_layer

    from_file = backbone_weights not in (None, "imagenet")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    layer = colour_constancy_layer(colour_constancy)
    backbone = keras.applications.MobileNetV2(
        input_tensor=layer(inputs) if layer is not None else inputs, include_top=False,
        weights=None if from_file else backbone_weights)
    if from_file:
        _load_backbone_weights(backbone, input_size, Path(backbone_weights))
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(backbone.output)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="skin_mobilenetv2")
    set_trainable_backbone(model, None)
    return model


def _load_backbone_weights(backbone: keras.Model, input_size: int, path: Path) -> None:
    """Copy the ImageNet weights of a plain ``MobileNetV2(include_top=False)`` into ``backbone`` layer by
    layer name (``backbone`` may start with extra, weightless layers such as colour constancy)."""
    import keras

    plain = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), include_top=False,
                                           weights=None)
    plain.load_weights(str(path))
    for layer in plain.layers:
        if layer.weights:
            backbone.get_layer(layer.name).set_weights(layer.get_weights())


def set_trainable_backbone(model: keras.Model, first_layer: str | None) -> None:
    """Freeze the backbone below ``first_layer`` (all of it if None, none of it if ``"all"``).

    Head layers are always trainable; batch-norm layers never are (they stay in inference mode).
    """
    import keras

    trainable = first_layer == "all"
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            layer.trainable = True
            continue
        if first_layer not in (None, "all") and layer.name.startswith(first_layer):
            trainable = True
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
    if first_layer not in (None, "all") and not any(l.name.startswith(first_layer) for l in model.layers):
        raise ValueError(f"No layer named {first_layer!r}* in the backbone")


#: The known limits of a model trained on HAM10000 alone (train.py records them in the metadata).
HAM10000_KNOWN_LIMITS: tuple[str, ...] = (
    "Dermoscopic images only: trained on dermatoscope photographs; clinical (non-dermoscopic) photos, histology "
    "or whole-body images are outside its scope and were never evaluated.",
    "Skin types under-represented: HAM10000 comes from two practices (Vienna, Austria and Queensland, "
    "Australia) whose patients are mostly fair-skinned and of European descent; performance on darker skin "
    "types is unknown.",
    "No patient context: age, sex and body site are not inputs, although clinicians use them.",
    "Seven classes only: any other lesion (e.g. invasive squamous cell carcinoma, Merkel cell carcinoma) or "
    "non-lesion image is forced into one of the seven classes.",
    "Lesion size in the frame: in HAM10000 melanomas fill more of the photo than naevi (median lesion box "
    "0.37-0.74 of the frame by source, naevi 0.19-0.48), and a model trained on it uses that. Melanomas "
    "photographed small in a wide field are found less often: on validation the model of 2026-11-26 found 68% of "
    "the melanomas in the quarter filling least of the frame against 78-80% of the others; held out on a clinic "
    "that frames melanomas small (vidir_modern), a model trained without it found 22% of that quarter "
    "(`benchmarks/lesion_scale_probe.py`).",
)

#: The known limit on the clinics a model has seen, by whether it was trained on sources beyond HAM10000.
ONE_DATA_SET_LIMIT = (
    "One data set: trained and tested on HAM10000 only. On external dermoscopy from other clinics the model of "
    "2026-11-26 missed most melanomas (sensitivity 0.27-0.60); the held-out-source figures ('Other clinics') are "
    "HAM10000's own proxy for that. Evaluate it with `python -m skin_model.cli.evaluate` on such data before relying "
    "on it.")
FEW_CLINICS_LIMIT = (
    "Few clinics: trained on HAM10000 (two practices, Vienna and Queensland) and ISIC Archive images (Memorial "
    "Sloan Kettering and other ISIC partners; almost all naevi, melanomas and benign keratoses, squashed to "
    "squares at 180-256 pixels). Photos from other clinics, cameras and skin types may still be misread; the "
    "held-out-source figures ('Other clinics') measure the recipe on a source left out of training. Evaluate it with "
    "`python -m skin_model.cli.evaluate` on such data before relying on it.")


def known_limits(trained_sources: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The model card's known limits for a model trained on ``trained_sources`` (the ``dataset`` values)."""
    from skin_model.data.dataset import HAM10000

    clinics = FEW_CLINICS_LIMIT if set(trained_sources) - set(HAM10000.sources) else ONE_DATA_SET_LIMIT
    return (*HAM10000_KNOWN_LIMITS[:4], clinics, *HAM10000_KNOWN_LIMITS[4:])


def default_preprocessing(input_size: int, colour_constancy: str | None = None) -> dict[str, Any]:
    """Description of ``skin_model.data.imaging``'s path, recorded in the metadata, and of the network's
    colour-constancy layer when it has one (``colour.describe``)."""
    steps = {
        "decode": "Pillow; EXIF orientation applied; any mode to 8-bit RGB (transparency on white)",
        "crop": "centre square",
        "resize": f"{input_size}x{input_size}, bicubic (PIL.ImageOps.fit)",
        "scaling": "x / 127.5 - 1 (MobileNetV2)",
    }
    return {**steps, "colour_constancy": colour_constancy} if colour_constancy else steps


def network_data_format(input_size: int) -> dict[str, Any]:
    return {
        "inputs": {"image": {"type": "image", "format": "RGB", "num_channels": 3,
                             "spatial_shape": [input_size, input_size], "dtype": "float32",
                             "value_range": [-1, 1]}},
        "outputs": {"pred": {"type": "probabilities", "num_channels": NUM_CLASSES, "activation": "softmax",
                             "channel_def": {str(i): c.code for i, c in enumerate(CLASSES)}}},
    }


def save_bundle(model: keras.Model, metadata: ModelMetadata, out_dir: Path) -> Path:
    """Write ``model.keras`` (no optimizer state) and ``metadata.json`` with its sha256. The served LiteRT
    copy is a separate step: ``skin_model.serving.lite.build_lite(out_dir)``."""
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    # A fresh, uncompiled Model over the same layers: the .keras file carries no optimizer state.
    keras.Model(model.inputs, model.outputs, name=model.name).save(model_path)
    metadata.model_file = MODEL_FILE
    metadata.model_sha256 = sha256_of(model_path)
    write_metadata(out_dir, metadata)
    log.info("Saved model bundle to %s (sha256 %s)", out_dir, metadata.model_sha256[:12])
    return model_path


def dense_head(model: keras.Model) -> DenseHead:
    """The layers after ``LAST_CONV_LAYER`` as a ``DenseHead`` (pooling, dropout, dense kernel and bias);
    ``UnsupportedHeadError`` naming the layers when the model's head is another chain or not a chain."""
    names = [layer.name for layer in model.layers]
    if LAST_CONV_LAYER not in names:
        raise UnsupportedHeadError(f"the model has no layer {LAST_CONV_LAYER!r}, the feature map Grad-CAM explains")
    chain = model.layers[names.index(LAST_CONV_LAYER):]
    problem = head_problem([type(layer).__name__ for layer in chain[1:]])
    if problem is None and not _is_plain_chain(model, chain):
        problem = "the layers after the last convolutional feature map do not form one chain to the model's output"
    if problem is None and (chain[1].data_format != "channels_last" or chain[1].keepdims):
        problem = "the pooling layer must average a channels-last feature map to a vector"
    if problem is not None:
        raise UnsupportedHeadError(f"Model {model.name}: {problem}")
    dense = chain[-1]
    kernel = dense.kernel.numpy()
    bias = dense.bias.numpy() if dense.use_bias else np.zeros(kernel.shape[1], np.float32)
    return DenseHead(feature_layer=LAST_CONV_LAYER, layers=tuple(type(layer).__name__ for layer in chain[1:]),
                     kernel=kernel, bias=bias)


def _is_plain_chain(model: keras.Model, chain: list) -> bool:
    """True when each layer of ``chain`` takes the previous one's output alone and the last is the model's
    only output."""
    linked = all(layer.input is previous.output for previous, layer in zip(chain, chain[1:]))
    return linked and len(model.outputs) == 1 and model.outputs[0] is chain[-1].output


def load_bundle(weights_dir: Path) -> tuple[keras.Model, ModelMetadata]:
    """Load ``model.keras`` in Keras safe mode after checking its sha256 against ``metadata.json``."""
    import keras

    import skin_model.data.colour  # noqa: F401  (registers ShadesOfGrey for safe-mode loading)

    metadata = read_metadata(weights_dir)
    model_path = checked_file(weights_dir, metadata.model_file, metadata.model_sha256)
    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    return model, metadata
