"""Test-time augmentation: average the calibrated prediction over the 8 dihedral views of each image.

Dermoscopic images have no canonical orientation (training already augments with flips and 90-degree
rotations), so the four rotations of the image and of its mirror image are equally valid views. The
views are taken of the model-size input (the centre square after resizing: a square crop commutes with
flips and 90-degree rotations), never of the full-resolution image, so TTA costs 8 small arrays, not 8
copies of a 50-megapixel photo. Each view goes through the network and temperature scaling and the
calibrated probabilities are averaged, so the result is again a probability distribution: that is
``inference.CalibratedPredictor.outputs(..., tta=True)``, the one prediction path; this module holds the views.
"""

from __future__ import annotations

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


def dihedral_views(image: Image.Image) -> list[Image.Image]:
    """The 8 flips/rotations of ``image`` (the first is the image itself)."""
    views = []
    for steps in DIHEDRAL_VIEWS:
        view = image
        for step in steps:
            view = view.transpose(step)
        views.append(view)
    return views


def dihedral_arrays(images: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a batch of square (N, S, S, C) arrays (the same set as ``dihedral_views``:
    a centre square crop commutes with them)."""
    views = []
    for batch in (images, images[:, :, ::-1]):
        views.extend(np.rot90(batch, k, axes=(1, 2)) for k in range(4))
    return views
