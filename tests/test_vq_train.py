"""vq_train on real-photo-like inputs: encode's preprocessing (resize + crop to --resolution) over mixed sizes,
progress that reaches a redirected log while the run is going, one-line errors."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.preprocess import PreprocessConfig, decode_image, preprocess_image
from data_pipeline.testing import image_bytes, write_wds_tar
from data_pipeline.vq import load_vq_tokenizer
from data_pipeline.vq_train import load_images_from_tars, load_training_images

REPO = Path(__file__).resolve().parents[1]
SIZES = [(80, 64, "PNG"), (120, 90, "JPEG"), (64, 100, "PNG"), (300, 200, "JPEG"), (96, 96, "WEBP"), (300, 90, "PNG")]


@pytest.fixture
def mixed(tmp_path):
    samples = [{"__key__": f"{i:03d}", fmt.lower().replace("jpeg", "jpg"): image_bytes(w, h, i, fmt),
                "txt": b"c"} for i, (w, h, fmt) in enumerate(SIZES)]
    return write_wds_tar(str(tmp_path / "mixed.tar"), samples)


def test_mixed_sizes_get_encode_preprocessing(mixed):
    images, rejected = load_training_images([mixed], resolution=32, log=lambda _: None)
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8
    assert rejected == {"bad_aspect": 1}  # 300x90 exceeds 2:1, as encode rejects it
    pre = PreprocessConfig(resolution=32)
    for n, (w, h, fmt) in enumerate(SIZES[:5]):
        ref, _ = preprocess_image(decode_image(image_bytes(w, h, n, fmt), pre), pre)
        np.testing.assert_array_equal(images[n], ref)
    floats = load_images_from_tars([mixed], resolution=32)
    np.testing.assert_allclose(floats, images.astype(np.float32) / 127.5 - 1)
    with pytest.raises(DataError, match=r"mixed.tar#001.jpg: 120x90, but the first image is 80x64; pass --resolution"):
        load_images_from_tars([mixed])


def _cmd(images, out, *extra):
    return [sys.executable, "-m", "data_pipeline.vq_train", "--images", str(images), "--out", str(out),
            "--resolution", "32", "--batch-size", "4", "--threads", "1", *extra]


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_cli_trains_on_mixed_sizes_and_saves_a_loadable_vq(mixed, tmp_path):
    out = tmp_path / "vq"
    p = subprocess.run(_cmd(mixed, out, "--steps", "3", "--log-every", "1"), env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "5 images of 32x32, rejected {'bad_aspect': 1}" in p.stdout and "step 3/3" in p.stdout
    tok = load_vq_tokenizer(str(out))
    assert tuple(tok.code_grid(32)) == (4, 4)


def test_progress_reaches_a_redirected_log_while_running(mixed, tmp_path):
    log = open(tmp_path / "log.txt", "w")
    proc = subprocess.Popen(_cmd(mixed, tmp_path / "vq", "--steps", "100000"), env=ENV, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and "step 1/100000" not in (tmp_path / "log.txt").read_text():
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()
            time.sleep(0.2)
        text = (tmp_path / "log.txt").read_text()
        assert "step 1/100000" in text and "s/step" in text and proc.poll() is None
        assert "loading images from 1 tar(s) at 32px" in text
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_cli_errors_are_one_line(mixed, tmp_path):
    p = subprocess.run(_cmd(tmp_path / "missing.tar", tmp_path / "vq"), env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == f"vq_train: --images {tmp_path / 'missing.tar'}: no such file " \
                                                     "or directory"
    assert not (tmp_path / "vq").exists()
    (tmp_path / "file").write_text("x")
    p = subprocess.run(_cmd(mixed, tmp_path / "file"), env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == f"vq_train: --out {tmp_path / 'file'}: is a file; pass a directory"


def test_edge_loss_against_numpy():
    import torch

    from data_pipeline.vq_train import VQTrainConfig, edge_loss, reconstruction_losses
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((2, 3, 6, 7))
    want = (np.abs(np.diff(a, axis=3) - np.diff(b, axis=3)).mean()
            + np.abs(np.diff(a, axis=2) - np.diff(b, axis=2)).mean())
    got = edge_loss(torch.from_numpy(a), torch.from_numpy(b)).item()
    assert abs(got - want) < 1e-12
    # A shift of a flat image's constant changes no difference image: the term sees edges only.
    assert edge_loss(torch.from_numpy(a + 0.3), torch.from_numpy(a)).item() < 1e-12
    plain = reconstruction_losses(torch.from_numpy(a), torch.from_numpy(b), VQTrainConfig())
    weighted = reconstruction_losses(torch.from_numpy(a), torch.from_numpy(b), VQTrainConfig(edge_weight=2.0))
    assert abs(weighted[0].item() - plain[0].item() - 2.0 * want) < 1e-9 and weighted[1].item() == plain[1].item()


def test_cosine_schedule_restarts_for_the_vq_phase():
    import math

    from data_pipeline.vq_train import VQTrainConfig, lr_at
    cfg = VQTrainConfig(steps=300, ae_warmup_steps=100, lr=1.0, schedule="cosine", warmup_fraction=0.1,
                        min_lr_ratio=0.1)
    assert lr_at(VQTrainConfig(lr=0.5), 7) == 0.5
    assert lr_at(cfg, 5) == 0.5 and lr_at(cfg, 10) == 1.0          # ramp over 10% of the 100 warm-up steps
    assert abs(lr_at(cfg, 100) - 0.1) < 1e-12                        # decayed to min at the warm-up's end
    assert abs(lr_at(cfg, 110) - 0.5) < 1e-12 and lr_at(cfg, 120) == 1.0  # the VQ phase ramps again (20 steps)
    mid = 120 + (300 - 100 - 20) / 2
    assert abs(lr_at(cfg, int(mid)) - (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))) < 1e-12
    assert abs(lr_at(cfg, 300) - 0.1) < 1e-12
    with pytest.raises(ValueError, match="schedule"):
        lr_at(VQTrainConfig(schedule="linear"), 1)


def test_constant_with_warmup_ramps_each_phase_then_holds():
    from data_pipeline.vq_train import VQTrainConfig, lr_at
    cfg = VQTrainConfig(steps=300, ae_warmup_steps=100, lr=1.0, schedule="constant_with_warmup", warmup_fraction=0.1)
    assert [lr_at(cfg, s) for s in (5, 10, 60, 100)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_at(cfg, s) for s in (110, 120, 300)] == [0.5, 1.0, 1.0]  # the VQ phase ramps again over its 20


def test_grad_clip_bounds_the_global_norm_of_each_update():
    """With plain SGD the step is lr * grad, so the parameter change measures the (clipped) gradient norm."""
    import torch

    from data_pipeline.vq_train import VQTrainConfig, _update
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    x = 100 * torch.randn(16, 8)
    norms = []
    for clip in (0.0, 0.5):
        m = torch.nn.Linear(8, 8)
        m.load_state_dict(model.state_dict())
        before = torch.cat([p.detach().flatten().clone() for p in m.parameters()])
        _update(m, torch.optim.SGD(m.parameters(), lr=1.0), m(x).pow(2).mean(), VQTrainConfig(grad_clip=clip))
        norms.append(float((torch.cat([p.detach().flatten() for p in m.parameters()]) - before).norm()))
    assert norms[0] > 10 and abs(norms[1] - 0.5) < 1e-4
