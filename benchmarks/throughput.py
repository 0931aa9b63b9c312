"""Loader throughput: tiles per second, warmed up, measured in repeated windows (median, min, max).

One tile is one sample's whole multi-crop output (2 global + N local crops). A loader is built once per (loader,
strategy, workers); its first ``warmup_batches`` batches absorb worker start-up and queue filling; then ``repeats``
windows of at least ``batches_per_repeat`` batches and ``min_window_s`` seconds each are timed back to back. On a GPU
every window ends with ``torch.cuda.synchronize()`` so that queued device work is counted. Memory peaks cover the
loader's whole life.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gapless.benchmarks.config import REFERENCE
from gapless.benchmarks.floor import BareLoop
from gapless.benchmarks.monitor import MemoryMonitor, tree_cpu_seconds
from gapless.pipeline.config import DataConfig
from gapless.pipeline.loader import build_loader


@dataclass
class Throughput:
    """Measured rate of one loader configuration; ``rates`` holds one tiles/s figure per window."""

    loader: str  # dali | baseline | synthetic | reference (the bare floor loop)
    strategy: str
    workers: int
    batch_size: int
    rates: list[float]
    startup_s: float
    mode: str = "multicrop"  # multicrop | plain (one un-augmented base tile per sample)
    cpu_ms_per_tile: list[float] = field(default_factory=list)  # per window, process tree
    memory: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    error: str = ""  # the measurement failed
    warning: str = ""  # something went wrong after the measurement (e.g. a worker dying at shutdown)

    @property
    def median(self) -> float:
        return float(statistics.median(self.rates)) if self.rates else float("nan")

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        lo, hi = (min(self.rates), max(self.rates)) if self.rates else (float("nan"), float("nan"))
        out.update(median=self.median, min=lo, max=hi)
        return out


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def window_rates(
    next_batch: Callable[[], Any], batch_size: int, warmup: int, batches: int, repeats: int, min_window_s: float = 0.0
) -> tuple[list[float], list[float]]:
    """Tiles/s and CPU ms per tile of ``repeats`` windows of ``batches`` calls to ``next_batch`` after ``warmup``.

    A window lasts at least ``min_window_s``: on a fast machine a few batches come straight out of the prefetch
    queue, and a window that short measures the queue, not the loader. CPU time is summed over the process tree
    (workers included): unlike wall-clock rates it hardly changes when other programs compete for the cores, so it
    separates a loader's own cost from a busy machine's noise.
    """
    for _ in range(warmup):
        next_batch()
    _sync()
    rates, cpu_ms = [], []
    for _ in range(repeats):
        cpu0, start = tree_cpu_seconds(), time.perf_counter()
        done = 0
        while done < batches or time.perf_counter() - start < min_window_s:
            next_batch()
            done += 1
        _sync()
        wall, cpu = time.perf_counter() - start, tree_cpu_seconds() - cpu0
        rates.append(done * batch_size / wall)
        cpu_ms.append(1e3 * cpu / (done * batch_size))
    return rates, cpu_ms


def loader_config(base: DataConfig, loader: str, strategy: str, workers: int, mode: str = "multicrop") -> DataConfig:
    """``base`` with loader, sampling strategy, worker count and mode replaced (devices stay 'auto': GPU if present).

    ``dali-gpudecode``, ``dali-cuslide2`` and ``dali-dalidecode`` are the DALI loader decoding on the GPU
    (``read_device=cuda``, ``device=gpu``) with ``gpu_decode`` batched, cuslide2 and dali; ``plain`` mode makes one
    un-augmented base tile per sample (:func:`gapless.benchmarks.config.plain_augment`); the ``reference`` loop runs
    in one process.
    """
    from gapless.benchmarks.config import plain_augment

    sampling = dataclasses.replace(base.sampling, strategy=strategy)
    augment = plain_augment(base.augment) if mode == "plain" else base.augment
    gpu_decode = {"dali-gpudecode": "batched", "dali-cuslide2": "cuslide2", "dali-dalidecode": "dali"}
    if loader in gpu_decode:
        return dataclasses.replace(base, loader="dali", device="gpu", read_device="cuda", sampling=sampling,
                                   workers=workers, gpu_decode=gpu_decode[loader], augment=augment)  # fmt: skip
    if loader == REFERENCE:
        return dataclasses.replace(base, loader="baseline", sampling=sampling, workers=0, augment=augment)
    return dataclasses.replace(base, loader=loader, sampling=sampling, workers=workers, augment=augment)


def build(loader: str, cfg: DataConfig) -> Any:
    """The loader (or the bare floor loop) named ``loader``, configured by ``cfg``."""
    if loader == REFERENCE:
        return BareLoop(cfg)
    return build_loader(cfg)


def measure_loader(
    cfg: DataConfig,
    warmup: int,
    batches: int,
    repeats: int,
    device: str = "cpu",
    min_window_s: float = 0.0,
    name: str = "",
    mode: str = "multicrop",
) -> Throughput:
    """Throughput of ``gapless.pipeline.loader.build_loader(cfg)`` (or of the loop ``name``: see :func:`build`).

    A failure (a loader that cannot start or dies) is recorded in ``error`` rather than raised: one broken
    configuration must not cost the rest of the run.
    """
    name = name or cfg.loader
    result = Throughput(name, cfg.sampling.strategy, cfg.workers, cfg.batch_size, [], 0.0, mode=mode, device=device)
    monitor = MemoryMonitor()
    loader = None
    with monitor:
        try:
            t0 = time.perf_counter()
            loader = build(name, cfg)
            next_batch = loader.next_batch
            next_batch()  # the first batch includes worker start-up
            result.startup_s = time.perf_counter() - t0
            result.rates, result.cpu_ms_per_tile = window_rates(
                next_batch, cfg.batch_size, max(0, warmup - 1), batches, repeats, min_window_s
            )
            result.stats = dict(loader.stats())
        except Exception as exc:  # recorded and reported; the run goes on with the next configuration
            result.error = f"{type(exc).__name__}: {exc}"
        try:
            if loader is not None:
                loader.close()
        except Exception as exc:  # the figures stand; say what happened
            result.warning = f"at shutdown: {type(exc).__name__}: {exc}"
    if monitor.result is not None:
        result.memory = monitor.result.as_dict()
    return result
