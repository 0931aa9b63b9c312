"""Draws per second of every sampling strategy (10^6 draws, after a warm-up), printed as a table and JSON.

python -m gapless.benchmarks.sampling_draws [--n 1000000] [--repeats 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from gapless.console import console, table
from gapless.io import write_json
from gapless.pipeline.sampling import SamplingConfig, build_distribution
from gapless.pipeline.sampling.config import PAPER_STRATEGIES

STRATEGIES = ("fixed", *PAPER_STRATEGIES)


def measure(strategy: str, n: int, repeats: int) -> dict[str, float]:
    t0 = time.perf_counter()
    dist = build_distribution(SamplingConfig(strategy=strategy))
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    dist.sample(n, rng)  # warm-up: first-touch allocations
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dist.sample(n, rng)
        times.append(time.perf_counter() - t0)
    rates = n / np.array(times)
    return {"build_s": build_s, "median": float(np.median(rates)), "min": float(rates.min()), "max": float(rates.max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args(argv)
    results = {s: measure(s, args.n, args.repeats) for s in STRATEGIES}
    rows = [[s, r["median"] / 1e6, r["min"] / 1e6, r["max"] / 1e6, r["build_s"]] for s, r in results.items()]
    console.print(
        table(
            f"Sampling: {args.n:,} draws, {args.repeats} repeats",
            ["strategy", "M draws/s (median)", "min", "max", "build s"],
            rows,
        )
    )
    if args.json:
        write_json({"n": args.n, "repeats": args.repeats, "strategies": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
