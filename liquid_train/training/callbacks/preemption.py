"""Preemption: SIGTERM / SIGUSR1 (``liquid_train.training.signals``) become a stop request at the next step
boundary, agreed across ranks by one all-reduce, so every rank checkpoints and exits together (the checkpointer,
after this callback, saves on ``trainer.stop_reason == "preempted"``)."""
from __future__ import annotations

import logging

from liquid_train.training.callbacks.base import Callback
from liquid_train.training.signals import PreemptionHandler

logger = logging.getLogger(__name__)


class Preemption(Callback):
    def __init__(self):
        self.handler = PreemptionHandler()
        self._entered = False

    def on_fit_start(self, trainer) -> None:
        self.handler.__enter__()
        self._entered = True

    def on_step_end(self, trainer, record) -> None:
        if self.handler.any_rank_signalled():
            logger.warning("preemption signal received: checkpointing at step %d and exiting",
                           trainer.state.iteration)
            trainer.request_stop("preempted")

    def on_close(self, trainer) -> None:
        if self._entered:
            self.handler.__exit__(None, None, None)
            self._entered = False
