"""The callback interface of the training loop (``liquid_train.training.trainer.Trainer``).

Every hook runs on every rank, in the order of the trainer's callback list, so a hook may run collectives (an
evaluation, a checkpoint, the preemption vote) as long as all ranks take the same branch. ``on_close`` runs in a
``finally``: release processes, files and handlers there, whether the fit ended, stopped or failed.
"""
from __future__ import annotations

from typing import Any, Dict


class Callback:
    def on_fit_start(self, trainer) -> None:
        """Before the first step of this launch (after any resume)."""

    def on_step_end(self, trainer, record: Dict[str, Any]) -> None:
        """After each optimizer step; ``record`` is the step's ``kind: train`` metrics record."""

    def on_record(self, trainer, record: Dict[str, Any]) -> None:
        """A metrics record (train, valid, data, ...) emitted through ``trainer.log``."""

    def on_image(self, trainer, tag: str, path: str, step: int) -> None:
        """A PNG written for ``step`` (``trainer.log_image``)."""

    def on_fit_end(self, trainer) -> None:
        """After the last step, when the loop ended without an exception (``trainer.stop_reason`` says why)."""

    def on_close(self, trainer) -> None:
        """Always, last."""
