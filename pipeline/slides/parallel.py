"""Worker processes that die with their parent.

``gapless index --workers N`` reads slides in a pool of spawned processes. If the parent is killed (kill -9, an
out-of-memory kill, a SLURM preemption that does not wait), an ordinary pool's workers go on running, then wait
forever on a queue nobody writes to. Workers of :func:`worker_pool` ask the kernel to kill them when their parent
dies (Linux ``PR_SET_PDEATHSIG``) and also watch their parent's process id once a second, which covers other
systems and a parent thread that exits early.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def die_with_parent(parent: int) -> None:
    """Run in a worker when it starts: it ends as soon as process ``parent`` is gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # not Linux: the watcher thread alone
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that die with this one."""
    import multiprocessing

    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
    )
