"""Bad and unusual uploads: every file is generated in memory with Pillow and goes through load_image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from skin_model.data.imaging import MAX_FILE_BYTES, MAX_PIXELS, MIN_SIDE, InvalidImageError, load_image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def two_tone(size=(80, 40)) -> Image.Image:
    """Left half red, right half blue: any rotation or flip is visible in the pixels."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = (255, 0, 0)
    array[:, size[0] // 2:] = (0, 0, 255)
    return Image.fromarray(array)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def assert_rejected(data: bytes, *words: str, name: str = "upload.jpg") -> InvalidImageError:
    with pytest.raises(InvalidImageError) as info:
        load_image(data, name=name)
    message = str(info.value).lower()
    assert name.lower() in message, "the message names the file"
    for word in words:
        assert word.lower() in message, f"{word!r} not in {message!r}"
    return info.value


# ---------------------------------------------------------------------------------------------- rejected
def test_non_image_is_rejected_with_a_plain_message():
    assert_rejected(b"%PDF-1.4 this is a referral letter, not a photo" * 20, "not a recognised image", "JPEG")


def test_zero_byte_file_is_rejected():
    assert_rejected(b"", "empty", "0 bytes")


def test_truncated_jpeg_is_rejected():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)),
                  "JPEG", quality=90)
    assert_rejected(data[: len(data) // 2], "truncated")


def test_truncated_png_is_rejected():
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 120, 3), dtype=np.uint8)), "PNG")
    assert_rejected(data[: len(data) // 3], "truncated", name="lesion.png")


def test_decompression_bomb_is_rejected_before_decoding():
    """A valid PNG header declaring 100,000 x 100,000 pixels (10 gigapixels) in a file of a few bytes."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""))
    assert len(data) < 1000
    assert_rejected(data, "too large", "megapixels", name="bomb.png")


def test_image_just_over_the_pixel_limit_is_rejected():
    side = int(MAX_PIXELS ** 0.5) + 10  # above MAX_PIXELS, below Pillow's own bomb limit
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")
    assert_rejected(data, "too large", name="big.png")


def test_file_over_the_upload_limit_is_rejected():
    assert_rejected(b"\xff\xd8" + b"\x00" * (MAX_FILE_BYTES + 1), "MB", "limit")


def test_tiny_image_is_rejected():
    data = encode(Image.new("RGB", (MIN_SIDE - 1, 200), "pink"), "PNG")
    err = assert_rejected(data, f"{MIN_SIDE - 1}x200", "pixels", name="thumb.png")
    assert "at least" in err.reason


def test_image_of_exactly_the_minimum_size_is_accepted():
    assert load_image(encode(Image.new("RGB", (MIN_SIDE, MIN_SIDE), "pink"), "PNG")).size == (MIN_SIDE, MIN_SIDE)


def test_animated_gif_is_rejected():
    frames = [Image.new("P", (64, 64), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert_rejected(buffer.getvalue(), name="animation.gif")  # GIF is not an accepted format at all


def test_multi_frame_tiff_is_rejected():
    pages = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    assert_rejected(buffer.getvalue(), "3 frames", "single still photo", name="scan.tiff")


def test_unsupported_still_format_is_rejected():
    assert_rejected(encode(Image.new("RGB", (64, 64), "red"), "GIF"), "GIF", "not supported", name="x.gif")


# ---------------------------------------------------------------------------------------------- decoded right
@pytest.mark.parametrize("orientation, expected", [
    (3, "blue-left"),  # rotated 180 degrees: blue ends up on the left, size unchanged
    (6, "portrait-red-top"),  # rotate 90 CW to display: width and height swap, the red (left) half goes on top
    (8, "portrait-red-bottom"),  # rotate 90 CCW to display
])
def test_exif_rotation_is_applied(orientation, expected):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = load_image(encode(two_tone((80, 40)), "JPEG", quality=95, exif=exif.tobytes()), name="phone.jpg")
    pixels = np.asarray(image).astype(int)
    if expected == "blue-left":
        assert image.size == (80, 40)
        assert pixels[20, 5, 2] > 200 and pixels[20, 5, 0] < 60
    else:
        assert image.size == (40, 80)
        top, bottom = pixels[5, 20], pixels[75, 20]
        red, blue = (top, bottom) if expected == "portrait-red-top" else (bottom, top)
        assert red[0] > 200 and red[2] < 60
        assert blue[2] > 200 and blue[0] < 60


def test_16_bit_png_grey_level_survives():
    grey16 = np.full((48, 48), 40000, dtype=np.uint16)
    source = Image.fromarray(grey16)
    assert source.mode.startswith("I;16")
    image = load_image(encode(source, "PNG"), name="scanner16.png")
    assert image.mode == "RGB"
    expected = round(40000 / 65535 * 255)  # 156
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1


def test_16_bit_png_gradient_keeps_its_order():
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (40, 1))
    pixels = np.asarray(load_image(encode(Image.fromarray(ramp), "PNG")))[:, :, 0].astype(int)
    assert pixels[0, 0] <= 1 and pixels[0, -1] >= 254
    assert np.all(np.diff(pixels[0]) >= 0)


def test_cmyk_jpeg_colour_is_right():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # pure magenta + yellow ink = red
    image = load_image(encode(cmyk, "JPEG", quality=95), name="print.jpg")
    r, g, b = np.asarray(image).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60, (r, g, b)


def test_rgba_is_composited_on_white():
    array = np.zeros((40, 40, 4), dtype=np.uint8)
    array[:, :20] = (200, 0, 0, 255)  # opaque red on the left
    array[:, 20:] = (0, 0, 0, 0)  # fully transparent black on the right
    image = load_image(encode(Image.fromarray(array, "RGBA"), "PNG"), name="cutout.png")
    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert tuple(pixels[10, 5]) == (200, 0, 0)
    assert tuple(pixels[10, 35]) == (255, 255, 255), "transparent areas become white, not black"


def test_half_transparent_rgba_is_blended():
    image = load_image(encode(Image.new("RGBA", (40, 40), (0, 0, 0, 128)), "PNG"))
    assert abs(int(np.asarray(image)[0, 0, 0]) - 127) <= 2


def test_greyscale_becomes_three_equal_channels():
    image = load_image(encode(Image.new("L", (50, 50), 90), "PNG"), name="grey.png")
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (50, 50, 3)
    assert np.all(pixels == 90)


def test_palette_png_with_transparency_is_composited():
    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([0, 128, 0] + [0, 0, 0] * 255)
    image = load_image(encode(palette, "PNG", transparency=0))
    assert tuple(np.asarray(image)[0, 0]) == (255, 255, 255)


def test_png_saved_with_a_jpg_name_decodes_by_content():
    image = load_image(encode(two_tone(), "PNG"), name="really_a_png.jpg")
    assert image.size == (80, 40)
    assert tuple(np.asarray(image)[0, 0]) == (255, 0, 0)  # lossless: exact colour


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_every_supported_format_decodes(fmt):
    image = load_image(encode(two_tone(), fmt), name=f"x.{fmt.lower()}")
    assert image.mode == "RGB" and image.size == (80, 40)
    left, right = np.asarray(image)[20, 5].astype(int), np.asarray(image)[20, 75].astype(int)
    assert left[0] > 200 and right[2] > 200


def test_a_good_image_still_loads_after_bad_ones():
    for bad in (b"", b"garbage", encode(Image.new("RGB", (8, 8)), "PNG")):
        with pytest.raises(InvalidImageError):
            load_image(bad)
    assert load_image(encode(two_tone(), "JPEG")).size == (80, 40)


@pytest.mark.real_data("HAM10000", reason="checks that a real HAM10000 original decodes as 600x450 RGB")
def test_real_ham_image_loads(real_image_path):
    image = load_image(real_image_path)
    assert image.size == (600, 450) and image.mode == "RGB"


# ---------------------------------------------------------------------------------------------- hostile files
def png_with_chunk(kind: bytes, body: bytes, size: int = 64) -> bytes:
    """A valid grey PNG with one extra ancillary chunk before its pixels."""
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes([128]) * size for _ in range(size)))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(kind, body)
            + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("kind, prefix", [(b"zTXt", b"Comment\x00\x00"), (b"iCCP", b"icc\x00\x00")])
def test_metadata_chunk_inflating_past_the_limit_is_unreadable_not_a_crash(kind, prefix):
    """A chunk of ~2 KB on disk that inflates to 8 MB, past Pillow's 1 MB text/profile limit (ValueError)."""
    data = png_with_chunk(kind, prefix + zlib.compress(b"\x00" * 8_000_000, 9))
    assert len(data) < 20_000
    assert_rejected(data, "not a readable image", name="metadata-bomb.png")


def test_any_decoder_error_becomes_an_invalid_image_error(monkeypatch):
    def broken_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", broken_load)
    assert_rejected(encode(two_tone(), "PNG"), "not a readable image", name="odd.png")


def test_float_tiff_in_0_1_is_scaled_by_its_range():
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))
    image = load_image(encode(Image.fromarray(ramp, "F"), "TIFF"), name="float.tif")
    pixels = np.asarray(image)[:, :, 0].astype(int)
    assert pixels[0, 0] == 0 and pixels[0, -1] == 255, "1.0 is white, not 1/255"
    assert abs(pixels[0, 32] - round(32 / 63 * 255)) <= 1


def test_float_tiff_in_0_255_keeps_its_grey_levels():
    image = load_image(encode(Image.fromarray(np.full((40, 40), 90.0, np.float32), "F"), "TIFF"))
    assert np.all(np.asarray(image) == 90)


def test_large_png_is_reduced_right_after_decoding():
    from skin_model.data.imaging import WORKING_SIDE, read_image, to_model_array

    rng = np.random.default_rng(5)
    small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    full = Image.fromarray(small).resize((4000, 3000), Image.Resampling.BICUBIC)
    decoded = read_image(encode(full, "PNG", compress_level=1), name="big.png")
    assert decoded.original_size == (4000, 3000)
    assert WORKING_SIDE <= min(decoded.image.size) < 2 * WORKING_SIDE
    assert decoded.image.size == (2000, 1500)
    # The model's view of the reduced image is the one of the full image, up to resampling round-off.
    difference = np.abs(to_model_array(decoded.image, 224).astype(int) - to_model_array(full, 224).astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 8


def test_large_jpeg_is_decoded_at_a_reduced_scale():
    from skin_model.data.imaging import WORKING_SIDE, read_image

    full = two_tone((4800, 3600))
    decoded = read_image(encode(full, "JPEG", quality=90), name="camera.jpg")
    assert decoded.original_size == (4800, 3600)
    assert WORKING_SIDE <= min(decoded.image.size) < 2 * WORKING_SIDE, decoded.image.size
    pixels = np.asarray(decoded.image).astype(int)
    assert pixels[100, 10, 0] > 200 and pixels[100, -10, 2] > 200


def test_orientation_is_kept_when_a_large_image_is_reduced():
    from skin_model.data.imaging import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = read_image(encode(two_tone((4000, 2400)), "JPEG", quality=90, exif=exif.tobytes()))
    assert decoded.original_size == (2400, 4000)
    width, height = decoded.image.size
    assert height > width
    pixels = np.asarray(decoded.image).astype(int)
    assert pixels[10, width // 2, 0] > 200 and pixels[-10, width // 2, 2] > 200, "red half on top"


def test_long_strip_keeps_enough_pixels_for_the_model():
    from skin_model.data.imaging import MIN_WORKING_SIDE, read_image

    decoded = read_image(encode(Image.new("RGB", (20000, 1000), "tan"), "PNG"), name="strip.png")
    assert min(decoded.image.size) >= MIN_WORKING_SIDE
    assert max(decoded.image.size) < 20000
