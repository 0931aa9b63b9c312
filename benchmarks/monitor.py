"""Peak memory while a loader runs: RSS of this process and all its children, the largest RSS and unique set size
(USS: what ending it frees; RSS also counts shared library pages) of one child (a loader worker), and GPU memory.

A background thread samples every ``interval`` seconds (half a second: the thread's own CPU time counts towards
the loader's, so it samples rarely; a USS read costs milliseconds per process and is taken every ``uss_every``
samples). RSS is summed over the process tree (DataLoader workers and DALI's source workers are children), so a
loader's workers count. GPU memory is the device's used memory
(``cudaMemGetInfo``), not only PyTorch's allocator: DALI and cuCIM allocate outside it. Both are reported as a
peak and as the rise over what was in use when the monitor started.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


def _tree() -> list[Any]:
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def tree_rss_bytes() -> int:
    """RSS of this process and all its descendants (DataLoader and DALI source workers are children), bytes."""
    return sum(tree_rss())


def tree_rss() -> list[int]:
    """RSS of this process, then of each of its live descendants, bytes."""
    import psutil

    out = []
    for proc in _tree():
        try:
            out.append(proc.memory_info().rss)
        except psutil.Error:  # a child that just exited
            continue
    return out


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants."""
    import psutil

    total = 0.0
    for proc in _tree():
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def children_uss() -> list[int]:
    """Unique set size of each live descendant, bytes: the memory that ending it would free (slower to read)."""
    import psutil

    out = []
    for proc in _tree()[1:]:
        try:
            out.append(proc.memory_full_info().uss)
        except psutil.Error:
            continue
    return out


def gpu_used_bytes() -> int | None:
    """Used memory of the current CUDA device (all allocators), or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return int(total - free)


@dataclass
class MemoryPeak:
    rss_start_mib: float
    rss_peak_mib: float
    worker_rss_peak_mib: float | None  # the largest RSS any one descendant (a loader worker) reached
    worker_uss_peak_mib: float | None  # ... and the largest unique set size (sampled every uss_every samples)
    gpu_start_mib: float | None
    gpu_peak_mib: float | None
    torch_peak_mib: float | None  # PyTorch's allocator alone

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MemoryMonitor:
    """``with MemoryMonitor() as mon: ...``; then ``mon.result``: the :class:`MemoryPeak` of the block."""

    def __init__(self, interval: float = 0.5, uss_every: int = 4) -> None:
        self.interval, self.uss_every = interval, uss_every
        self._samples = 0
        self._children = 0
        self._uss_peak: int | None = None
        self._stop = threading.Event()
        self._rss_peak = 0
        self._worker_peak: int | None = None
        self._gpu_peak: int | None = None
        self.result: MemoryPeak | None = None

    def _sample(self) -> None:
        rss = tree_rss()
        self._rss_peak = max(self._rss_peak, sum(rss))
        if len(rss) > 1:
            self._worker_peak = max(self._worker_peak or 0, *rss[1:])
        # USS every few samples, and as soon as workers appear (a short measurement may end before the next one).
        if self._samples % self.uss_every == 0 or len(rss) - 1 > self._children:
            self._children = len(rss) - 1
            uss = children_uss()
            if uss:
                self._uss_peak = max(self._uss_peak or 0, *uss)
        self._samples += 1
        gpu = gpu_used_bytes()
        if gpu is not None:
            self._gpu_peak = max(self._gpu_peak or 0, gpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemoryMonitor:
        self._rss_start = tree_rss_bytes()
        self._gpu_start = gpu_used_bytes()
        self._cuda = self._gpu_start is not None
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        mib = 1.0 / 2**20
        torch_peak = None
        if self._cuda:
            import torch

            torch_peak = torch.cuda.max_memory_allocated() * mib
        self.result = MemoryPeak(
            rss_start_mib=self._rss_start * mib,
            rss_peak_mib=self._rss_peak * mib,
            worker_rss_peak_mib=None if self._worker_peak is None else self._worker_peak * mib,
            worker_uss_peak_mib=None if self._uss_peak is None else self._uss_peak * mib,
            gpu_start_mib=None if self._gpu_start is None else self._gpu_start * mib,
            gpu_peak_mib=None if self._gpu_peak is None else self._gpu_peak * mib,
            torch_peak_mib=torch_peak,
        )
