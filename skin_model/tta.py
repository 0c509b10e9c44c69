"""Test-time augmentation: average the calibrated prediction over the 8 dihedral views of each image.

Dermoscopic images have no canonical orientation (training already augments with flips and 90-degree
rotations), so the four rotations of the image and of its mirror image are equally valid views. The
views are taken of the model-size input (the centre square after resizing: a square crop commutes with
flips and 90-degree rotations), never of the full-resolution image, so TTA costs 8 small arrays, not 8
copies of a 50-megapixel photo. Each view goes through the network and temperature scaling and the
calibrated probabilities are averaged, so the result is again a probability distribution.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from PIL import Image

#: The dihedral group D4 as Pillow transposes: identity, 3 rotations, and the same after a mirror flip.
DIHEDRAL_VIEWS: tuple[tuple[Image.Transpose, ...], ...] = (
    (),
    (Image.Transpose.ROTATE_90,),
    (Image.Transpose.ROTATE_180,),
    (Image.Transpose.ROTATE_270,),
    (Image.Transpose.FLIP_LEFT_RIGHT,),
    (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90),
    (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_180),
    (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_270),
)


class ProbabilityPredictor(Protocol):
    """Anything with ``inference.CalibratedPredictor``'s preprocessing and calibrated batch prediction."""

    def model_input(self, images: list[Image.Image]) -> np.ndarray: ...

    def probabilities_of(self, model_input: np.ndarray) -> np.ndarray: ...


def dihedral_views(image: Image.Image) -> list[Image.Image]:
    """The 8 flips/rotations of ``image`` (the first is the image itself)."""
    views = []
    for steps in DIHEDRAL_VIEWS:
        view = image
        for step in steps:
            view = view.transpose(step)
        views.append(view)
    return views


def predict_probabilities_tta(predictor: ProbabilityPredictor, images: Sequence[Image.Image],
                              batch_images: int = 8) -> np.ndarray:
    """Calibrated (N, 7) probabilities averaged over the 8 dihedral views of each image.

    ``batch_images`` images (x 8 views) go through the model per call, to bound memory.
    """
    parts = [average_over_views(predictor, predictor.model_input(list(images[start:start + batch_images])))
             for start in range(0, len(images), batch_images)]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def average_over_views(predictor: ProbabilityPredictor, model_input: np.ndarray) -> np.ndarray:
    """Calibrated (N, 7) probabilities averaged over the 8 dihedral views of a preprocessed (N, S, S, 3)
    batch, in one call of the network."""
    views = np.concatenate(dihedral_arrays(model_input))  # view-major: (8 * N, S, S, 3)
    probs = np.asarray(predictor.probabilities_of(views), dtype=np.float64)
    return probs.reshape(len(DIHEDRAL_VIEWS), len(model_input), -1).mean(axis=0)


def dihedral_arrays(images: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a batch of square (N, S, S, C) arrays (the same set as ``dihedral_views``:
    a centre square crop commutes with them)."""
    views = []
    for batch in (images, images[:, :, ::-1]):
        views.extend(np.rot90(batch, k, axes=(1, 2)) for k in range(4))
    return views
