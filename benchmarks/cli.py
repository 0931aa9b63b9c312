"""``gapless bench``: loader throughput, where the time goes, and the CU-vs-DU verdict.

gapless bench --quick --out runs/bench          # the quick preset
gapless bench --out runs/bench-full             # the full preset
gapless bench --index my_index.h5 workers=8 scaling_workers=[1,2,4,8]
gapless bench --compare runs/a/bench.json runs/b/bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gapless.config import from_dict, parse_override, to_dict
from gapless.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the loaders (throughput, stage breakdown, memory, scaling) and the CU-vs-DU cost",
        description=(
            "Measure tiles/s of the DALI pipeline and the DataLoader baseline under DU, CU, CU-MAXAVG and "
            "CU-MINMAX sampling, the time per stage, decoded pixels, memory, scaling with workers and the "
            "trainer's consumption rate; write bench.json, tables and plots."
        ),
    )
    p.add_argument("--quick", action="store_true", help="the quick preset: fewer strategies, windows and passes")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory (default runs/bench)")
    p.add_argument("--index", default="", help="slide index to read (default: a cached synthetic SVS-like set)")
    p.add_argument("--cache-dir", type=Path, help="where the synthetic slides are kept (default ~/.cache/gapless)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override a benchmark setting, e.g. workers=4 strategies=[du,cu] slides.level_step=2",
    )
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                   help="instead of measuring: ratios B / A of the figures two bench.json files share")  # fmt: skip
    p.set_defaults(func=run_bench)


def bench_config(quick: bool, overrides: list[str]) -> Any:
    """The preset's config with ``key=value`` overrides applied (unknown keys and bad values raise ConfigError)."""
    from gapless.benchmarks.config import preset_overrides

    data = to_dict(preset_overrides("quick" if quick else "full"))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for part in keys[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config section '{'.'.join(keys[:-1])}' in override '{text}'")
            node = node[part]
        node[keys[-1]] = value
    from gapless.benchmarks.config import BenchConfig

    return from_dict(BenchConfig, data)


def run_bench(args: argparse.Namespace) -> int:
    if args.compare:
        from gapless.benchmarks.report import print_compare

        print_compare(*args.compare)
        return 0
    from gapless.benchmarks.run import run_benchmark

    cfg = bench_config(args.quick, args.overrides)
    run_benchmark(cfg, args.out, index=args.index, cache_dir=args.cache_dir)
    return 0
