"""T2I sample grids every ``sampling.interval`` steps (``liquid_train.training.sampling``)."""
from __future__ import annotations

from liquid_train.training.callbacks.base import Callback
from liquid_train.training.sampling import log_t2i_samples


class T2ISamples(Callback):
    def __init__(self, sampling_cfg):
        self.interval = sampling_cfg.interval

    def on_step_end(self, trainer, record) -> None:
        if trainer.state.iteration % self.interval == 0:
            log_t2i_samples(trainer)
