"""``head.npz``: the classifier's head after its last convolutional feature map, as closed-form Grad-CAM
(``skin_model.serving.explain``) needs it: global average pooling, dropout (the identity when serving) and one
dense layer, whose kernel and bias the file holds with the names of those layers.

``skin_model.serving.lite.build_lite`` writes it beside ``model.tflite`` from the Keras model
(``skin_model.model.dense_head``) and records its sha256 in ``model.tflite.json``; ``read_head`` checks that
sha256 on every load. A head of other layers is refused (``UnsupportedHeadError``): the closed form holds for
this one only. Reading it needs NumPy alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from skin_model.bundle.files import HEAD_FILE, LITE_INFO_FILE, ModelIntegrityError, sha256_of

#: The layers after the feature map that the closed form holds for, by Keras class name.
HEAD_STRUCTURE = ("GlobalAveragePooling2D", "Dropout", "Dense")


class UnsupportedHeadError(ModelIntegrityError):
    """The layers after the feature map are not global average pooling, dropout and one dense layer."""


def head_problem(layers: Sequence[str]) -> str | None:
    """Why closed-form Grad-CAM cannot explain a head of ``layers`` (Keras class names), or None."""
    if tuple(layers) == HEAD_STRUCTURE:
        return None
    found = " + ".join(layers) or "no layer"
    return (f"the layers after the last convolutional feature map are {found}; closed-form Grad-CAM needs "
            f"{' + '.join(HEAD_STRUCTURE)}")


@dataclass(frozen=True)
class DenseHead:
    """Pooling, dropout and the dense layer after ``feature_layer``: its (K, C) kernel and (C,) bias."""

    feature_layer: str
    layers: tuple[str, ...]
    kernel: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        problem = head_problem(self.layers)
        if problem is not None:
            raise UnsupportedHeadError(problem)
        kernel, bias = np.asarray(self.kernel), np.asarray(self.bias)
        if kernel.ndim != 2 or bias.shape != (kernel.shape[1],):
            raise ValueError(f"the dense layer needs a (K, C) kernel and a (C,) bias, got {kernel.shape} and "
                             f"{bias.shape}")
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise ValueError("the dense layer's weights are not all finite")
        object.__setattr__(self, "kernel", kernel.astype(np.float32))
        object.__setattr__(self, "bias", bias.astype(np.float32))
        object.__setattr__(self, "layers", tuple(self.layers))

    @property
    def channels(self) -> int:
        """K: the feature map's channels."""
        return int(self.kernel.shape[0])

    @property
    def classes(self) -> int:
        return int(self.kernel.shape[1])

    def logits(self, feature_map: np.ndarray) -> np.ndarray:
        """(..., C) class scores before the softmax for feature maps (..., H, W, K), in float32."""
        pooled = np.asarray(feature_map, np.float32).mean(axis=(-3, -2), dtype=np.float32)
        return pooled @ self.kernel + self.bias


def write_head(path: Path, head: DenseHead) -> Path:
    """Write ``head`` as ``.npz`` at ``path`` (no pickled objects); the sha256 is the caller's to record."""
    buffer = io.BytesIO()
    np.savez(buffer, kernel=head.kernel, bias=head.bias, feature_layer=np.array(head.feature_layer),
             layers=np.array(head.layers))
    Path(path).write_bytes(buffer.getvalue())
    return Path(path)


def read_head(weights_dir: Path, expected_sha256: str) -> DenseHead:
    """The bundle's ``head.npz`` after checking it against the sha256 recorded in ``model.tflite.json``.

    ``ModelIntegrityError`` naming the problem when it is missing, altered or malformed;
    ``UnsupportedHeadError`` when it describes a head the closed form does not hold for.
    """
    path = Path(weights_dir) / HEAD_FILE
    if not path.is_file():
        raise ModelIntegrityError(f"{HEAD_FILE} is missing from {weights_dir}")
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ModelIntegrityError(f"{HEAD_FILE} has sha256 {actual[:12]}..., {LITE_INFO_FILE} records "
                                  f"{str(expected_sha256)[:12]}...: it was altered or damaged")
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in ("kernel", "bias", "feature_layer", "layers")}
        return DenseHead(feature_layer=str(fields["feature_layer"]),
                         layers=tuple(str(name) for name in fields["layers"].reshape(-1)),
                         kernel=fields["kernel"], bias=fields["bias"])
    except UnsupportedHeadError as exc:
        raise UnsupportedHeadError(f"{HEAD_FILE} in {weights_dir}: {exc}") from None
    except (KeyError, ValueError, OSError) as exc:
        raise ModelIntegrityError(f"{HEAD_FILE} in {weights_dir} is malformed ({exc})") from None
