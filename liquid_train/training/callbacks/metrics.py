"""Metrics sinks as a callback: every record goes to ``metrics.jsonl`` (always), TensorBoard and wandb
(``liquid_train.training.metrics.MetricsLogger``), on the logging rank only."""
from __future__ import annotations

from liquid_train.training.callbacks.base import Callback
from liquid_train.training.metrics import MetricsLogger


class MetricsSink(Callback):
    def __init__(self, cfg, resume_step: int, enabled: bool, config: dict):
        log = cfg.logging
        self.logger = MetricsLogger(cfg.run_dir, enabled=enabled, resume_step=resume_step,
                                    tensorboard=log.tensorboard, wandb_mode=log.wandb_mode,
                                    wandb_project=log.wandb_project, wandb_name=log.wandb_name, config=config)

    def on_record(self, trainer, record) -> None:
        self.logger.log(record)

    def on_image(self, trainer, tag, path, step) -> None:
        self.logger.log_image(tag, path, step)

    def on_close(self, trainer) -> None:
        self.logger.close()
