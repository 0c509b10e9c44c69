"""One preprocessing path for training and serving.

``load_image`` decodes bytes or a file with Pillow, applies the EXIF orientation and converts any mode to
8-bit RGB, raising :class:`InvalidImageError` with a plain-language message for anything that is not a
usable still image. ``to_model_array`` takes the centre square and resizes it to the model's input size;
``scale_pixels`` applies MobileNetV2's scaling to [-1, 1].
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest upload accepted, in bytes (the app's upload limit is set to match).
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Largest decoded image, in pixels (a 50-megapixel photo); larger files are treated as decompression bombs.
MAX_PIXELS = 50_000_000
#: Smallest side accepted, in pixels.
MIN_SIDE = 32
#: Container formats accepted, as Pillow names them (MPO is the JPEG variant many phones write).
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})
#: How images are described to users.
#: File name endings of the supported formats (uploads, evaluation folders).
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SUPPORTED_DESCRIPTION = "JPEG, PNG, WebP, BMP or TIFF"

ImageSource = Union[bytes, bytearray, memoryview, str, Path]


class InvalidImageError(ValueError):
    """The input cannot be used as a lesion photo; the message says why in plain language."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        self.reason = message
        self.filename = filename
        super().__init__(f"{filename}: {message}" if filename else message)


def _read_bytes(source: ImageSource, name: str | None) -> bytes:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidImageError("The file does not exist.", name or str(path))
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidImageError(_too_big_message(path.stat().st_size), name or path.name)
        return path.read_bytes()
    return bytes(source)


def _too_big_message(n_bytes: int) -> str:
    return f"The file is {n_bytes / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES / 2**20:.0f} MB."


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Decode an image file (bytes or path) into an upright 8-bit RGB Pillow image.

    Raises InvalidImageError naming the problem: empty, too large, not an image, unsupported format,
    truncated, several frames, decompression bomb, or too small.
    """
    if isinstance(source, (str, Path)) and name is None:
        name = Path(source).name
    data = _read_bytes(source, name)
    if not data:
        raise InvalidImageError("The file is empty (0 bytes).", name)
    if len(data) > MAX_FILE_BYTES:
        raise InvalidImageError(_too_big_message(len(data)), name)
    with warnings.catch_warnings():
        # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that: make it an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"This file is not a recognised image. Please upload a {SUPPORTED_DESCRIPTION} photo.", name
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImageError(_bomb_message(), name) from None
        except (OSError, SyntaxError):  # e.g. a JPEG cut short inside its header
            raise InvalidImageError(_truncated_message(), name) from None
        _check_container(image, name)
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImageError(_bomb_message(), name) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImageError(_truncated_message(), name) from exc
    image = ImageOps.exif_transpose(image)
    rgb = to_rgb(image)
    if min(rgb.size) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is only {rgb.width}x{rgb.height} pixels; at least {MIN_SIDE} pixels on each side "
            "are needed to see the lesion.",
            name,
        )
    return rgb


def _truncated_message() -> str:
    return ("The image file is truncated or corrupt and cannot be read completely. "
            "Please export or copy the photo again.")


def _bomb_message() -> str:
    return (
        f"The image is too large to process safely (more than {MAX_PIXELS / 1e6:.0f} megapixels once "
        "decoded). Please upload a smaller photo."
    )


def _check_container(image: Image.Image, name: str | None) -> None:
    """Reject unsupported formats, multi-frame files and oversized images before decoding pixels."""
    if image.format not in SUPPORTED_FORMATS:
        raise InvalidImageError(
            f"{image.format or 'This'} images are not supported. Please upload a {SUPPORTED_DESCRIPTION} photo.",
            name,
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise InvalidImageError(
            f"The file contains {frames} frames (an animation or multi-page document). "
            "Please upload a single still photo of the lesion.",
            name,
        )
    if image.width * image.height > MAX_PIXELS:
        raise InvalidImageError(_bomb_message(), name)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: 16-bit and float greyscale are rescaled, transparency
    is composited onto white, CMYK / palette / greyscale are converted."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def to_model_array(image: Image.Image, size: int) -> np.ndarray:
    """Centre square crop resized to ``size`` x ``size``: a uint8 (size, size, 3) array."""
    square = ImageOps.fit(image, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    return np.asarray(square, dtype=np.uint8)


def scale_pixels(pixels):  # np.ndarray | tf.Tensor -> same
    """MobileNetV2's input scaling: [0, 255] to [-1, 1]. Works on NumPy arrays and tensors."""
    return pixels / 127.5 - 1.0


def to_model_input(images: list[Image.Image] | Image.Image, size: int) -> np.ndarray:
    """Batch of RGB images to the float32 (N, size, size, 3) array the model takes."""
    if isinstance(images, Image.Image):
        images = [images]
    batch = np.stack([to_model_array(im, size) for im in images]).astype(np.float32)
    return scale_pixels(batch).astype(np.float32)
