"""One way to run a multi-process test: ``torchrun`` (gloo on CPU) over a module, with a free port, one torch
thread per process (two processes on a 2-core machine oversubscribe otherwise) and an environment cleaned of the
parent's rendezvous variables (a pytest process that was itself launched by torchrun must not leak its port)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

_RENDEZVOUS_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Optional[Dict[str, str]] = None, threads: int = 1) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RENDEZVOUS_KEYS}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


def command(module: str, args: Sequence[str], nproc: int = 1) -> List[str]:
    """``python -m module args`` for one process, ``python -m torch.distributed.run ... -m module args`` for more."""
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            f"--master-port={free_port()}", "-m", module, *args]


def run_distributed(module: str, args: Sequence[str], nproc: int = 1, timeout: float = 600,
                    env: Optional[Dict[str, str]] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``module`` with ``nproc`` processes; with ``check`` a non-zero exit raises with the output's tail."""
    out = subprocess.run(command(module, args, nproc), env=clean_env(env), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} (nproc={nproc}) exited {out.returncode}:\n"
                             f"{out.stdout[-6000:]}")
    return out
