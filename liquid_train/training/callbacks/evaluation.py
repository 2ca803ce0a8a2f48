"""Validation every ``train.eval_interval`` steps and at the end: a ``kind: valid`` record (loss per task and
overall), then, from the logging rank, a ``kind: data`` record of the training stream (packing efficiency, samples
and epochs per task and source)."""
from __future__ import annotations

from liquid_train.training.callbacks.base import Callback


class Evaluation(Callback):
    def __init__(self, interval: int, eval_iters: int):
        self.interval, self.eval_iters = interval, eval_iters

    def evaluate(self, trainer) -> None:
        state, data, module = trainer.state, trainer.data, trainer.module
        if data.valid_iterators is not None:
            iterators = data.valid_iterators(trainer.cfg.train.micro_batch_size, module.dp_rank, module.dp)
            trainer.log({"kind": "valid", "step": state.iteration, **module.evaluate(iterators, self.eval_iters),
                         "consumed_tokens": state.consumed_tokens, "flops": state.flops})
        if data.report is not None and trainer.is_logging_rank:
            trainer.log({"kind": "data", "step": state.iteration, **data.report(state.consumed_samples)})

    def on_step_end(self, trainer, record) -> None:
        if self.interval and trainer.state.iteration % self.interval == 0:
            self.evaluate(trainer)

    def on_fit_end(self, trainer) -> None:
        it = trainer.state.iteration
        if trainer.stop_reason is None and self.interval and it % self.interval != 0 and \
                it >= trainer.cfg.train.iters:
            self.evaluate(trainer)
