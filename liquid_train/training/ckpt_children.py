"""Megatron's dist-checkpoint helper processes die with the trainer and stop when the run closes.

Why: megatron-core's file writer starts helper processes that nothing stops when the trainer is killed
(``kill -9``, an OOM kill): on the first save a spawn ``Manager`` (whose queue carries the write results back)
and, through it, multiprocessing's resource tracker; during each save forked writer processes (for async saves
also the forked process that runs them). After a ``kill -9`` the Manager and the tracker lived on for good, and
in a long-lived process (a notebook, a test session) the Manager outlived the run that started it.

How (``liquid_train.pdeathsig``, Linux):

- saves run inside :func:`~liquid_train.pdeathsig.tied_forks`, so every forked writer is killed when its parent
  dies;
- the Manager is started here with :func:`~liquid_train.pdeathsig.helper_initializer` (die with the trainer;
  leave SIGINT/SIGTERM/SIGUSR1 sent to the whole process group, e.g. by SLURM before a preemption, to the
  trainer, which still needs the Manager to write its preemption checkpoint) and installed as megatron's
  write-results queue (``filesystem_async._results_queue``, which megatron otherwise creates lazily with a
  Manager of its own); :func:`release_results_queue` shuts it down when its checkpoint manager closes or is
  garbage collected (a run that ended on an error in a long-lived process);
- the resource tracker exits by itself once every process holding its pipe (the trainer and the above) is gone.
"""
from __future__ import annotations

import logging
import os
import threading
from multiprocessing.managers import SyncManager

from megatron.core.dist_checkpointing.strategies import filesystem_async
from torch import multiprocessing as mp

from liquid_train.pdeathsig import helper_initializer, tied_forks  # noqa: F401  (tied_forks: re-exported)

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_manager = None
_manager_pid = None  # the process that started _manager (a forked child must not shut it down)
_owner = None  # the token of the checkpoint manager it serves


def install_results_queue(owner: object) -> None:
    """Give megatron's file writer a results queue served by a Manager that dies with this process; ``owner``
    (any token) is the one allowed to release it."""
    global _manager, _manager_pid, _owner

    if not hasattr(filesystem_async, "_results_queue"):
        logger.warning("megatron-core has no filesystem_async._results_queue (expected in 0.16.1): its writer "
                       "Manager is megatron's own and is not tied to this process")
        return
    with _lock:
        if _manager is not None and _manager_pid == os.getpid():
            _owner = owner
            return

        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(initializer=helper_initializer, initargs=(os.getpid(),))
        filesystem_async._results_queue = manager.Queue()
        _manager, _manager_pid, _owner = manager, os.getpid(), owner


def release_results_queue(owner: object) -> None:
    """Shut down the Manager if ``owner`` holds it; megatron makes a new queue if it needs one later."""
    global _manager, _manager_pid, _owner
    with _lock:
        if _manager is None or _owner is not owner or _manager_pid != os.getpid():
            return
        manager = _manager
        _manager = _manager_pid = _owner = None

        filesystem_async._results_queue = None
        manager.shutdown()
