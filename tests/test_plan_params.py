"""Planner math against independent numbers: published parameter counts (HF model cards / safetensors metadata),
Korthikanti et al.'s closed-form activation memory, and every shipped model config fitting on its cluster."""
import glob
import os
import subprocess
import sys

import pytest

from liquid_train.models.families import get_model_arch
from liquid_train.models.vocab_extension import plan_vocab
from liquid_train.accounting import Kernels, activation_bytes_per_layer, count_params, flops_per_token
from liquid_train.planning.planner import Layout, arch_and_rows, layout_from_config, plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Exact totals of the released checkpoints (tied embeddings counted once).
PUBLISHED = {
    ("qwen2.5", "0.5b"): 494_032_768,
    ("qwen2.5", "1.5b"): 1_543_714_304,
    ("qwen2.5", "3b"): 3_085_938_688,
    ("qwen2.5", "7b"): 7_615_616_512,
    ("qwen2.5", "14b"): 14_770_033_664,
    ("qwen2.5", "32b"): 32_763_876_352,
    ("llama3.2", "1b"): 1_235_814_400,
    ("llama3.2", "3b"): 3_212_749_824,
    ("gemma2", "2b"): 2_614_341_888,
    ("gemma2", "9b"): 9_241_705_984,
    ("gemma2", "27b"): 27_227_128_320,
    ("gemma", "7b"): 8_537_680_896,
}


@pytest.mark.parametrize("family,size", sorted(PUBLISHED))
def test_param_count_matches_published(family, size):
    arch = get_model_arch(family, size)
    assert count_params(arch).total == PUBLISHED[(family, size)]


@pytest.mark.parametrize("family,size", sorted(PUBLISHED))
def test_extended_vocab_adds_image_rows(family, size):
    arch = get_model_arch(family, size)
    vocab = plan_vocab(arch, 8192)
    added_rows = vocab.vocab_size - arch.vocab_size
    assert added_rows >= 8192  # the codes, plus appended specials where the family has no free slots
    per_row = arch.hidden_size * (1 if arch.tie_embeddings else 2)
    assert count_params(arch, vocab.vocab_size).total == PUBLISHED[(family, size)] + added_rows * per_row


def test_korthikanti_closed_form():
    s, b, h, a = 2048, 1, 12288, 96  # GPT-3 175B layer
    exact = s * b * h * (34 + 5 * a * s / h)
    stored = Kernels(scores_stored=True)  # the paper's attention keeps its softmax
    assert activation_bytes_per_layer(s, b, h, a, dropout=True, kernels=stored) == pytest.approx(exact)
    t = 8  # with tensor + sequence parallelism everything divides by t
    assert activation_bytes_per_layer(s, b, h, a, dropout=True, tp=t, kernels=stored) == pytest.approx(exact / t)
    # selective recompute: 34 sbh / t; full recompute: 2 sbh / t
    assert activation_bytes_per_layer(s, b, h, a, dropout=True, tp=t, recompute="selective", kernels=stored) == \
        pytest.approx(34 * s * b * h / t)
    # flash-style kernels keep no s x s softmax: the selective-recompute number without recomputing anything
    assert activation_bytes_per_layer(s, b, h, a, dropout=True, tp=t) == pytest.approx(34 * s * b * h / t)
    assert activation_bytes_per_layer(s, b, h, a, tp=t, recompute="full") == pytest.approx(2 * s * b * h / t)
    # tensor parallelism without sequence parallelism keeps the 10 sbh of norms/dropouts replicated (paper eq. 2)
    assert activation_bytes_per_layer(s, b, h, a, dropout=True, tp=t, sequence_parallel=False, kernels=stored) == \
        pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))


def test_flops_match_megatron_formula():
    arch = get_model_arch("llama3.2", "1b")
    s, V = 2048, 131072
    fl = flops_per_token(arch, s, V)["model"]
    pc = count_params(arch, V)
    matmul = pc.num_layers * (pc.per_layer - 2 * arch.hidden_size)  # llama: no biases, two norms
    assert fl == pytest.approx(6 * matmul + 6 * V * arch.hidden_size + 12 * arch.num_layers * s * 2048)


CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs/models/*.yaml")))


def test_every_family_size_has_a_config():
    names = {os.path.basename(p)[:-5] for p in CONFIGS}
    assert {f"{f}_{s}" for f, s in PUBLISHED} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_shipped_config_fits(path):
    family, size, layout = layout_from_config(path)
    arch, rows = arch_and_rows(family, size)
    result = plan(arch, layout, rows)
    assert result.fits, result.report()
    assert result.memory_gib["total"] <= result.memory_gib["capacity"]
    assert result.tokens_per_day > 0


def test_plan_refuses_with_numbers():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools/plan.py"), "--family", "qwen2.5", "--size", "32b",
                           "--tp", "1", "--pp", "1", "--nodes", "1"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "DOES NOT FIT" in proc.stdout and "GiB" in proc.stdout and "optimizer" in proc.stdout


def test_plan_refuses_bad_divisibility():
    arch = get_model_arch("qwen2.5", "0.5b")
    result = plan(arch, Layout(tensor_parallel=4, nodes=1), 160000)  # 14 heads / TP4
    assert not result.fits and any("TP=4" in p for p in result.problems)
