"""Mixed-task training data: Liquid templates, exact text:T2I:I2T ratios, packing, deterministic resume.

See docs/data_mixture.md. The trainer needs only `DataConfig`, `load_data_config`, `build_datasets` and
`build_data_loader`; batches are described in `liquid_train.data.packing`.
"""
from liquid_train.data.config import DataConfig, load_data_config
from liquid_train.data.builder import PackedMixtureDataset, build_data_loader, build_datasets
from liquid_train.data.packing import collate_packed

__all__ = ["DataConfig", "load_data_config", "build_datasets", "build_data_loader", "PackedMixtureDataset",
           "collate_packed"]
