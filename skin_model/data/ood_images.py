"""Images that are not dermatoscopic lesion photos, for measuring the out-of-distribution gate.

Everything is generated in memory from images that installed packages ship (``skimage.data``) or drawn
with Pillow and NumPy (screenshots, documents, blank frames, noise, gradients, plain skin-tone patches
and a naked-eye "close-up" imitation). Nothing is downloaded and no image file is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

#: skimage.data images that ship inside the scikit-image wheel (no download), by category.
SKIMAGE_IMAGES: dict[str, str] = {
    "astronaut": "photo", "coffee": "photo", "chelsea": "photo", "rocket": "photo", "camera": "photo",
    "coins": "photo", "moon": "photo", "clock": "photo", "hubble_deep_field": "photo",
    "grass": "texture", "gravel": "texture", "brick": "texture",
    "retina": "medical_other", "immunohistochemistry": "medical_other",
    "text": "document", "page": "document", "logo": "graphic", "colorwheel": "graphic",
    "checkerboard": "graphic",
}
#: Light to dark skin tones (RGB) for flat patches and naked-eye close-up imitations.
LOREM = "lorem ipsum dolor sit amet consectetur".split()
SKIN_TONES = ((241, 194, 167), (224, 172, 138), (198, 134, 103), (161, 102, 72), (120, 75, 52), (84, 52, 38))


@dataclass(frozen=True)
class NamedImage:
    """One non-dermoscopic test image: unique name, category and the RGB image."""

    name: str
    category: str
    image: Image.Image


def _to_rgb(array: np.ndarray) -> Image.Image:
    """Any skimage array (bool, grey, RGB, RGBA) to an 8-bit RGB Pillow image (transparency on white)."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def skimage_images() -> list[NamedImage]:
    """The shipped ``skimage.data`` photos, textures, documents and graphics (missing ones are skipped)."""
    import skimage.data

    images = []
    for name, category in SKIMAGE_IMAGES.items():
        try:
            array = getattr(skimage.data, name)()
        except Exception as exc:  # an image that needs a download in this scikit-image version
            log.warning("skimage.data.%s unavailable (%s); skipped", name, exc)
            continue
        images.append(NamedImage(f"skimage_{name}", category, _to_rgb(array)))
    return images


def screenshot(rng: np.random.Generator, size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A synthetic application window: title bar, sidebar, lines of text and a few buttons."""
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((0, 0, width, 32), fill=tuple(int(v) for v in rng.integers(20, 120, 3)))
    draw.text((12, 9), "Patient record - Dermatology clinic", fill=(255, 255, 255))
    draw.rectangle((0, 32, 160, height), fill=(236, 238, 242))
    for row in range(12):
        draw.text((14, 48 + row * 24), f"Menu item {row + 1}", fill=(40, 40, 40))
    for line in range(int(rng.integers(10, 20))):
        words = " ".join(" ".join(LOREM[: int(rng.integers(2, 6))]) for _ in range(3))
        draw.text((180, 50 + line * 22), words, fill=(20, 20, 20))
    for button in range(3):
        left = 180 + button * 130
        draw.rounded_rectangle((left, height - 60, left + 110, height - 28), 6, fill=(30, 110, 220))
        draw.text((left + 18, height - 50), ("Save", "Cancel", "Print")[button], fill=(255, 255, 255))
    return image


def document(rng: np.random.Generator, size: tuple[int, int] = (600, 800)) -> Image.Image:
    """A synthetic page of text with a heading and a table."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((40, 30), "REFERRAL LETTER", fill=(0, 0, 0))
    for line in range(28):
        draw.text((40, 70 + line * 18), "text " * int(rng.integers(6, 14)), fill=(30, 30, 30))
    for row in range(5):
        for col in range(4):
            draw.rectangle((40 + col * 120, 600 + row * 30, 160 + col * 120, 630 + row * 30), outline=(0, 0, 0))
    return image


def blank(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> Image.Image:
    return Image.new("RGB", size, colour)


def noise(rng: np.random.Generator, kind: str, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """Uniform or Gaussian RGB noise (``kind`` = "uniform" | "gaussian")."""
    shape = (size[1], size[0], 3)
    if kind == "uniform":
        pixels = rng.integers(0, 256, shape)
    else:
        pixels = np.clip(rng.normal(128, 50, shape), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def gradient(start: tuple[int, int, int], end: tuple[int, int, int], horizontal: bool,
             size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A linear colour gradient from ``start`` to ``end``."""
    steps = size[0] if horizontal else size[1]
    ramp = np.linspace(0.0, 1.0, steps)[:, None] * (np.array(end) - np.array(start)) + np.array(start)
    if horizontal:
        pixels = np.broadcast_to(ramp[None, :, :], (size[1], size[0], 3))
    else:
        pixels = np.broadcast_to(ramp[:, None, :], (size[1], size[0], 3))
    return Image.fromarray(np.ascontiguousarray(pixels).astype(np.uint8))


def skin_patch(rng: np.random.Generator, tone: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A flat skin-tone patch with mild pixel noise and blur (no lesion)."""
    pixels = np.clip(np.array(tone) + rng.normal(0, 6, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2))


def naked_eye_closeup(rng: np.random.Generator, tone: tuple[int, int, int],
                      size: tuple[int, int] = (640, 480)) -> Image.Image:
    """An imitation of a clinical close-up without a dermatoscope: a small dark mole on wider skin with
    uneven lighting (a smooth brightness falloff) and a few hairs."""
    image = skin_patch(rng, tone, size)
    draw = ImageDraw.Draw(image)
    width, height = size
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    radius = min(size) * rng.uniform(0.03, 0.07)
    mole = tuple(int(c * 0.35) for c in tone)
    draw.ellipse((cx - radius, cy - radius * 0.8, cx + radius, cy + radius * 0.8), fill=mole)
    for _ in range(6):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        draw.line((x, y, x + rng.uniform(-80, 80), y + rng.uniform(20, 80)), fill=(40, 30, 25), width=1)
    yy, xx = np.mgrid[0:height, 0:width]
    light = 1.15 - 0.35 * ((xx / width - 0.2) ** 2 + (yy / height - 0.1) ** 2)
    pixels = np.clip(np.asarray(image, dtype=np.float32) * light[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1))


def synthetic_images(seed: int = 0) -> list[NamedImage]:
    """Drawn screenshots, documents, blank frames, noise, gradients, skin patches and close-up imitations."""
    rng = np.random.default_rng(seed)
    makers: list[tuple[str, str, Callable[[], Image.Image]]] = [
        *[(f"screenshot_{i}", "screenshot", lambda: screenshot(rng)) for i in range(3)],
        *[(f"document_{i}", "document", lambda: document(rng)) for i in range(2)],
        ("blank_white", "blank", lambda: blank((255, 255, 255))),
        ("blank_black", "blank", lambda: blank((0, 0, 0))),
        ("blank_grey", "blank", lambda: blank((128, 128, 128))),
        ("noise_uniform", "noise", lambda: noise(rng, "uniform")),
        ("noise_gaussian", "noise", lambda: noise(rng, "gaussian")),
        ("gradient_blue_red", "gradient", lambda: gradient((0, 0, 255), (255, 0, 0), True)),
        ("gradient_black_white", "gradient", lambda: gradient((0, 0, 0), (255, 255, 255), False)),
        ("gradient_green_yellow", "gradient", lambda: gradient((0, 128, 0), (255, 255, 0), True)),
        *[(f"skin_patch_{i}", "skin_patch", lambda t=tone: skin_patch(rng, t)) for i, tone in enumerate(SKIN_TONES)],
        *[(f"naked_eye_closeup_{i}", "naked_eye_closeup", lambda t=tone: naked_eye_closeup(rng, t))
          for i, tone in enumerate(SKIN_TONES)],
    ]
    return [NamedImage(name, category, make()) for name, category, make in makers]


def non_dermoscopic_images(seed: int = 0) -> list[NamedImage]:
    """The whole non-dermoscopic set: shipped photos and drawn images (deterministic for a given seed)."""
    return skimage_images() + synthetic_images(seed)
