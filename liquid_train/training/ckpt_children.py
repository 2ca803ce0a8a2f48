"""Megatron's dist-checkpoint helper processes die with the trainer and stop when the run closes.

Why: megatron-core's file writer starts helper processes that nothing stops when the trainer is killed
(``kill -9``, an OOM kill): on the first save a spawn ``Manager`` (whose queue carries the write results back)
and, through it, multiprocessing's resource tracker; during each save forked writer processes (for async saves
also the forked process that runs them). After a ``kill -9`` the Manager and the tracker lived on for good, and
in a long-lived process (a notebook, a test session) the Manager outlived the run that started it.

How (``liquid_train.pdeathsig``, Linux):

- saves run inside :func:`~liquid_train.pdeathsig.tied_forks`, so every forked writer is killed when its parent
  dies;
- the Manager is started here with :func:`~liquid_train.pdeathsig.die_with_parent` as its initializer and
  installed as megatron's write-results queue (``filesystem_async._results_queue``, which megatron otherwise
  creates lazily with a Manager of its own); :func:`release_results_queue` shuts it down when the checkpoint
  manager closes;
- the resource tracker exits by itself once every process holding its pipe (the trainer and the above) is gone.
"""
from __future__ import annotations

import logging
import os
import threading

from liquid_train.pdeathsig import die_with_parent, tied_forks  # noqa: F401  (tied_forks: re-exported)

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_manager = None
_manager_pid = None  # the process that owns _manager (a forked child must not shut it down)


def install_results_queue() -> None:
    """Give megatron's file writer a results queue served by a Manager that dies with this process."""
    global _manager, _manager_pid
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from torch import multiprocessing as mp

    if not hasattr(filesystem_async, "_results_queue"):
        logger.warning("megatron-core has no filesystem_async._results_queue (expected in 0.16.1): its writer "
                       "Manager is megatron's own and is not tied to this process")
        return
    with _lock:
        if _manager is not None and _manager_pid == os.getpid():
            return
        from multiprocessing.managers import SyncManager

        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(initializer=die_with_parent, initargs=(os.getpid(),))
        filesystem_async._results_queue = manager.Queue()
        _manager, _manager_pid = manager, os.getpid()


def release_results_queue() -> None:
    """Shut down the Manager of :func:`install_results_queue`; megatron makes a new queue if it needs one."""
    global _manager, _manager_pid
    with _lock:
        manager, owner = _manager, _manager_pid
        _manager = _manager_pid = None
        if manager is None or owner != os.getpid():
            return
        from megatron.core.dist_checkpointing.strategies import filesystem_async

        filesystem_async._results_queue = None
        manager.shutdown()
