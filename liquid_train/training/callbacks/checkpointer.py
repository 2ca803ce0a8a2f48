"""The checkpointer: resume from the newest checkpoint that verifies, save every ``checkpoint.save_interval`` steps
and at least every ``checkpoint.save_interval_minutes`` (``save_policy.SavePolicy``), on preemption and at the end (megatron dist-checkpointing through ``liquid_train.training.checkpoint``).

A checkpoint holds the step's module state (model, optimizer, scheduler, RNG: the module's ``save_checkpoint``;
megatron dist-checkpointing, or DeepSpeed's own format for ``engine=deepspeed``),
the loop's counters (``TrainState``) and three sidecars: ``trainer_state.json`` (counters and layout),
``liquid_vocab.json`` and ``liquid_model.json``. RNG streams are restored only at the layout they were saved at.
"""
from __future__ import annotations

import logging
from typing import Optional

from liquid_train.models.sidecar import MODEL_SIDECAR
from liquid_train.training import checkpoint as ckpt
from liquid_train.training.callbacks.base import Callback
from liquid_train.training.save_policy import SavePolicy
from liquid_train.vocab import LiquidVocab

logger = logging.getLogger(__name__)


class Checkpointer(Callback):
    def __init__(self, cfg):
        c = cfg.checkpoint
        self.cfg = c
        self.dir = ckpt.checkpoint_dir(cfg.run_dir, c.dir)
        self.manager = ckpt.CheckpointManager(self.dir, c.keep_last, c.async_save)
        self.policy = SavePolicy(c.save_interval, c.save_interval_minutes)
        self.saved_at: Optional[int] = None

    # --- resume -----------------------------------------------------------------------------------------------
    def resume_path(self) -> Optional[str]:
        """The newest checkpoint that verifies (damaged ones moved aside), or None (or resume off)."""
        return ckpt.find_resumable(self.dir, self.cfg.verify) if self.cfg.resume else None

    def load(self, trainer, path: str) -> None:
        module = trainer.module
        state = ckpt.read_trainer_state(path)
        same_layout = state.get("layout") == module.layout()
        if (state.get("layout") or {}).get("engine", "megatron") != module.layout().get("engine", "megatron"):
            raise ckpt.CheckpointError(f"{path} was written by engine={state['layout'].get('engine', 'megatron')}, "
                                       f"this run is engine={module.layout().get('engine', 'megatron')}; set "
                                       f"engine to match, or checkpoint.resume=false (or a new run_dir)")
        trainer.state.load(module.load_checkpoint(path, trainer.state.to_dict(), with_rng=same_layout))
        if not same_layout:
            logger.warning("checkpoint layout %s differs from %s: RNG streams are re-seeded, not restored",
                           state.get("layout"), module.layout())
        logger.info("resumed from %s at step %d", path, trainer.state.iteration)

    # --- save -------------------------------------------------------------------------------------------------
    def save(self, trainer) -> None:
        module, state = trainer.module, trainer.state
        sidecars = {ckpt.STATE_FILE: {**state.to_dict(), "layout": module.layout()},
                    LiquidVocab.FILENAME: module.vocab.to_dict()}
        if module.model_provider.sidecar is not None:
            sidecars[MODEL_SIDECAR] = module.model_provider.sidecar
        module.save_checkpoint(self.manager, state.iteration, state.to_dict(), sidecars)
        self.saved_at = state.iteration
        self.policy.saved(state.iteration)

    def on_step_end(self, trainer, record) -> None:
        self.manager.finalize(blocking=False)  # publish a finished async save
        due = self.policy.due(trainer.state.iteration)  # every rank asks: the time rule is agreed collectively
        if trainer.stop_reason == "preempted" or due:
            self.save(trainer)

    def on_fit_end(self, trainer) -> None:
        if trainer.stop_reason is None and self.cfg.save_at_end and self.saved_at != trainer.state.iteration:
            self.save(trainer)

    def on_close(self, trainer) -> None:
        self.manager.close()
