"""Worker processes that end with the process that started them.

Index workers (``gapless index --workers N``), DALI's source workers, DataLoader workers and the GPU reader's
planner processes are spawned by a parent. When the parent is killed (kill -9, the out-of-memory killer, a
preemption that does not wait), workers that are not told go on running, each holding its share of memory
(hundreds of MB with slide handles and DALI buffers) or waiting forever on a queue nobody writes to, and keep
multiprocessing's resource tracker alive with them. A worker that calls :func:`die_with_parent` when it starts
asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``) and also checks its parent's process
id once a second, which covers other systems and a parent thread that ends before its process. The resource
tracker ends by itself once the last process holding its pipe (parent and workers) is gone.

:class:`ParentBound` carries the parent's process id through pickling: the tile source, which every kind of loader
worker receives pickled (inside DALI's source callback, the DataLoader's dataset, the planner pool's initializer),
binds the worker that unpickles it; :func:`worker_pool` is a process pool whose workers are bound when they start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
_WATCH_INTERVAL_S = 1.0
_bound: int | None = None  # the parent this process is bound to, once die_with_parent ran


def _watch(parent: int) -> None:
    while True:
        time.sleep(_WATCH_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Run in a worker process: end it as soon as process ``parent`` (its parent) is gone. Idempotent."""
    global _bound
    if _bound == parent:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: the watcher thread alone
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="gapless-watch-parent").start()
    _bound = parent


class ParentBound:
    """Mixin for objects sent to spawned workers: unpickling one in a child of the process that pickled it calls
    :func:`die_with_parent` there. Unpickling anywhere else (the same process, an unrelated one) changes nothing."""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_parent_pid": os.getpid()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        parent = state.pop("_parent_pid", None)
        self.__dict__.update(state)
        if parent is not None and parent != os.getpid() and os.getppid() == parent:
            die_with_parent(parent)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that die with this one."""
    import multiprocessing

    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
    )
