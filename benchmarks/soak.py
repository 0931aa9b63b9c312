"""Resident-memory soak test of a loader: RSS of the process and its workers over many iterations.

``python -m gapless.benchmarks.soak [--index index.h5] [--loader dali] [--iterations 5000] [--batch-size 4]``

A bounded pipeline (LRU slide-handle caches, fixed-depth queues) keeps a flat RSS once warm. The script records the
summed RSS (main process and every child: DALI's source workers or DataLoader workers) every ``--every``
iterations, and prints the drift between the first sample after ``--warmup`` iterations and the last, and the
slope of a least-squares line through the samples (MiB per 1000 iterations). :func:`soak` is importable.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from gapless.benchmarks.config import SlideSetConfig
from gapless.benchmarks.monitor import tree_rss_bytes
from gapless.benchmarks.slideset import prepare
from gapless.pipeline.config import DataConfig


def tree_rss_mib() -> float:
    """RSS of this process and all its descendants, MiB."""
    return tree_rss_bytes() / 2**20


def soak(cfg: DataConfig, iterations: int, every: int = 50, warmup: int = 100) -> dict[str, float]:
    """Run ``iterations`` batches; returns RSS at start/end (after warm-up), drift and slope."""
    from gapless.pipeline.loader import build_loader

    samples: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    with build_loader(cfg, rank=0, world_size=1, start_iteration=0) as loader:
        for it in range(iterations):
            loader.next_batch()
            if it >= warmup and (it - warmup) % every == 0 or it == iterations - 1:
                samples.append((it, tree_rss_mib()))
                print(f"iteration {it:6d}  rss {samples[-1][1]:8.1f} MiB", flush=True)
        stats = loader.stats()
    seconds = time.perf_counter() - t0
    its = np.array([s[0] for s in samples], dtype=np.float64)
    rss = np.array([s[1] for s in samples])
    slope = float(np.polyfit(its, rss, 1)[0] * 1000) if len(samples) > 2 else float("nan")
    result = {
        "iterations": iterations,
        "rss_first_mib": float(rss[0]),
        "rss_last_mib": float(rss[-1]),
        "rss_max_mib": float(rss.max()),
        "drift_mib": float(rss[-1] - rss[0]),
        "slope_mib_per_1000_it": slope,
        "seconds": seconds,
        **{f"stat_{k}": float(v) for k, v in stats.items()},
    }
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="", help="slide index (.h5); default: the benchmark's cached synthetic set")
    parser.add_argument("--loader", default="dali", choices=["dali", "baseline"])
    parser.add_argument("--strategy", default="cu")
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    index = args.index or str(prepare(SlideSetConfig(slides=2, side_px=4096)).index)
    base = DataConfig(
        index=index,
        loader=args.loader,
        batch_size=args.batch_size,
        workers=args.workers,
        device="cpu",
        read_device="cpu",
        iterations_per_epoch=args.iterations,
    )
    cfg = dataclasses.replace(base, sampling=dataclasses.replace(base.sampling, strategy=args.strategy))
    result = soak(cfg, args.iterations, args.every, min(args.warmup, args.iterations // 2))
    print(
        f"{args.loader}/{args.strategy}: {args.iterations} iterations of {args.batch_size} in "
        f"{result['seconds']:.0f} s; RSS {result['rss_first_mib']:.1f} -> {result['rss_last_mib']:.1f} MiB "
        f"(drift {result['drift_mib']:+.1f} MiB, slope {result['slope_mib_per_1000_it']:+.2f} MiB/1000 it, "
        f"max {result['rss_max_mib']:.1f} MiB)"
    )
    return result


if __name__ == "__main__":
    main()
