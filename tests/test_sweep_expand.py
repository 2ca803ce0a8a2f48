"""The sweep expander writes one run config per (model, variant) with the right mixture and no planner-only keys."""
import os
import sys

from omegaconf import OmegaConf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import sweep  # noqa: E402


def test_paper_scaling_expands(tmp_path):
    cmds = sweep.expand(os.path.join(REPO, "configs/sweeps/paper_scaling.yaml"), str(tmp_path))
    assert len(cmds) == 6 * 3
    cfg = OmegaConf.load(tmp_path / "qwen2.5_32b__t2i_only.yaml")
    assert dict(cfg.data.mixture) == {"text": 0, "t2i": 1, "i2t": 0}
    assert "plan" not in cfg and cfg.parallel.tensor_parallel == 4 and cfg.train.iters == 40000
    assert cfg.run_dir.endswith("paper_scaling/qwen2.5_32b__t2i_only")
    assert any("--nodes=4" in c and "qwen2.5_32b__mixed" in c for c in cmds)


def test_ratio_ablation_expands(tmp_path):
    sweep.expand(os.path.join(REPO, "configs/sweeps/ratio_ablation.yaml"), str(tmp_path))
    mix = {n: dict(OmegaConf.load(tmp_path / f"gemma_7b__{n}.yaml").data.mixture) for n in ("r1_1_1", "r1_2_1", "r1_1_2")}
    assert mix["r1_2_1"] == {"text": 1, "t2i": 2, "i2t": 1} and mix["r1_1_2"] == {"text": 1, "t2i": 1, "i2t": 2}
