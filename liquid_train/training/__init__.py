"""The Liquid mix-pretraining trainer on megatron-core: ``run(cfg)`` programmatically, ``liquid-train`` on the CLI."""
from liquid_train.training.config import ConfigError, RunConfig, load_config, validate
from liquid_train.training.providers import DataProvider, ModelProvider
from liquid_train.training.train_module import TrainingAborted, TrainModule
from liquid_train.training.trainer import Trainer, TrainState, run

__all__ = ["ConfigError", "RunConfig", "load_config", "validate", "DataProvider", "ModelProvider", "TrainingAborted",
           "TrainModule", "Trainer", "TrainState", "run"]
