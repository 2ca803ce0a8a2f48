"""The progress bar (logging rank): steps, loss and tokens/s."""
from __future__ import annotations

from tqdm import tqdm

from liquid_train.training.callbacks.base import Callback


class Progress(Callback):
    def __init__(self):
        self.bar = None

    def on_fit_start(self, trainer) -> None:
        self.bar = tqdm(total=trainer.cfg.train.iters, initial=trainer.state.iteration, desc="train", unit="step",
                        dynamic_ncols=True)

    def on_step_end(self, trainer, record) -> None:
        self.bar.update(1)
        loss = record["loss"]
        self.bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "nan", tok_s=f"{record['tokens_per_s']:.0f}")

    def on_close(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()
