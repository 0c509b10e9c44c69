"""One preprocessing path for training and serving.

``load_image`` decodes bytes or a file with Pillow, reduces it to a bounded working size right after
decoding, applies the EXIF orientation and converts any mode to 8-bit RGB, raising
:class:`InvalidImageError` with a plain-language message for anything that is not a usable still image
(any decoder error included). ``to_model_array`` takes the centre square and resizes it to the model's
input size; ``scale_pixels`` applies MobileNetV2's scaling to [-1, 1].

Memory: a 50-megapixel photo is 150 MB once decoded. JPEGs are decoded at 1/2, 1/4 or 1/8 scale by
libjpeg itself (``Image.draft``); other formats are box-reduced by an integer factor (``Image.reduce``)
before any copy is made, so that the shortest side stays between ``WORKING_SIDE`` and twice that (HAM10000
images, 600x450 at most, are never reduced). The model only sees a 224-pixel square of it. After a large
decode the C allocator is asked to give the freed pages back to the system (glibc ``malloc_trim``), so a
long-running server returns to its idle size instead of keeping the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

#: Largest upload accepted, in bytes: 25 MB, the limit Streamlit's browser uploader applies for
#: ``server.maxUploadSize = 25`` (the server allows 25 MiB; the smaller of the two is the real limit).
MAX_FILE_BYTES = 25_000_000
#: Largest decoded image, in pixels (a 50-megapixel photo); larger files are treated as decompression bombs.
MAX_PIXELS = 50_000_000
#: Smallest side accepted, in pixels.
MIN_SIDE = 32
#: Images are reduced after decoding by the largest integer factor that keeps their shortest side at
#: least this long (and their longest side at most ``MAX_WORKING_SIDE`` when that keeps the short side
#: at least ``MIN_WORKING_SIDE``).
WORKING_SIDE = 1024
MAX_WORKING_SIDE = 4096
MIN_WORKING_SIDE = 224
#: Decodes of more pixels than this are followed by ``release_freed_memory``.
TRIM_AFTER_PIXELS = 4_000_000
#: Container formats accepted, as Pillow names them (MPO is the JPEG variant many phones write).
SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF"})
#: File name endings of the supported formats (uploads, evaluation folders).
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: How images are described to users.
SUPPORTED_DESCRIPTION = "JPEG, PNG, WebP, BMP or TIFF"
#: EXIF orientation -> the transpose that makes the image upright (as ``ImageOps.exif_transpose``).
ORIENTATION_TAG = 0x0112
UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}
#: Nominal value ranges tried, smallest first, to scale high-depth pixels to 8 bits.
FLOAT_RANGES = (1.0, 255.0, 65535.0)
INTEGER_RANGES = (255.0, 65535.0)

ImageSource = Union[bytes, bytearray, memoryview, str, Path]


class InvalidImageError(ValueError):
    """The input cannot be used as a lesion photo; the message says why in plain language."""

    def __init__(self, message: str, filename: str | None = None) -> None:
        self.reason = message
        self.filename = filename
        super().__init__(f"{filename}: {message}" if filename else message)


@dataclass(frozen=True)
class DecodedImage:
    """An upload as the model uses it: upright 8-bit RGB at the working size, and its size as uploaded."""

    image: Image.Image
    original_size: tuple[int, int]  # (width, height), upright


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
    return f"The file is {n_bytes / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB."


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Decode an image file (bytes or path) into an upright 8-bit RGB Pillow image at the working size.

    Raises InvalidImageError naming the problem: empty, too large, not an image, unsupported format,
    unreadable (truncated, corrupt, any decoder error), several frames, decompression bomb, or too small.
    """
    return read_image(source, name).image


def read_image(source: ImageSource, name: str | None = None) -> DecodedImage:
    """``load_image`` and the upright size of the file as uploaded."""
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
            decoded = _decode(data, name)
            if decoded.original_size[0] * decoded.original_size[1] > TRIM_AFTER_PIXELS:
                release_freed_memory()  # the full-size pixels were freed inside _decode
            return decoded
        except InvalidImageError:
            raise
        except UnidentifiedImageError:
            raise InvalidImageError(
                f"This file is not a recognised image. Please upload a {SUPPORTED_DESCRIPTION} photo.", name
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError):
            raise InvalidImageError(_bomb_message(), name) from None
        except Exception as exc:  # any decoder error: truncated data, bad chunks, oversized metadata, ...
            log.info("Cannot decode %s: %s: %s", name, type(exc).__name__, exc)
            raise InvalidImageError(_unreadable_message(), name) from exc


def _decode(data: bytes, name: str | None) -> DecodedImage:
    """Open, check, decode at a reduced size, turn upright and convert to RGB (errors go to read_image)."""
    image = Image.open(io.BytesIO(data))
    _check_container(image, name)
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is only {width}x{height} pixels; at least {MIN_SIDE} pixels on each side "
            "are needed to see the lesion.",
            name,
        )
    orientation = _orientation(image)
    factor = reduction_factor(width, height)
    target = (width // factor, height // factor)
    if factor > 1 and image.format in ("JPEG", "MPO"):
        image.draft(None, target)  # libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below ``target``
    image.load()
    source_mode = image.mode
    image = _reduce(image, min(image.width // target[0], image.height // target[1]))
    if orientation in UPRIGHT:
        image = image.transpose(UPRIGHT[orientation])
    upright = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return DecodedImage(to_rgb(image, 65535.0 if source_mode.startswith("I;16") else None), upright)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return library if library is not None and hasattr(library, "malloc_trim") else None


def release_freed_memory() -> None:
    """Return memory freed by Python and Pillow to the operating system (glibc ``malloc_trim``; a no-op
    elsewhere). Without it, the pages of a decoded 50-megapixel image stay in the process after use."""
    library = _libc()
    if library is not None:
        library.malloc_trim(0)


def reduction_factor(width: int, height: int) -> int:
    """The integer factor an image of this size is reduced by after decoding (1 for HAM10000 images)."""
    short, long_side = sorted((width, height))
    factor = max(short // WORKING_SIDE, -(-long_side // MAX_WORKING_SIDE))
    return max(1, min(factor, short // MIN_WORKING_SIDE))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright) of an opened file; damaged EXIF counts as upright."""
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # a damaged EXIF block does not make the pixels unreadable
        return 1


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Box-average ``image`` by an integer ``factor``, in a mode where averaging is meaningful."""
    if factor <= 1:
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    return image.reduce(factor)


def _unreadable_message() -> str:
    return ("This file is not a readable image: it is truncated, corrupt or uses a feature that cannot be "
            "decoded. Please export or copy the photo again.")


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


def to_rgb(image: Image.Image, top: float | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: high-depth greyscale (16-bit, 32-bit, float) is scaled by
    ``top`` or else by the smallest nominal range holding its values (float 0-1, 0-255, 0-65535; beyond
    that or below 0, its own range); transparency is composited onto white; CMYK / palette / greyscale
    are converted."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image, dtype=np.float32), mode == "F", top)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def _to_uint8(values: np.ndarray, is_float: bool, top: float | None) -> np.ndarray:
    """High-depth grey values to uint8 (see ``to_rgb``); NaN counts as 0, infinities as the extremes."""
    finite = np.isfinite(values)
    low = float(values[finite].min()) if finite.any() else 0.0
    high = float(values[finite].max()) if finite.any() else 0.0
    values = np.nan_to_num(values, nan=0.0, posinf=high, neginf=low)
    if top is None:
        if low < 0:
            values, top = values - low, high - low
        else:
            top = next((r for r in (FLOAT_RANGES if is_float else INTEGER_RANGES) if high <= r), high)
    scaled = values * (255.0 / max(top, 1e-12)) + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


def unsquash(image: Image.Image, aspect: float | None) -> Image.Image:
    """A photo that was squashed to a square by whoever published it, stretched back to width / height
    ``aspect`` (bicubic) before the centre crop; None, or an image already at that aspect: unchanged. For
    training and evaluation data only (``dataset.SQUASHED_SOURCES``): an upload is never squashed."""
    if not aspect or abs(image.width / image.height - aspect) < 1e-3:
        return image
    return image.resize((max(1, round(image.height * aspect)), image.height), Image.Resampling.BICUBIC)


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
