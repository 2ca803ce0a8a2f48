"""Every Pillow mode and EXIF orientation maps to the right upright RGB pixels: each case against a numpy reference
built from the raw values (16-bit PNGs from a hand-written PNG encoder, so Pillow's writer is not its own oracle),
and end to end through ``encode`` (the codes of the shard equal the codes of the reference pixels)."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from data_pipeline.encode import EncodeConfig, run_encode
from data_pipeline.preprocess import (EMPTY_FILE, UNSUPPORTED_MODE, PreprocessConfig, Rejected, decode_image,
                                      preprocess_image)
from data_pipeline.shards import finished_shards, iter_shard
from data_pipeline.testing import write_wds_tar
from data_pipeline.vq import load_vq_tokenizer

S = 32
CFG = PreprocessConfig(resolution=S, min_side=1)  # square S x S inputs: the resize is the identity
RNG = np.random.default_rng(0)


def png(arr: np.ndarray, color_type: int, extra_chunks=()) -> bytes:
    """Minimal PNG writer (zlib + CRC), big-endian samples: color type 0 grey, 2 RGB; bit depth from the dtype."""
    h, w = arr.shape[:2]
    depth = 16 if arr.dtype == np.uint16 else 8
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = [chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))]
    body += [chunk(kind, data) for kind, data in extra_chunks]
    body += [chunk(b"IDAT", zlib.compress(raw)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(body)


def pixels(data_or_img) -> np.ndarray:
    """[H, W, 3] uint8 as the pipeline produces them."""
    img = decode_image(data_or_img, CFG) if isinstance(data_or_img, bytes) else data_or_img
    arr, _ = preprocess_image(img, CFG)
    return arr.transpose(1, 2, 0)


def composite(rgb, alpha):
    """Reference: straight alpha over white, rounded."""
    a = alpha.astype(np.float64)[..., None] / 255
    return np.round(rgb.astype(np.float64) * a + 255 * (1 - a)).astype(np.uint8)


def grey3(g):
    return np.repeat(np.asarray(g, np.uint8)[..., None], 3, axis=2)


def test_16bit_grey_png_is_scaled_not_clipped():
    flat = png(np.full((S, S), 30000, np.uint16), 0)
    assert Image.open(io.BytesIO(flat)).mode.startswith("I")
    assert (pixels(flat) == 117).all()  # 30000 / 65535 * 255 = 116.7; Pillow's convert("RGB") gives 255
    values = RNG.integers(0, 65536, (S, S)).astype(np.uint16)
    np.testing.assert_array_equal(pixels(png(values, 0)), grey3(np.round(values.astype(np.float64) * 255 / 65535)))


def test_16bit_grey_png_with_transparent_value():
    values = RNG.integers(0, 65536, (S, S)).astype(np.uint16)
    values[:4] = 1234
    got = pixels(png(values, 0, [(b"tRNS", struct.pack(">H", 1234))]))
    ref = grey3(np.round(values.astype(np.float64) * 255 / 65535))
    ref[:4] = 255
    np.testing.assert_array_equal(got, ref)


def test_16bit_rgb_png_is_scaled():
    values = RNG.integers(0, 65536, (S, S, 3)).astype(np.uint16)
    got = pixels(png(values, 2)).astype(int)
    assert np.abs(got - values.astype(np.float64) * 255 / 65535).max() <= 1  # Pillow keeps the high byte: within 1 of the scale


def test_32bit_integer_modes():
    values = RNG.integers(0, 65536, (S, S)).astype(np.int32)
    np.testing.assert_array_equal(pixels(Image.fromarray(values, "I")), grey3(np.round(values.astype(np.float64) * 255 / 65535)))
    with pytest.raises(Rejected) as e:
        pixels(Image.fromarray(values * 4 - 1000, "I"))
    assert e.value.reason == UNSUPPORTED_MODE and "mode I" in str(e.value)
    with pytest.raises(Rejected) as e:
        pixels(Image.fromarray(RNG.random((S, S), dtype=np.float32), "F"))
    assert e.value.reason == UNSUPPORTED_MODE


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(mode):
    colour = RNG.integers(0, 256, (S, S, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 256, (S, S), dtype=np.uint8)
    alpha[0, :4] = (0, 255, 1, 254)
    if mode == "LA":
        colour = grey3(colour[..., 0])
        img = Image.fromarray(np.dstack([colour[..., 0], alpha]), "LA")
    else:
        img = Image.fromarray(np.dstack([colour, alpha]), "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    np.testing.assert_array_equal(pixels(buf.getvalue()), composite(colour, alpha))


def test_premultiplied_rgba():
    straight = RNG.integers(0, 256, (S, S, 3), dtype=np.uint8)
    alpha = RNG.integers(1, 256, (S, S), dtype=np.uint8)
    premult = np.round(straight * (alpha[..., None] / 255)).astype(np.uint8)
    got = pixels(Image.frombytes("RGBa", (S, S), np.dstack([premult, alpha]).tobytes())).astype(int)
    ref = premult.astype(int) + 255 - alpha[..., None]  # c*a + 255*(1-a) with c*a the premultiplied value
    assert np.abs(got - ref).max() <= 2  # Pillow's premultiply/unpremultiply rounding


def test_palette_with_and_without_transparency():
    palette = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = RNG.integers(0, 256, (S, S), dtype=np.uint8)
    index[0, :3] = 7
    img = Image.fromarray(index, "P")
    img.putpalette(palette.reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG")
    np.testing.assert_array_equal(pixels(buf.getvalue()), palette[index])
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=7)  # palette entry 7 fully transparent (tRNS)
    ref = palette[index].copy()
    ref[index == 7] = 255
    np.testing.assert_array_equal(pixels(buf.getvalue()), ref)
    # PA: palette + alpha channel
    alpha = RNG.integers(0, 256, (S, S), dtype=np.uint8)
    pa = Image.merge("PA", [img, Image.fromarray(alpha, "L")]) if "PA" in Image.MODES else None
    if pa is not None:
        pa.putpalette(palette.reshape(-1).tolist())
        np.testing.assert_array_equal(pixels(pa), composite(palette[index], alpha))


def test_grey_and_rgb_with_trns_colour_key():
    grey = RNG.integers(0, 256, (S, S), dtype=np.uint8)
    grey[1] = 9
    got = pixels(png(grey, 0, [(b"tRNS", struct.pack(">H", 9))]))
    ref = grey3(grey)
    ref[grey == 9] = 255
    np.testing.assert_array_equal(got, ref)
    rgb = RNG.integers(0, 256, (S, S, 3), dtype=np.uint8)
    rgb[2] = (1, 2, 3)
    got = pixels(png(rgb, 2, [(b"tRNS", struct.pack(">HHH", 1, 2, 3))]))
    ref = rgb.copy()
    ref[(rgb == (1, 2, 3)).all(-1)] = 255
    np.testing.assert_array_equal(got, ref)


def test_cmyk_ycbcr_bilevel_grey():
    cmyk = RNG.integers(0, 256, (S, S, 4), dtype=np.uint8)
    got = pixels(Image.fromarray(cmyk, "CMYK")).astype(int)
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    assert np.abs(got - (255 - c) * (255 - k) / 255).max() <= 1
    ycc = RNG.integers(16, 240, (S, S, 3), dtype=np.uint8).astype(float)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    ref = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1).clip(0, 255)
    got = pixels(Image.fromarray(ycc.astype(np.uint8), "YCbCr")).astype(int)
    assert np.abs(got - ref).max() <= 1
    bits = RNG.integers(0, 2, (S, S)).astype(bool)
    bilevel = Image.fromarray((bits * 255).astype(np.uint8), "L").convert("1", dither=Image.Dither.NONE)
    assert bilevel.mode == "1"
    np.testing.assert_array_equal(pixels(bilevel), grey3(bits * 255))
    g = RNG.integers(0, 256, (S, S), dtype=np.uint8)
    np.testing.assert_array_equal(pixels(Image.fromarray(g, "L")), grey3(g))


ORIENT = {  # EXIF spec, what shows the stored pixels upright: 2 mirror, 3 rotate 180, 4 flip, 5 mirror + rotate
    # 270 CW, 6 rotate 90 CW, 7 mirror + rotate 90 CW, 8 rotate 270 CW (np.rot90 turns counter-clockwise)
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: np.rot90(a[:, ::-1], 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a[:, ::-1], -1),
    8: lambda a: np.rot90(a, 1),
}


def _with_orientation(arr: np.ndarray, orientation: int, fmt: str) -> bytes:
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_before_resize(orientation):
    stored = RNG.integers(0, 256, (S, S, 3), dtype=np.uint8)  # asymmetric content: every transform differs
    got = pixels(_with_orientation(stored, orientation, "PNG"))
    np.testing.assert_array_equal(got, ORIENT[orientation](stored))


def test_exif_rotated_jpeg_non_square():
    stored = np.zeros((48, 80, 3), np.uint8)
    stored[:, :20] = (250, 10, 10)  # red at the stored left edge: at the top once rotated 90 degrees clockwise
    data = _with_orientation(stored, 6, "JPEG")
    arr, meta = preprocess_image(decode_image(data, CFG), CFG)
    assert meta["orig_size"] == [48, 80] and meta["exif_orientation"] == 6
    img = arr.transpose(1, 2, 0).astype(int)
    assert img[:4, :, 0].mean() > 200 and img[-4:, :, 0].mean() < 40


def test_zero_byte_file_has_its_own_reason():
    with pytest.raises(Rejected) as e:
        decode_image(b"", CFG)
    assert e.value.reason == EMPTY_FILE
    with pytest.raises(Rejected) as e:
        decode_image(b"\x00" * 10, CFG)
    assert e.value.reason == "corrupt_image"


def test_encode_writes_the_reference_pixels(tmp_path):
    """The two images of the original report, end to end: shard codes == codes of the numpy reference pixels."""
    grey16 = png(np.full((64, 64), 30000, np.uint16), 0)
    stored = RNG.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    rotated = _with_orientation(stored, 6, "JPEG")
    tiff = io.BytesIO()
    Image.fromarray(RNG.random((64, 64), dtype=np.float32), "F").save(tiff, "TIFF")
    write_wds_tar(str(tmp_path / "in.tar"), [
        {"__key__": "grey16", "png": grey16, "txt": b"grey"},
        {"__key__": "rotated", "jpg": rotated, "txt": b"phone photo"},
        {"__key__": "float", "png": tiff.getvalue(), "txt": b"float tiff named png"},
        {"__key__": "empty", "jpg": b"", "txt": b"zero bytes"},
    ])
    pre = PreprocessConfig(resolution=32)
    s = run_encode(EncodeConfig(inputs=[str(tmp_path / "in.tar")], output_dir=str(tmp_path / "out"),
                                vq_tokenizer="chameleon-vqgan-tiny", preprocess=pre, num_workers=0, device="cpu",
                                progress=False, threads=1))["summary"]
    assert s["written"] == 2 and s["rejected"] == {"empty_file": 1, "unsupported_mode": 1}
    got = {x["key"].split("_")[-1]: x for shard in finished_shards(str(tmp_path / "out")) for x in iter_shard(shard)}
    tok = load_vq_tokenizer("chameleon-vqgan-tiny")

    def codes(rgb: np.ndarray):
        arr, _ = preprocess_image(Image.fromarray(rgb), pre)
        return tok.encode(torch.from_numpy(arr)[None].float() / 127.5 - 1)[0].numpy()

    np.testing.assert_array_equal(got["0000000"]["codes"], codes(np.full((64, 64, 3), 117, np.uint8)))
    decoded = np.asarray(Image.open(io.BytesIO(rotated)).convert("RGB"))  # JPEG pixels as stored
    np.testing.assert_array_equal(got["0000001"]["codes"], codes(np.ascontiguousarray(np.rot90(decoded, -1))))
    assert got["0000001"]["meta"]["orig_size"] == [48, 80]
