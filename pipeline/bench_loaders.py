"""Throughput of the loaders on this machine: DALI (CPU operators) vs the DataLoader baselines DU and CU.

``python -m pipeline.bench_loaders [--index index.h5] [--workers 2] [--batch-size 16] [--iterations 20]``

Every loader gets the same worker count (DALI: ``py_num_workers`` readers and as many operator threads; DataLoader:
``num_workers`` processes doing read, resize and augmentation), the same slides, seed and multi-crop recipe. The
clock starts after ``--warmup`` batches so worker start-up is not counted. Without ``--index`` a small synthetic
slide set is written to a temporary directory first. :func:`measure` is importable (``benchmarks`` reuses it).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DataConfig

# name -> (loader, sampling strategy)
LOADERS = {
    "dali-cpu-cu": ("dali", "cu"),
    "dali-cpu-du": ("dali", "du"),
    "dataloader-du": ("baseline", "du"),
    "dataloader-cu": ("baseline", "cu"),
}


@dataclass
class Throughput:
    name: str
    tiles_per_s: float
    batches: int
    seconds: float
    startup_s: float
    stats: dict[str, int]


def loader_config(base: DataConfig, loader: str, strategy: str) -> DataConfig:
    """``base`` with the loader and sampling strategy replaced (the CPU graph: device=cpu)."""
    sampling = dataclasses.replace(base.sampling, strategy=strategy)
    return dataclasses.replace(base, loader=loader, sampling=sampling, device="cpu", read_device="cpu")


def measure(cfg: DataConfig, iterations: int, warmup: int = 2, name: str = "", rank: int = 0) -> Throughput:
    """Tiles per second of ``build_loader(cfg)`` over ``iterations`` batches after ``warmup`` batches."""
    import torch

    from pipeline.loader import build_loader

    t0 = time.perf_counter()
    with build_loader(cfg, rank=rank, world_size=1, start_iteration=0) as loader:
        for _ in range(warmup):
            loader.next_batch()
        startup = time.perf_counter() - t0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            batch = loader.next_batch()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        del batch
        stats = loader.stats()
    return Throughput(name or cfg.loader, iterations * cfg.batch_size / seconds, iterations, seconds, startup, stats)


def synthetic_index(directory: Path, slides: int = 4) -> Path:
    """Write ``slides`` synthetic slides and their index into ``directory``; returns the index path."""
    from gapless.cli import main as gapless_main

    if gapless_main(["synth", "--out", str(directory), "--slides", str(slides)]) != 0:
        raise RuntimeError("gapless synth failed")
    index = directory / "index.h5"
    if gapless_main(["index", str(directory), "--out", str(index)]) != 0:
        raise RuntimeError("gapless index failed")
    return index


def run(index: str, workers: int, batch_size: int, iterations: int, warmup: int, names: list[str]) -> list[Throughput]:
    base = DataConfig(index=str(index), workers=workers, batch_size=batch_size, iterations_per_epoch=iterations)
    results = []
    for name in names:
        loader, strategy = LOADERS[name]
        result = measure(loader_config(base, loader, strategy), iterations, warmup, name=name)
        print(
            f"{name:15s} {result.tiles_per_s:8.1f} tiles/s  ({result.batches} batches of {batch_size} in "
            f"{result.seconds:.1f} s; start-up {result.startup_s:.1f} s; {result.stats})",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> list[Throughput]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="", help="slide index (.h5); default: synthetic slides in a temp dir")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--loaders", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or str(synthetic_index(Path(tmp)))
        print(f"index {index}; {args.workers} workers; batch {args.batch_size}; {args.iterations} batches timed")
        return run(index, args.workers, args.batch_size, args.iterations, args.warmup, args.loaders)


if __name__ == "__main__":
    main()
