"""The Liquid mix-pretraining trainer on megatron-core: ``run(cfg)`` programmatically, ``liquid-train`` on the CLI."""
from liquid_train.training.config import ConfigError, RunConfig, load_config, validate  # noqa: F401
from liquid_train.training.trainer import (DataProvider, ModelProvider, Trainer, TrainingAborted,  # noqa: F401
                                           run)
