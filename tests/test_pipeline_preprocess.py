"""Preprocessing against plain PIL/numpy oracles, and the rejection reasons."""
import io

import numpy as np
import pytest
from PIL import Image

from data_pipeline.preprocess import (BAD_ASPECT, CORRUPT_IMAGE, MISSING_CAPTION, PAD_COLOR, TOO_SMALL,
                                      PreprocessConfig, Rejected, clean_caption, decode_image, preprocess_image)
from data_pipeline.testing import image_bytes


def _pil(w, h, seed=0, fmt="PNG"):
    return Image.open(io.BytesIO(image_bytes(w, h, seed, fmt)))


@pytest.mark.parametrize("size,res", [((160, 100), 64), ((90, 150), 64), ((300, 300), 128), ((200, 120), 96)])
def test_resize_short_side_then_center_crop(size, res):
    cfg = PreprocessConfig(resolution=res)
    img = _pil(*size)
    arr, meta = preprocess_image(img, cfg)
    assert arr.shape == (3, res, res) and arr.dtype == np.uint8
    assert meta["orig_size"] == list(size)
    # oracle: the public code's two steps (resize short side with LANCZOS, then center crop)
    w, h = size
    scale = res / min(w, h)
    nw, nh = max(res, round(w * scale)), max(res, round(h * scale))
    resized = img.convert("RGB").resize((nw, nh), Image.LANCZOS)
    left, top = (nw - res) // 2, (nh - res) // 2
    ref = np.asarray(resized.crop((left, top, left + res, top + res))).transpose(2, 0, 1).astype(int)
    diff = np.abs(arr.astype(int) - ref)
    assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (diff.mean(), diff.max())
    l, t, r, b = meta["crop_box"]
    assert abs((r - l) - min(w, h)) < 0.05 and abs((b - t) - min(w, h)) < 0.05
    assert abs((l + r) / 2 - w / 2) <= 1 and abs((t + b) / 2 - h / 2) <= 1


def test_pad_to_square_uses_mean_colour():
    cfg = PreprocessConfig(resolution=64, pad_to_square=True)
    arr, meta = preprocess_image(_pil(128, 80), cfg)  # 24 px of padding above and below before the resize
    assert meta["crop_box"] == [0, -24, 128, 104]
    top_row = arr[:, 0, :].T  # [64, 3]
    assert (np.abs(top_row.astype(int) - np.array(PAD_COLOR)) <= 1).all()
    assert not (np.abs(arr[:, 32, :].T.astype(int) - np.array(PAD_COLOR)) <= 1).all()


def test_rejections():
    cfg = PreprocessConfig(resolution=64)
    with pytest.raises(Rejected) as e:
        preprocess_image(_pil(300, 100), cfg)  # 3:1
    assert e.value.reason == BAD_ASPECT
    preprocess_image(_pil(200, 100), cfg)  # exactly 2:1 is kept
    preprocess_image(_pil(300, 100), PreprocessConfig(resolution=64, max_aspect_ratio=0))  # check disabled
    with pytest.raises(Rejected) as e:
        preprocess_image(_pil(15, 15), cfg)  # below resolution // 4
    assert e.value.reason == TOO_SMALL
    with pytest.raises(Rejected) as e:
        decode_image(b"not an image at all", cfg)
    assert e.value.reason == CORRUPT_IMAGE
    truncated = image_bytes(120, 90, 1, "JPEG")[:300]
    with pytest.raises(Rejected) as e:
        preprocess_image(decode_image(truncated, cfg), cfg)
    assert e.value.reason == CORRUPT_IMAGE
    for bad in (None, "", "   \n", 5):
        with pytest.raises(Rejected) as e:
            clean_caption(bad)
        assert e.value.reason == MISSING_CAPTION
    assert clean_caption("  a cat \n") == "a cat"


def test_modes_converted_to_rgb():
    cfg = PreprocessConfig(resolution=32, min_side=0)
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent -> white background
    arr, _ = preprocess_image(rgba, cfg)
    assert (arr == 255).all()
    gray = Image.new("L", (40, 40), 77)
    arr, _ = preprocess_image(gray, cfg)
    assert (arr == 77).all()
