from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, sample_bytes
from wastesort.errors import (
    CorruptImageError,
    EmptyImageError,
    TooManyPixelsError,
    UnsupportedFormatError,
)
from wastesort.manifest import InputSpec
from wastesort.preprocess import load_image, preprocess

SPEC = InputSpec(height=48, width=64)


def halves(size=(60, 40)) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1]))
    return image


def test_jpeg_to_uint8_tensor_of_the_spec_size():
    arr = preprocess(sample_bytes("glass"), SPEC)
    assert arr.shape == (48, 64, 3)
    assert arr.dtype == np.uint8


def test_same_bytes_same_tensor():
    data = sample_bytes("metal")
    assert np.array_equal(preprocess(data, SPEC), preprocess(data, SPEC))


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(halves(), "JPEG", exif=exif.tobytes(), quality=95)
    image = load_image(data)
    assert image.size == (40, 60)  # width and height swapped
    top, bottom = np.asarray(image)[2, 20], np.asarray(image)[-3, 20]
    assert top[0] > 200 > top[2]  # red moved to the top
    assert bottom[2] > 200 > bottom[0]


def test_cmyk_jpeg_becomes_rgb():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    image = load_image(data)
    assert image.mode == "RGB"
    r, g, b = np.asarray(image)[16, 16]
    assert r > 200 and g < 60 and b < 60  # CMYK (0,255,255,0) is red


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_one_pixel_images_in_every_format(fmt):
    arr = preprocess(encode(Image.new("RGB", (1, 1), (10, 200, 30)), fmt), SPEC)
    assert arr.shape == (48, 64, 3)


def test_16_bit_png_is_scaled_not_clipped():
    grey = Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))
    assert grey.mode.startswith("I;16")
    image = load_image(encode(grey, "PNG"))
    assert image.mode == "RGB"
    assert tuple(np.asarray(image)[0, 0]) == (156, 156, 156)  # 40000 >> 8


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    image.putpixel((0, 0), (255, 0, 0, 255))
    arr = np.asarray(load_image(encode(image, "PNG")))
    assert tuple(arr[3, 3]) == (255, 255, 255)
    assert tuple(arr[0, 0]) == (255, 0, 0)


def test_palette_with_transparency_and_greyscale():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.info["transparency"] = 0
    assert tuple(np.asarray(load_image(encode(palette, "PNG", transparency=0)))[0, 0]) == (
        255,
        255,
        255,
    )
    grey = load_image(encode(Image.new("L", (4, 4), 77), "PNG"))
    assert tuple(np.asarray(grey)[0, 0]) == (77, 77, 77)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    r, _, b = np.asarray(load_image(data))[4, 4]
    assert r > 200 > b


def test_zero_bytes():
    with pytest.raises(EmptyImageError) as info:
        preprocess(b"", SPEC)
    assert info.value.code == "empty_image"


@pytest.mark.parametrize(
    "data",
    [b"not an image at all", b"%PDF-1.4\n%...", encode(Image.new("RGB", (4, 4)), "TIFF")],
)
def test_unsupported_formats(data):
    with pytest.raises(UnsupportedFormatError) as info:
        preprocess(data, SPEC)
    assert info.value.code == "unsupported_format"


def test_truncated_jpeg():
    data = sample_bytes("paper")
    with pytest.raises(CorruptImageError) as info:
        preprocess(data[: len(data) // 2], SPEC)
    assert info.value.code == "corrupt_image"


def test_corrupt_png_body():
    data = bytearray(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"))
    data[60:80] = b"\x00" * 20  # inside IDAT
    with pytest.raises(CorruptImageError):
        preprocess(bytes(data), SPEC)


def _png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG of side x side zeros, a few hundred KB, built without Pillow."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(TooManyPixelsError) as info:
        preprocess(_png_bomb(20000), SPEC)
    assert info.value.code == "too_many_pixels"
    assert str(info.value) == "the image has 400,000,000 pixels; the limit is 40,000,000"


def test_image_just_over_our_limit_names_its_size():
    data = _png_bomb(7000)  # 49 MP: under Pillow's own limit, over ours
    with pytest.raises(TooManyPixelsError, match="7000x7000 = 49,000,000 pixels"):
        preprocess(data, SPEC)


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(TooManyPixelsError):
        preprocess(data, SPEC, max_pixels=9_999)
    assert preprocess(data, SPEC, max_pixels=10_000).shape == (48, 64, 3)


def test_big_jpeg_is_decoded_at_reduced_scale():
    data = encode(Image.new("RGB", (4000, 3000), (90, 120, 150)), "JPEG", quality=80)
    image = load_image(data, draft_size=(224, 224))
    assert image.size == (500, 375)  # 1/8 scale, still above the target
    assert preprocess(data, InputSpec(height=224, width=224)).shape == (224, 224, 3)


@pytest.mark.parametrize("rule", ["squash", "center_crop", "letterbox"])
def test_resize_rules(rule):
    spec = InputSpec(height=48, width=48, resize=rule)
    arr = preprocess(encode(halves((96, 48)), "PNG"), spec)
    assert arr.shape == (48, 48, 3)
    if rule == "letterbox":  # 2:1 image in a square: white bands top and bottom
        assert tuple(arr[0, 24]) == (255, 255, 255)
        assert arr[24, 2, 0] > 200
    if rule == "center_crop":  # the middle of the image: red meets blue at the centre
        assert arr[24, 2][0] > 200 and arr[24, 45][2] > 200


# --- what the API promises for odd and big images (issue: hardening) --------------------------


def test_a_png_with_a_bad_header_checksum_is_corrupt_not_an_unknown_format():
    data = bytearray(encode(Image.new("RGB", (10, 10))))
    data[29] ^= 0xFF  # inside IHDR's CRC
    with pytest.raises(CorruptImageError, match="the PNG header is corrupt"):
        preprocess(bytes(data), SPEC)


def test_a_jpeg_header_claiming_pixels_it_does_not_hold_is_refused():
    """libjpeg pads missing data with grey; a size the bytes cannot hold is truncation."""
    data = bytearray(encode(Image.new("RGB", (64, 48), (200, 10, 10)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 6000, 6000)
    with pytest.raises(CorruptImageError, match="truncated"):
        preprocess(bytes(data), SPEC)
    with pytest.raises(CorruptImageError, match="truncated"):  # cut short without the claim
        preprocess(sample_bytes("glass")[:5000], SPEC)


def test_webp_has_a_lower_pixel_limit_from_its_decoders_memory():
    data = encode(Image.new("RGB", (4100, 4000)), "WEBP")
    with pytest.raises(TooManyPixelsError, match="the limit for WEBP is 16,000,000"):
        preprocess(data, SPEC)
    assert preprocess(encode(Image.new("RGB", (4000, 4000)), "WEBP"), SPEC).shape == (48, 64, 3)


@pytest.mark.parametrize("mode", ["RGBA", "P", "I;16", "RGB"])
@pytest.mark.parametrize("size", [(2500, 1700), (2600, 1950)])
def test_big_images_shrunk_in_strips_give_the_same_input_as_the_full_size_path(
    mode: str, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
):
    """Over BIG_PIXELS a non-JPEG image is converted and box-reduced strip by strip (one
    full-size copy instead of five); the model's input is exactly what it was."""
    import wastesort.preprocess as pp

    photo = Image.open(io.BytesIO(sample_bytes("glass"))).convert("RGB").resize(size)
    if mode == "RGBA":
        rgba = np.asarray(photo.convert("RGBA")).copy()
        rgba[:, : size[0] // 3, 3] = 128  # a third half-transparent, over white
        photo = Image.fromarray(rgba)
    elif mode == "P":
        photo = photo.quantize(64)
        photo.info["transparency"] = 0
    elif mode == "I;16":
        grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257
        photo = Image.fromarray(grey)  # uint16: mode I;16
    data = encode(photo)
    assert size[0] * size[1] > pp.BIG_PIXELS
    strips = preprocess(data, SPEC)
    monkeypatch.setattr(pp, "BIG_PIXELS", 10**9)
    assert np.array_equal(strips, preprocess(data, SPEC))
