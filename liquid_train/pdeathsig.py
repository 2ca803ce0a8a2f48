"""Child processes that die with their parent (Linux ``prctl(PR_SET_PDEATHSIG)``).

Why: a process started by the trainer (a checkpoint writer, a multiprocessing Manager) is not stopped by
anything when the trainer is killed with ``kill -9``; it is reparented and lives on. With a parent-death signal
the kernel sends it ``SIGKILL`` as soon as its parent dies.

Two ways in:

- :func:`die_with_parent` (or :func:`helper_initializer`, which also leaves the process group's preemption
  signals to the parent) as the initializer of a spawned process (``SyncManager.start(initializer=...)``);
- :func:`tied_forks`: processes forked while it is entered (through ``os.fork``, ``multiprocessing`` fork
  contexts) ask for the signal in an ``os.register_at_fork`` child hook. The flag is inherited by the forked
  child, so its own forks are tied to it in turn. Forks outside the block are untouched.

The kernel sends the signal when the *thread* that forked the child exits, so use it from a thread that lives as
long as the process (the main thread). This module imports only the standard library, so that it is cheap to
import in a freshly spawned interpreter. Elsewhere than Linux it does nothing.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_active = False
_forking_pid: Optional[int] = None


def die_with_parent(parent_pid: Optional[int] = None) -> None:
    """Ask for SIGKILL when the parent dies; exit at once if the parent (``parent_pid``) is already gone."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request was in place


def helper_initializer(parent_pid: int, ignore=(int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGUSR1))) -> None:
    """Initializer for a helper server (a multiprocessing Manager): the signals a terminal or a job scheduler sends
    to the whole process group (Ctrl-C, SLURM's SIGTERM/SIGUSR1 before preemption) are for the parent to act on
    (it checkpoints through the helper, then stops it), so the helper ignores them; it dies with its parent."""
    for sig in ignore:
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(parent_pid)


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    if _active:
        die_with_parent(_forking_pid)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


@contextmanager
def tied_forks() -> Iterator[None]:
    """Processes forked inside this block (and their own forks) are killed when their parent dies."""
    global _active
    previous, _active = _active, True
    try:
        yield
    finally:
        _active = previous
