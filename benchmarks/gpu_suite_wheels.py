"""Download the wheels the GPU suite needs on a bare single-GPU machine (Python 3.12, torch + CUDA, no
megatron-core, no network) into ``.whl/``, check that they and the working tree fit the 64 MiB that can be
carried, and print the command that runs ``benchmarks/gpu_suite.py`` there (``liquid_train.gpu_suite.wheels``).

    python benchmarks/gpu_suite_wheels.py [--dest .whl] [--list]
"""
import sys

from liquid_train.gpu_suite.wheels import main

if __name__ == "__main__":
    sys.exit(main())
