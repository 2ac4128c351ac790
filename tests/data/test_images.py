from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmindex.testing import photo, make_awkward_folder, write_bomb_png
from mmindex.data.images import DecodeError, decode_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("awkward")
    make_awkward_folder(root)
    return root


def test_cmyk_becomes_rgb(folder):
    assert decode_image(folder / "cmyk.jpg", 32).image.mode == "RGB"


def test_sixteen_bit_png_is_scaled_not_clipped(folder):
    pixels = np.asarray(decode_image(folder / "sixteen.png", 32).image)
    # a 0..65535 ramp must become a 0..255 ramp, not a white image clipped at 255
    assert pixels.min() < 10 and pixels.max() > 245 and 100 < pixels.mean() < 155


def test_transparency_composited_on_white(folder):
    pixels = np.asarray(decode_image(folder / "clear.png", 32).image)
    assert (pixels == 255).all()


def test_exif_rotation_applied_and_size_reported_upright(folder):
    decoded = decode_image(folder / "rotated.jpg", 16)
    assert (decoded.width, decoded.height) == (40, 80)
    assert decoded.image.size[0] < decoded.image.size[1]


def test_animated_gif_uses_first_frame(folder):
    assert decode_image(folder / "anim.gif", 16).image.size == (30, 30)


def test_large_jpeg_decodes_at_reduced_scale(tmp_path):
    photo(1600, 1200, 7).save(tmp_path / "big.jpg")
    decoded = decode_image(tmp_path / "big.jpg", 224)
    assert (decoded.width, decoded.height) == (1600, 1200)  # the real size is recorded
    assert min(decoded.image.size) >= 224 and decoded.image.size[0] <= 400  # 1/4 scale


@pytest.mark.parametrize("name, words", [
    ("truncated.jpg", "truncated"), ("empty.png", "empty"),
    ("notes.jpg", "not an image"), ("bomb.png", "--max-pixels"),
])
def test_undecodable_files_raise_a_reason(folder, name, words):
    with pytest.raises(DecodeError, match=words):
        decode_image(folder / name, 32)


def test_pixel_limit_is_configurable(tmp_path):
    write_bomb_png(tmp_path / "wide.png", 200, 200)
    with pytest.raises(DecodeError):
        decode_image(tmp_path / "wide.png", 32, max_pixels=100)


def test_grayscale_and_palette_become_rgb(tmp_path):
    Image.new("L", (10, 10), 128).save(tmp_path / "gray.png")
    Image.new("P", (10, 10), 3).save(tmp_path / "pal.bmp")
    for name in ("gray.png", "pal.bmp"):
        assert decode_image(tmp_path / name, 8).image.mode == "RGB"
