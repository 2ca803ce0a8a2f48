"""liquid-train: pretraining framework for Liquid-style unified multimodal models.

Install torch first (the CPU wheel on CPU machines, the CUDA build on GPU nodes), then
``pip install -e .[dev]``; ``launch/setup_env.sh`` does both. ``.[gpu]`` adds Transformer Engine
(GPU nodes only: it cannot be installed, and breaks ``import megatron.core``, without CUDA).
NVIDIA apex is optional and built from NVIDIA's sources; the PyPI project named ``apex`` is unrelated.
"""
from setuptools import find_packages, setup

setup(
    name="liquid-train",
    version="0.1.0",
    description="Megatron-core pretraining of Liquid unified multimodal (text + VQ image token) models",
    python_requires=">=3.10",
    packages=find_packages(include=["liquid_train", "liquid_train.*", "data_pipeline", "data_pipeline.*", "tools", "tools.*"]),
    install_requires=[
        "torch>=2.4",
        # Tested range (docs/training.md "Versions"): CI pins 0.16.1 (requirements/constraints-cpu.txt, Python 3.11);
        # 0.17+ needs Python >= 3.12 and imports triton from 0.18 on (CUDA builds of torch bring it).
        "megatron-core>=0.16.1,<0.19",
        "transformers>=4.57,<6",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "numpy>=1.26",
        "numba>=0.60",  # compiled loops of the mixed-task index (liquid_train/data/kernels.py)
        "omegaconf>=2.3",
        "webdataset>=0.2.100",
        "pillow>=10",
        "pyarrow>=15",
        "zstandard>=0.22",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "rich>=13",
        "psutil>=5.9",  # megatron-core's dist-checkpoint writer needs it but does not declare it
        "einops>=0.7",
        "pyyaml>=6",
        "tensorboard>=2.15",
        "wandb>=0.17",
        "xxhash>=3.4",  # checkpoint manifests (liquid_train/training/ckpt_manifest.py)
        "threadpoolctl>=3.1",  # one BLAS thread for the scaling-law fits (tools/scaling_laws.py)
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"],
        "gpu": ["transformer-engine[pytorch]>=2.0"],
    },
    entry_points={
        "console_scripts": [
            "liquid-train=liquid_train.cli:main",
            "liquid-data=data_pipeline.__main__:main",
        ]
    },
)
