"""The loss: values and gradients (z-loss included) against a float64 reference, per-task stats against numpy,
no host synchronisation inside, and at most ~1x the logits kept for backward."""
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.training import loss as loss_module
from liquid_train.training.loss import STAT_NAMES, liquid_loss, summarize, vocab_parallel_cross_entropy
from liquid_train.training.memory_probe import saved_bytes
from liquid_train.vocab import TASK_PAD

OFFSET, END = 40, 72  # image ids


@pytest.fixture(scope="module", autouse=True)
def parallel():
    initialize_parallel(1, 1)
    yield
    destroy_parallel()


def _batch(n=53, vocab=97, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, n, vocab, generator=g, dtype=torch.float64) * 3
    logits[..., vocab - 5:] = float("-inf")  # TP padding rows of the vocabulary
    labels = torch.randint(0, vocab - 5, (1, n), generator=g)
    mask = (torch.rand(1, n, generator=g) > 0.3).float()
    tasks = torch.randint(0, 3, (1, n), generator=g)
    tasks[0, -4:] = TASK_PAD
    mask[0, -4:] = 0
    positions = torch.randint(0, 4, (1, n), generator=g)
    return logits, labels, mask, tasks, positions


def test_values_and_gradients_match_float64_reference(monkeypatch):
    monkeypatch.setattr(loss_module, "CHUNK_BYTES", 4 * 97 * 7)  # several chunks of 7 rows
    logits, labels, mask, tasks, positions = _batch()
    x = logits.float().requires_grad_(True)
    total, num_tokens, _ = liquid_loss(x, labels, mask, tasks, OFFSET, END, 1e-2, positions)
    total.backward()
    ref = logits.clone().requires_grad_(True)
    lse = torch.logsumexp(ref[0], -1)
    ce = lse - ref[0].gather(1, labels[0, :, None]).squeeze(1)
    ref_total = (ce * mask[0]).sum() + 1e-2 * (lse.square() * mask[0]).sum()
    ref_total.backward()
    assert int(num_tokens) == int(mask.sum())
    assert abs(float(total) - float(ref_total)) <= 1e-5 * abs(float(ref_total))
    finite = torch.isfinite(logits)
    assert torch.allclose(x.grad[finite].double(), ref.grad[finite], atol=1e-6, rtol=1e-4)
    assert (x.grad[~finite] == 0).all()
    ce32, lse32, argmax = vocab_parallel_cross_entropy(logits.float(), labels)
    assert torch.equal(argmax[0], logits[0].argmax(-1))


def test_stats_match_numpy_boolean_indexing():
    logits, labels, mask, tasks, positions = _batch(seed=1)
    _, _, stats = liquid_loss(logits.float(), labels, mask, tasks, OFFSET, END, 1e-3, positions)
    s = dict(zip(STAT_NAMES, stats["stats"].tolist()))
    lg, lb, m, t, p = (a[0].numpy() for a in (logits, labels, mask, tasks, positions))
    lse = np.logaddexp.reduce(lg, axis=-1)
    ce = lse - lg[np.arange(len(lb)), lb]
    for task, name in enumerate(("text", "t2i", "i2t")):
        keep = (t == task) & (m > 0)
        assert s[f"tokens/{name}"] == keep.sum()
        assert s[f"ce/{name}"] == pytest.approx(ce[keep].sum(), rel=1e-5)
        assert s[f"samples/{name}"] == ((p == 0) & (t == task)).sum()
    image = (m > 0) & (lb >= OFFSET) & (lb < END)
    assert s["image_tokens"] == image.sum()
    assert s["image_correct"] == (lg.argmax(-1)[image] == lb[image]).sum()
    assert s["zloss"] == pytest.approx((lse[m > 0] ** 2).sum(), rel=1e-5)
    out = summarize(stats["stats"])
    assert out["loss"] == pytest.approx(ce[m > 0].mean(), rel=1e-5)


class _NoHostSync(TorchFunctionMode):
    """Fails on every call that would wait for the device (values read on the host, data-dependent shapes)."""

    FORBIDDEN = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.nonzero,
                 torch.nonzero, torch.Tensor.numpy, torch.masked_select, torch.Tensor.masked_select}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.FORBIDDEN:
            raise AssertionError(f"host sync inside the loss: {func}")
        if func is torch.Tensor.__getitem__ and torch.is_tensor(args[1]) and args[1].dtype == torch.bool:
            raise AssertionError("boolean indexing inside the loss (a host sync)")
        return func(*args, **(kwargs or {}))


def test_no_host_sync_inside_the_loss():
    logits, labels, mask, tasks, positions = _batch(seed=2)
    x = logits.float().requires_grad_(True)
    with _NoHostSync():  # forward (a torch function mode is off inside autograd's backward call)
        total, _, _ = liquid_loss(x, labels, mask, tasks, OFFSET, END, 1e-4, positions)
    total.backward()
    with pytest.raises(AssertionError, match="host sync"):  # the probe itself works
        with _NoHostSync():
            x.sum().item()


def test_bytes_saved_for_backward_with_z_loss_are_about_the_bf16_logits():
    n, vocab = 64, 4096
    logits = torch.randn(1, n, vocab).to(torch.bfloat16).requires_grad_(True)
    labels = torch.randint(0, vocab, (1, n))
    with saved_bytes() as saved:
        liquid_loss(logits, labels, torch.ones(1, n), torch.zeros(1, n, dtype=torch.long), 0, 64, 1e-4,
                    torch.arange(n)[None])
    assert saved["bytes"] <= 1.25 * logits.numel() * logits.element_size(), saved
