"""The one accounting module against the model the build path constructs: parameter counts equal
``sum(p.numel())`` for every family and size, the activation count equals what autograd keeps for one layer, and the
planner's memory prediction for a small model matches the peak measured on CPU within 15%."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from liquid_train.accounting import activation_bytes_per_layer, count_params, flops_per_token, kernels_of
from liquid_train.models.builder import build
from liquid_train.models.families import FAMILIES, get_model_arch
from liquid_train.models.options import BuildOptions
from liquid_train.parallel import destroy_parallel, initialize_parallel
from liquid_train.vocab import padded_rows

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(f, s) for f, sizes in FAMILIES.items() for s in sizes]


@pytest.fixture(scope="module")
def parallel():
    initialize_parallel(1, 1)
    yield
    destroy_parallel()


def _numel(arch, rows, layers):
    """Parameters of the model the build path makes at ``layers`` depth (on the meta device: no memory)."""
    with torch.device("meta"):
        model = build(replace(arch, num_layers=layers), rows, BuildOptions(tensor_parallel=1))()
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family,size", SIZES, ids=[f"{f}-{s}" for f, s in SIZES])
def test_param_count_equals_the_built_model(parallel, family, size):
    """Built at depth 1 and 2 (full width), scaled per layer to the full depth."""
    arch = get_model_arch(family, size)
    rows = padded_rows(arch.vocab_size + 8192)
    one, two = _numel(arch, rows, 1), _numel(arch, rows, 2)
    full = one + (arch.num_layers - 1) * (two - one)
    pc = count_params(arch, rows)
    assert two - one == pc.per_layer
    assert full == pc.total


def test_flops_formula_by_hand():
    arch = replace(get_model_arch("qwen2.5", "tiny"), num_layers=2, hidden_size=8, num_attention_heads=2,
                   num_query_groups=1, head_dim=4, ffn_hidden_size=16, qkv_bias=True)
    matmul = 8 * (2 * 4) + 2 * 8 * 4 + (2 * 4) * 8 + 3 * 8 * 16
    fl = flops_per_token(arch, seq_length=10, vocab_rows=32, full_recompute=True)
    assert fl["model"] == 6 * (2 * matmul + 8 * 32) + 12 * 2 * 10 * 2 * 4
    assert fl["hardware"] == pytest.approx(fl["model"] * 4 / 3)


@pytest.mark.parametrize("family", ["qwen2.5", "gemma2"])
def test_activation_count_equals_what_autograd_keeps(parallel, family):
    """One decoder layer on a packed THD batch, fp32, CPU kernels: the bytes autograd saves (parameters excluded)
    against ``activation_bytes_per_layer`` with the kernels the build chose (within 10%: RoPE's per-position
    tables and per-row statistics are not counted)."""
    arch = replace(get_model_arch(family, "tiny"), hidden_size=256, ffn_hidden_size=1024, num_attention_heads=4,
                   num_query_groups=2, head_dim=64, sliding_window=None)
    model = build(arch, 256, BuildOptions(tensor_parallel=1))()
    t = 512
    # four documents; Gemma 2's exact path keeps s x s scores, which the count takes at one full-length document
    bounds = [0, 512] if arch.attn_logit_softcap else [0, 128, 256, 384, 512]
    cu = torch.tensor(bounds, dtype=torch.int32)
    longest = max(b - a for a, b in zip(bounds, bounds[1:]))
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest,
                             max_seqlen_kv=longest)
    hidden = torch.randn(t, 1, arch.hidden_size, requires_grad=True)
    rotary = model.rotary_pos_emb(longest, packed_seq=True)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(x):
        storage = x.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model.decoder.layers[0](hidden, attention_mask=None, rotary_pos_emb=rotary, packed_seq_params=params)
    measured = sum(seen.values())
    predicted = activation_bytes_per_layer(t, 1, arch.hidden_size, arch.num_attention_heads, head_dim=arch.head_dim,
                                           kv_heads=arch.num_query_groups, ffn=arch.ffn_hidden_size, gated=True,
                                           bytes_per_value=4, post_norms=arch.post_norms,
                                           kernels=kernels_of(model.config))
    assert abs(measured - predicted) <= 0.1 * measured, (measured, predicted)


@pytest.mark.slow
def test_planner_memory_matches_cpu_peak_within_15_percent(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-m", "liquid_train.testing.memory_run", str(tmp_path)], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    measured, predicted = result["measured_bytes"], result["predicted_bytes"]
    assert abs(predicted - measured) <= 0.15 * measured, result
