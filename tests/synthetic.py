"""Synthetic stand-ins for HAM10000 and the ImageNet backbone, so that tests of mechanics run without
``../shared``.

``lesion_image`` draws a dermoscopy-like photo with numpy and Pillow: a skin-toned, unevenly lit
background with some texture, an irregular pigmented blob near the centre (its colour and texture depend on
the diagnosis code), sometimes hairs and the dark circular vignette of a dermatoscope. ``write_ham_folder``
writes a HAM10000-shaped folder: ``HAM10000_metadata.csv`` (the real columns: lesion_id, image_id, dx,
dx_type, age, sex, localization, dataset; several images for some lesions; all seven classes and the four
sources), ``images_600x450/`` originals, ``images_200x150/`` copies (the originals shrunk 3x, as in
../shared) and ``lesion_bboxes_200x150.csv`` (the box of the drawn blob in 200x150 coordinates).

``calibrate_batch_norm`` stands in for the ImageNet weights: a randomly initialised MobileNetV2 passes
almost nothing through its 17 blocks (its Glorot-initialised convolutions shrink the activations about tenfold
every block or two, to ~1e-12 at the end, so every image gives the same uniform output), so its batch-norm
statistics are set from
``noise_images`` (random noise at several scales) in one pass, after which different images give different
outputs, Grad-CAM maps and out-of-distribution features.

Everything is deterministic for a seed. The images only look roughly like dermoscopy and the network knows
nothing: tests that use them check what the code does with an image, never how well a model classifies it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

#: The first synthetic image id is ISIC_0024306, a naevus (as the first HAM10000 original in ../shared).
FIRST_ID = 24306
SOURCES = ("rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias")
#: Lesions per diagnosis in ``write_ham_folder`` (every class has enough lesions for a stratified split
#: and for train.py's --max-images subsets; nv is the largest class, as in HAM10000).
LESIONS_PER_CLASS = {"nv": 44, "mel": 22, "bkl": 20, "bcc": 18, "akiec": 15, "vasc": 14, "df": 14}
#: Every SECOND_IMAGE_EVERY-th lesion has a second image (lesion-grouped splits are then meaningful).
SECOND_IMAGE_EVERY = 5

#: Typical lesion colour (RGB) and how much darker/variegated its texture is, per diagnosis code.
PALETTE = {
    "nv": ((135, 85, 60), 18.0),
    "mel": ((75, 48, 45), 40.0),
    "bkl": ((165, 125, 90), 22.0),
    "bcc": ((195, 135, 135), 25.0),
    "akiec": ((195, 105, 95), 28.0),
    "vasc": ((160, 45, 65), 20.0),
    "df": ((175, 125, 105), 15.0),
}


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about ``cell`` pixels (bicubic upsampling of a coarse grid)."""
    coarse = rng.normal(size=(height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BICUBIC))


def lesion_image(seed: int, dx: str = "nv", size: tuple[int, int] = (600, 450),
                 extras: bool = True) -> tuple[Image.Image, tuple]:
    """A dermoscopy-like RGB image of ``size`` (width, height) and the lesion's box in its pixels
    ``(top, bottom, left, right)``. Drawn at half the size and enlarged (quicker, and smooth like a photo)."""
    rng = np.random.default_rng(seed)
    width, height = size[0] // 2, size[1] // 2
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    # Skin: a tone per image, lit more in the middle than at the edges, with a fine texture.
    skin = (np.array([226.0, 172.0, 150.0]) * rng.uniform(0.86, 1.04, 3)).astype(np.float32)
    falloff = 1.0 - rng.uniform(0.1, 0.3) * (((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2)
    texture = 6.0 * _smooth_noise(rng, height, width, 20) + 3.0 * _smooth_noise(rng, height, width, 3)
    image = skin * falloff[..., None] + texture[..., None]

    # Lesion: an irregular blob with a soft edge, darker towards its centre.
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    r0 = rng.uniform(0.16, 0.3) * height
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.hypot(xx - cx, yy - cy)
    boundary = np.full_like(radius, r0)
    for k in range(2, 7):
        boundary += r0 * rng.uniform(0.0, 0.16 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    edge = rng.uniform(0.04, 0.12) * r0
    alpha = np.clip((boundary - radius) / edge + 0.5, 0.0, 1.0)
    colour, variegation = PALETTE[dx]
    colour = np.array(colour, np.float32) * rng.uniform(0.85, 1.15)
    depth = np.clip(1.0 - radius / np.maximum(boundary, 1.0), 0.0, 1.0)
    pattern = variegation * _smooth_noise(rng, height, width, 7) + 0.4 * variegation * _smooth_noise(rng, height, width, 2)
    lesion = colour * (1.0 - 0.3 * depth)[..., None] + pattern[..., None]
    if dx in ("mel", "bcc"):  # blue-grey areas
        blue = np.clip(_smooth_noise(rng, height, width, 15), 0, None)[..., None] * np.array([-10.0, 5.0, 30.0])
        lesion = lesion + blue
    image = image * (1.0 - alpha[..., None]) + lesion * alpha[..., None]

    # Dermatoscope vignette: dark outside a circle, for about a third of the images.
    if extras and rng.random() < 0.35:
        circle = rng.uniform(0.45, 0.6) * width
        outside = np.clip((np.hypot(xx - width / 2, yy - height / 2) - circle) / 10.0, 0.0, 1.0)
        image = image * (1.0 - 0.9 * outside[..., None])

    image = np.clip(image, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image, "RGB").resize(size, Image.Resampling.BICUBIC)
    width, height = size

    # Hairs: a few dark, slightly curved strands, for about a quarter of the images.
    if extras and rng.random() < 0.25:
        draw = ImageDraw.Draw(picture)
        for _ in range(int(rng.integers(1, 6))):
            x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
            angle = rng.uniform(0, np.pi)
            points = [(x0 + t * np.cos(angle + 0.002 * t), y0 + t * np.sin(angle + 0.002 * t))
                      for t in np.linspace(-width / 2, width / 2, 20)]
            draw.line(points, fill=(40, 30, 25), width=int(rng.integers(1, 4)))

    rows, cols = np.nonzero(alpha >= 0.5)
    box = (2 * int(rows.min()), 2 * int(rows.max()) + 2, 2 * int(cols.min()), 2 * int(cols.max()) + 2)
    return picture, box


def write_ham_folder(root: Path, seed: int = 0, lesions_per_class: dict[str, int] | None = None) -> Path:
    """A HAM10000-shaped folder under ``root`` (see the module docstring); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = lesions_per_class or LESIONS_PER_CLASS
    lesions = [(code, i) for code, n in counts.items() for i in range(n)]
    images = []  # (lesion index, dx)
    for index, (code, i) in enumerate(lesions):
        images.append((index, code))
        if i % SECOND_IMAGE_EVERY == SECOND_IMAGE_EVERY - 1:
            images.append((index, code))
    order = rng.permutation(len(images))
    images = [images[i] for i in order]
    first_nv = next(i for i, (_, code) in enumerate(images) if code == "nv")
    images.insert(0, images.pop(first_nv))

    lesion_numbers = rng.choice(np.arange(1, 8000), size=len(lesions), replace=False)
    big, small = root / "images_600x450", root / "images_200x150"
    big.mkdir(parents=True, exist_ok=True)
    small.mkdir(exist_ok=True)
    rows, boxes = [], []
    for n, (lesion, code) in enumerate(images):
        image_id = f"ISIC_{FIRST_ID + n:07d}"
        picture, (top, bottom, left, right) = lesion_image(seed * 100_000 + n, code)
        picture.save(big / f"{image_id}.jpg", quality=90)
        picture.resize((200, 150), Image.Resampling.LANCZOS).save(small / f"{image_id}.jpg", quality=90)
        boxes.append({"image_id": image_id, "top": top // 3, "bottom": -(-bottom // 3),
                      "left": left // 3, "right": -(-right // 3)})
        source = SOURCES[lesion % len(SOURCES)]
        rows.append({"lesion_id": f"HAM_{lesion_numbers[lesion]:07d}", "image_id": image_id, "dx": code,
                     "dx_type": "follow_up" if code == "nv" and lesion % 2 else "histo",
                     "age": float(5 * (lesion % 17) + 5), "sex": ("male", "female")[lesion % 2],
                     "localization": ("back", "lower extremity", "trunk", "face", "scalp")[lesion % 5],
                     "dataset": source})
    metadata = pd.DataFrame(rows).sort_values(["lesion_id", "image_id"]).reset_index(drop=True)
    metadata.to_csv(root / "HAM10000_metadata.csv", index=False)
    pd.DataFrame(boxes).to_csv(root / "lesion_bboxes_200x150.csv", index=False)
    return root


def noise_images(n: int = 30, size: int = 96, seed: int = 1, cells: tuple[int, ...] = (1, 2, 4, 8, 16)) -> np.ndarray:
    """(n, size, size, 3) float32 in [-1, 1] (the network's input scale): uniform noise in square cells of
    1 to 16 pixels, the cell size cycling over ``cells``."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        cell = cells[i % len(cells)]
        coarse = rng.uniform(-1.0, 1.0, (size // cell + 1, size // cell + 1, 3)).astype(np.float32)
        images.append(np.kron(coarse, np.ones((cell, cell, 1), np.float32))[:size, :size])
    return np.stack(images)


def calibrate_batch_norm(model, images: np.ndarray | None = None):
    """Set every BatchNormalization layer's moving mean and variance to the statistics of its input for
    ``images`` (default: ``noise_images`` at the model's input size), as a data-dependent initialisation:
    one forward pass in training mode with momentum 0. Trainable flags and momenta are restored. Returns
    ``model``."""
    import keras

    if images is None:
        images = noise_images(size=int(model.inputs[0].shape[1]))
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable, layer.momentum = True, 0.0
    model(images, training=True)
    for layer, (trainable, momentum) in zip(layers, saved):
        layer.trainable, layer.momentum = trainable, momentum
    return model


def random_classifier(input_size: int, seed: int, **options):
    """``skin_model.model.build_classifier`` on a randomly initialised backbone (seeded), its batch norm
    calibrated on noise (see the module docstring)."""
    import keras

    from skin_model.model import build_classifier

    keras.utils.set_random_seed(seed)
    return calibrate_batch_norm(build_classifier(input_size, None, **options))


def write_random_backbone_weights(path: Path, seed: int = 0, input_size: int = 96) -> Path:
    """A ``.weights.h5`` file for ``MobileNetV2(include_top=False)`` with random, noise-calibrated weights:
    what train.py's ``--backbone-weights`` takes in place of the ImageNet file."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), include_top=False,
                                              weights=None)
    calibrate_batch_norm(backbone)
    backbone.save_weights(str(path))
    return Path(path)


#: The ISIC-shaped folder: ids after HAM's, square photos, three diagnoses in isic2017 and a few in isic_archive.
ISIC_FIRST_ID = 100_000
ISIC_COUNTS = {"isic2017": {"nv": 12, "mel": 10, "bkl": 8}, "isic_archive": {"mel": 8, "nv": 3, "df": 2, "akiec": 1}}


def write_isic_folder(root: Path, seed: int = 1, counts: dict[str, dict[str, int]] | None = None) -> Path:
    """An ISIC-Archive-shaped folder under ``root`` like ../shared/data/isic_archive: ``metadata.csv`` with
    HAM10000's columns (lesion_id = image_id), square images in ``images/``; returns ``root``."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows, n = [], 0
    for source, per_class in (counts or ISIC_COUNTS).items():
        for code, count in per_class.items():
            for _ in range(count):
                image_id = f"ISIC_{ISIC_FIRST_ID + n:07d}"
                picture, _ = lesion_image(seed * 100_000 + n, code)
                picture.resize((256, 256), Image.Resampling.LANCZOS).save(root / "images" / f"{image_id}.jpg",
                                                                           quality=90)
                rows.append({"lesion_id": image_id, "image_id": image_id, "dx": code, "dx_type": "synthetic",
                             "age": "", "sex": "", "localization": "", "dataset": source})
                n += 1
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root
