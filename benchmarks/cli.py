"""``gapless bench``: loader throughput, where the time goes, and the CU-vs-DU verdict; ``gapless bench compare``.

gapless bench --quick --out runs/bench          # about 2 minutes on 2 CPU cores
gapless bench --out runs/bench-full             # the full preset
gapless bench --index my_index.h5 --set workers=8 --set scaling_workers=[1,2,4,8]
gapless bench compare runs/a/bench.json runs/b/bench.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gapless.config import ConfigError, from_dict, parse_override, to_dict


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
    p.add_argument("--quick", action="store_true", help="the quick preset (about 2 minutes on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory (default runs/bench)")
    p.add_argument("--index", default="", help="slide index to read (default: a cached synthetic SVS-like set)")
    p.add_argument("--cache-dir", type=Path, help="where the synthetic slides are kept (default ~/.cache/gapless)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a benchmark setting, e.g. --set workers=4 --set strategies=[du,cu] --set slides.level_step=2",
    )
    p.set_defaults(func=run_bench)
    sub = p.add_subparsers(dest="bench_command", metavar="compare")
    c = sub.add_parser(
        "compare",
        help="ratios of the figures of two bench.json files",
        description="Table of B / A for every figure two benchmark results share (throughput, stages, verdicts).",
    )
    c.add_argument("a", type=Path, help="result A (bench.json)")
    c.add_argument("b", type=Path, help="result B (bench.json)")
    c.set_defaults(func=run_compare)


def bench_config(quick: bool, overrides: list[str]) -> Any:
    """The preset's config with ``key=value`` overrides applied (unknown keys and bad values raise ConfigError)."""
    from benchmarks.config import preset_overrides

    data = to_dict(preset_overrides("quick" if quick else "full"))
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for part in keys[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config section '{'.'.join(keys[:-1])}' in override '{text}'")
            node = node[part]
        node[keys[-1]] = value
    from benchmarks.config import BenchConfig

    return from_dict(BenchConfig, data)


def run_bench(args: argparse.Namespace) -> int:
    from benchmarks.run import run_benchmark

    cfg = bench_config(args.quick, args.overrides)
    run_benchmark(cfg, args.out, index=args.index, cache_dir=args.cache_dir)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from benchmarks.report import print_compare

    print_compare(args.a, args.b)
    return 0
