"""Safe loading of hostile and unusual image files."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from vision.image import ImageError, load_image


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _photo(w: int = 64, h: int = 48) -> Image.Image:
    # A smooth gradient: JPEG-friendly, and its halves are distinguishable.
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    arr = np.concatenate(
        [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 128, np.float32)], axis=2
    )
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def test_plain_jpeg_loads_as_rgb_with_hash_of_bytes():
    data = _encode(_photo(), "JPEG", quality=90)
    loaded = load_image(data)
    assert loaded.image.mode == "RGB"
    assert (loaded.width, loaded.height) == (64, 48) == loaded.image.size
    assert loaded.content_hash == hashlib.sha256(data).hexdigest()


def test_truncated_jpeg_is_corrupt():
    data = _encode(_photo(256, 256), "JPEG", quality=95)
    with pytest.raises(ImageError) as err:
        load_image(data[: len(data) // 2])
    assert err.value.reason == "corrupt"
    assert str(err.value).startswith("corrupt image:")


def test_png_with_alpha_is_composited_on_white():
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[:, :10] = (200, 0, 0, 255)  # opaque red left half
    arr[:, 10:] = (0, 0, 200, 0)  # fully transparent right half
    loaded = load_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"))
    px = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB"
    assert tuple(px[5, 2]) == (200, 0, 0)
    assert tuple(px[5, 15]) == (255, 255, 255)


def test_palette_png_with_transparency_is_composited_on_white():
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0] + [0, 255, 0] * 255)
    im.paste(1, (0, 0, 4, 8))
    loaded = load_image(_encode(im, "PNG", transparency=0))
    px = np.asarray(loaded.image)
    assert tuple(px[0, 0]) == (0, 255, 0)
    assert tuple(px[0, 7]) == (255, 255, 255)


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    loaded = load_image(_encode(cmyk, "JPEG", quality=95))
    r, g, b = np.asarray(loaded.image)[8, 8].astype(int)
    assert loaded.image.mode == "RGB"
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue, as stored
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left edge becomes the top
    loaded = load_image(_encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes()))
    assert loaded.image.size == (20, 40)
    px = np.asarray(loaded.image).astype(int)
    assert px[5, 10, 0] > 200 and px[5, 10, 2] < 60  # top is red
    assert px[35, 10, 2] > 200 and px[35, 10, 0] < 60  # bottom is blue


def test_one_pixel_image():
    loaded = load_image(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert (loaded.width, loaded.height) == (1, 1)
    assert tuple(np.asarray(loaded.image)[0, 0]) == (1, 2, 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_over_the_pixel_limit_is_rejected_before_decoding():
    # 12,000 x 12,000 one-bit pixels compress to a few KB; decoded as RGB they would be 432 MB.
    data = _encode(Image.new("1", (12_000, 12_000), 0), "PNG")
    assert len(data) < 1_000_000
    with pytest.raises(ImageError) as err:
        load_image(data)
    assert err.value.reason == "too_many_pixels"
    with pytest.raises(ImageError) as err:
        load_image(_encode(_photo(20, 20), "PNG"), max_pixels=399)
    assert err.value.reason == "too_many_pixels"
    assert load_image(_encode(_photo(20, 20), "PNG"), max_pixels=400).width == 20


def test_over_the_byte_limit_is_rejected():
    data = _encode(_photo(), "PNG")
    with pytest.raises(ImageError) as err:
        load_image(data, max_bytes=len(data) - 1)
    assert err.value.reason == "too_large"
    assert load_image(data, max_bytes=len(data)).width == 64


def test_text_file_renamed_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("this is a shopping list, not a photo\n")
    with pytest.raises(ImageError) as err:
        load_image(path.read_bytes())
    assert err.value.reason == "not_an_image"


def test_empty_file():
    with pytest.raises(ImageError) as err:
        load_image(b"")
    assert err.value.reason == "empty"


def test_animated_gif_takes_the_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    r, g, b = np.asarray(load_image(buf.getvalue()).image)[4, 4].astype(int)
    assert r > 200 and b < 60


def test_sixteen_bit_greyscale_is_rescaled_not_clipped():
    ramp = np.linspace(0, 65535, 32 * 8, dtype=np.uint16).reshape(8, 32)
    loaded = load_image(_encode(Image.fromarray(ramp), "PNG"))
    px = np.asarray(loaded.image)[:, :, 0].astype(int)
    assert px[0, 0] < 5 and px[-1, -1] > 250
    assert 100 < px[4, 16] < 160  # mid-grey stays mid-grey (clipping would make it 255)


def test_garbage_after_a_valid_header_is_corrupt():
    data = bytearray(_encode(_photo(128, 128), "PNG"))
    data[60:] = bytes(len(data) - 60)  # zero out the compressed stream
    with pytest.raises(ImageError) as err:
        load_image(bytes(data))
    assert err.value.reason == "corrupt"


def test_importing_vision_does_not_import_the_model_libraries():
    import subprocess
    import sys

    code = (
        "import sys, vision; heavy = [m for m in ('torch', 'onnxruntime', 'open_clip', 'ultralytics') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
