"""Driver and adapters for the trainer tests: a tiny megatron GPTModel and a deterministic synthetic batch stream.

Run as a script (``python tests/test_train_fixtures.py key=value ...``, or under torchrun) it trains one run with
``liquid_train.training.run``. The model is megatron-core's own GPTModel (local spec); the process set-up uses
``liquid_train.parallel`` when it is importable and otherwise a minimal CPU adapter below (gloo group, megatron
parallel state, CUDA->CPU device mapping), so the trainer's tests exercise the real megatron-core loop either way.

Environment knobs for fault injection (test-only):
- ``LT_TEST_NAN_STEPS=3,4``: the model's logits are NaN on those (1-based) steps.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 32
MODEL = dict(layers=4, hidden=64, heads=4, groups=2)


# --- process set-up ------------------------------------------------------------------------------------------
def _cpu_adapter_init(tp, pp, vpp, seed):
    import torch.distributed as dist
    from torch.overrides import TorchFunctionMode

    class _CudaToCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            d = kwargs.get("device")
            if d is not None and (isinstance(d, int) or (isinstance(d, str) and d.startswith("cuda"))
                                  or (isinstance(d, torch.device) and d.type == "cuda")):
                kwargs["device"] = "cpu"
            return func(*args, **kwargs)

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29000 + os.getpid() % 1000))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda *a, **k: None
    _CudaToCpu().__enter__()
    from megatron.core import parallel_state
    import megatron.core.tensor_parallel.random as mrandom

    parallel_state.initialize_model_parallel(tp, pp, virtual_pipeline_model_parallel_size=vpp)

    class _Tracker:  # no dropout in these models: a no-op fork
        def fork(self, name=None):
            return contextlib.nullcontext()

        def get_states(self):
            return {}

        def set_states(self, states):
            pass

        def add(self, *a):
            pass

        def is_initialized(self):
            return True

    mrandom._CUDA_RNG_STATE_TRACKER = _Tracker()
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
    torch.manual_seed(seed)
    original_type = torch.Tensor.type

    def _type(self, *a, **k):  # megatron's optimizer compares param.type() with 'torch.cuda.FloatTensor'
        if not a and not k:
            s = original_type(self)
            return s if s.startswith("torch.cuda") else s.replace("torch.", "torch.cuda.", 1)
        return original_type(self, *a, **k)

    torch.Tensor.type = _type


def init_parallel(tp=1, pp=1, vpp=None, seed=1234):
    try:
        from liquid_train import parallel
    except ImportError:
        return _cpu_adapter_init(tp, pp, vpp, seed)
    return parallel.initialize_parallel(tp=tp, pp=pp, vpp=vpp, seed=seed)


def destroy_parallel():
    try:
        from liquid_train import parallel
    except ImportError:
        import torch.distributed as dist
        from megatron.core import parallel_state

        parallel_state.destroy_model_parallel()
        if dist.is_initialized():
            dist.destroy_process_group()
        return
    parallel.destroy_parallel()


# --- model ---------------------------------------------------------------------------------------------------
def tiny_provider(padded_vocab: int, seed: int = 1234):
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    def provider(pre_process=True, post_process=True, vp_stage=None):
        from megatron.core import tensor_parallel

        torch.manual_seed(seed)
        cfg = TransformerConfig(
            num_layers=MODEL["layers"], hidden_size=MODEL["hidden"], num_attention_heads=MODEL["heads"],
            num_query_groups=MODEL["groups"], ffn_hidden_size=MODEL["hidden"] * 2, gated_linear_unit=True,
            activation_func=torch.nn.functional.silu, normalization="RMSNorm", add_bias_linear=False,
            hidden_dropout=0.0, attention_dropout=0.0, use_cpu_initialization=True, perform_initialization=True,
            tensor_model_parallel_size=ps.get_tensor_model_parallel_world_size(),
            pipeline_model_parallel_size=ps.get_pipeline_model_parallel_world_size(),
            virtual_pipeline_model_parallel_size=ps.get_virtual_pipeline_model_parallel_world_size(),
            pipeline_dtype=torch.float32, params_dtype=torch.float32)
        model = GPTModel(config=cfg, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                         vocab_size=padded_vocab, max_sequence_length=SEQ, pre_process=pre_process,
                         post_process=post_process, position_embedding_type="rope",
                         share_embeddings_and_output_weights=False, vp_stage=vp_stage)
        nan_steps = {int(s) for s in os.environ.get("LT_TEST_NAN_STEPS", "").split(",") if s}
        if nan_steps and post_process:
            state = {"calls": 0}

            def poison(module, args, output):  # called once per micro-batch
                state["calls"] += 1
                step = (state["calls"] - 1) // int(os.environ.get("LT_TEST_MICROBATCHES", "1")) + 1
                return output * float("nan") if step in nan_steps else output

            model.register_forward_hook(poison)
        return model

    return provider


# --- data ----------------------------------------------------------------------------------------------------
def synthetic_batch(index: int, mbs: int, vocab, seq: int = SEQ):
    """Micro-batch number ``index`` of a deterministic stream: arithmetic token progressions per task
    (learnable, so the loss falls), with per-sample task ids and a causal mask."""
    from liquid_train.vocab import TASK_I2T, TASK_T2I

    rng = np.random.default_rng(1000 + index)
    tokens = np.zeros((mbs, seq + 1), np.int64)
    tasks = np.zeros((mbs, seq), np.int64)
    for b in range(mbs):
        task = int(rng.integers(0, 3))
        start = int(rng.integers(0, 50))
        if task == TASK_T2I:
            row = vocab.image_token_offset + (start + np.arange(seq + 1)) % vocab.num_image_tokens
        elif task == TASK_I2T:
            row = (start + 5 * np.arange(seq + 1)) % 200
        else:
            row = (start + 3 * np.arange(seq + 1)) % 200
        tokens[b], tasks[b] = row, task
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)[None, None].expand(mbs, 1, seq, seq).contiguous()
    return {"tokens": torch.from_numpy(tokens[:, :-1]).contiguous(), "labels": torch.from_numpy(tokens[:, 1:]).contiguous(),
            "loss_mask": torch.ones(mbs, seq), "task_ids": torch.from_numpy(tasks),
            "position_ids": torch.arange(seq).expand(mbs, seq).contiguous(), "attention_mask": mask}


def synthetic_data(vocab):
    """Global sample g lives in micro-batch g // mbs; DP rank r reads micro-batches r, r + dp, ... so the
    global batch is the same whatever the DP size."""
    from liquid_train.training import DataProvider

    def train_iterator(consumed_samples, mbs, dp_rank, dp_size):
        index = consumed_samples // mbs + dp_rank
        while True:
            yield synthetic_batch(index, mbs, vocab)
            index += dp_size

    def valid_iterators(mbs, dp_rank, dp_size):
        def stream(offset):
            index = offset + dp_rank
            while True:
                yield synthetic_batch(index, mbs, vocab)
                index += dp_size

        return {"text": stream(10**6)}

    return DataProvider(train_iterator=train_iterator, valid_iterators=valid_iterators, seq_length=SEQ)


BASE_OVERRIDES = [
    "train.iters=20", "train.global_batch_size=4", "train.micro_batch_size=2", "optimizer.lr=3e-3",
    "optimizer.clip_grad=1.0", "optimizer.z_loss_weight=1e-4", "schedule.style=cosine", "schedule.warmup_steps=2",
    "logging.wandb_mode=disabled", "logging.tensorboard=false", "logging.progress=false", "model.precision=fp32",
    "model.vocab=test",
]


def save_init_checkpoint(path: str) -> None:
    """A model-only dist checkpoint (``{"model": ...}``, contract 4) of the tiny model at TP=1/PP=1, so runs at
    every layout start from the same weights."""
    from megatron.core import dist_checkpointing
    from liquid_train.vocab import default_test_vocab

    init_parallel()
    try:
        vocab = default_test_vocab()
        model = tiny_provider(vocab.padded_vocab_size(2))()
        os.makedirs(path, exist_ok=True)
        dist_checkpointing.save({"model": model.sharded_state_dict()}, path)
        vocab.save(path)
    finally:
        destroy_parallel()


def main(argv):
    from liquid_train.training import ModelProvider, TrainingAborted, load_config, run
    from liquid_train.training.checkpoint import CheckpointError
    from liquid_train.vocab import default_test_vocab

    if argv and argv[0] == "--save-init":
        save_init_checkpoint(argv[1])
        return 0

    cfg = load_config(overrides=BASE_OVERRIDES + list(argv))
    p = cfg.parallel
    init_parallel(p.tensor_parallel, p.pipeline_parallel, p.virtual_pipeline_parallel, p.seed)
    vocab = default_test_vocab()
    try:
        model = ModelProvider(tiny_provider(vocab.padded_vocab_size(2)), vocab, arch=None)
        run(cfg, model, synthetic_data(vocab), init_parallel=False)
    except TrainingAborted as err:
        print(f"ABORTED: {err}", file=sys.stderr)
        return 3
    except CheckpointError as err:  # as the CLI: one line, exit 2
        print(f"liquid-train: {err}", file=sys.stderr)
        return 2
    finally:
        destroy_parallel()
    return 0


def test_synthetic_stream_is_a_function_of_the_index():
    from liquid_train.vocab import default_test_vocab

    v = default_test_vocab()
    a, b = synthetic_batch(7, 2, v), synthetic_batch(7, 2, v)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["tokens"], synthetic_batch(8, 2, v)["tokens"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
