"""`gapless sampling`: compare magnification-sampling strategies, plot them, and draw target mpps.

gapless sampling [--strategies du cu maxavg minmax] [--range A B] [--lam L] [--kernel K] [--grid N]
                 [--json OUT.json] [--plot OUT.png]
gapless sampling draw --strategy NAME -n N --seed S --out draws.npy
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gapless.pipeline.sampling.config import PAPER_STRATEGIES
from gapless.pipeline.sampling.magnifications import STANDARD_MPPS, TRAIN_RANGE


def _add_strategy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--range", nargs=2, type=float, metavar=("A", "B"), default=TRAIN_RANGE, help="mpp range")
    p.add_argument("--lam", type=float, default=1.0, help="MAXAVG entropy weight λ (default 1.0)")
    p.add_argument("--kernel", default="information", help="information | loglaplace")
    p.add_argument("--sigma", type=float, default=0.5, help="width of the loglaplace kernel")
    p.add_argument("--grid", type=int, default=1000, help="grid points on the range (default 1000)")
    p.add_argument("--du-mpps", type=float, nargs="+", default=list(STANDARD_MPPS), help="the DU set")
    p.add_argument("--fixed-mpp", type=float, default=0.5, help="mpp of the 'fixed' strategy")
    p.add_argument("--density-file", default="", help="(mpp, weight) rows for the 'file' strategy")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sampling",
        help="compare magnification-sampling strategies (density, signal S(y)); draw target mpps",
        description="Compare sampling strategies: density p(x), accumulated signal S(y), summary figures.",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=list(PAPER_STRATEGIES),
        help="fixed du cu maxavg minmax file (default: du cu maxavg minmax)",
    )
    _add_strategy_options(p)
    p.add_argument("--json", type=Path, help="write per-strategy grid, density and signal as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG of p(x) and S(y)")
    p.set_defaults(func=run_analysis)
    sub = p.add_subparsers(dest="sampling_command", metavar="draw")
    d = sub.add_parser(
        "draw",
        help="write N sampled target mpps to a .npy file",
        description="Draw N target mpps from one strategy (deterministic given --seed).",
    )
    d.add_argument("--strategy", required=True, help="fixed du cu maxavg minmax file")
    d.add_argument("-n", type=int, required=True, help="number of draws")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", type=Path, required=True, help="output .npy")
    _add_strategy_options(d)
    d.set_defaults(func=run_draw)


def config_from_args(args: argparse.Namespace, strategy: str):
    from gapless.config import from_dict
    from gapless.pipeline.sampling.config import SamplingConfig

    values: dict[str, Any] = {
        "strategy": strategy,
        "low": args.range[0],
        "high": args.range[1],
        "lam": args.lam,
        "kernel": args.kernel,
        "kernel_sigma": args.sigma,
        "grid": args.grid,
        "du_mpps": list(args.du_mpps),
        "fixed_mpp": args.fixed_mpp,
        "density_file": args.density_file,
    }
    return from_dict(SamplingConfig, values)


def _build(cfg: Any) -> Any:
    from gapless.errors import InputError
    from gapless.pipeline.sampling import build_distribution

    try:
        return build_distribution(cfg)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def run_analysis(args: argparse.Namespace) -> int:
    compare_strategies(args.strategies, config_from_args(args, args.strategies[0]), args.json, args.plot)
    return 0


def compare_strategies(
    strategies: Sequence[str] = PAPER_STRATEGIES,
    base: Any = None,
    json_path: Path | None = None,
    plot_path: Path | None = None,
) -> dict[str, Any]:
    """Density, signal S(y) and summary figures of each strategy (``base``'s settings otherwise): tables on the
    console, and optionally JSON and a PNG. Returns the per-strategy summaries."""
    import dataclasses

    from gapless.console import console, table
    from gapless.io import output_file, write_json
    from gapless.pipeline.sampling import SamplingConfig, make_kernel, summarize

    base = base or SamplingConfig()
    for path in (json_path, plot_path):
        if path:
            output_file(path)  # before minutes of work, not after
    results: dict[str, Any] = {}
    for name in strategies:
        cfg = dataclasses.replace(base, strategy=name)
        results[name] = summarize(_build(cfg), make_kernel(cfg.kernel, cfg.kernel_sigma), cfg.low, cfg.high, cfg.grid)
    columns = ["strategy", "S min", "argmin mpp", "S mean", "S max", "mass low 5%", "mass high 5%"]
    keys = ("signal_min", "signal_argmin", "signal_mean", "signal_max", "mass_low_end", "mass_high_end")
    rows = [[n, *(r[k] for k in keys)] for n, r in results.items()]
    console.print(table(f"Signal S(y) on [{base.low:g}, {base.high:g}] mpp, kernel {base.kernel}", columns, rows))
    eval_keys = list(next(iter(results.values()))["signal_at_eval"])
    rows = [[n, *r["signal_at_eval"].values()] for n, r in results.items()]
    console.print(table("S at the evaluation mpps", ["strategy", *eval_keys], rows))
    if "maxavg" in results:
        r = results["maxavg"]
        console.print(
            f"MAXAVG (λ = {base.lam:g}, K̄ = mean over targets): density peaks at {r['density_peak_mpp']:.3f} mpp, "
            f"p({base.low:g}) / max p = {r['density_low_over_max']:.3f}"
        )
    if "minmax" in results:
        r = results["minmax"]
        lo, hi = r["end_point_masses"]
        console.print(
            f"MINMAX LP optimum t* = {r['lp_optimum']:.4f}; end-point masses {100 * lo:.1f} % and {100 * hi:.1f} %"
        )
    if json_path:
        meta = {"range": [base.low, base.high], "lam": base.lam, "kernel": base.kernel, "grid": base.grid}
        write_json({"settings": meta, "strategies": results}, json_path)
        console.print(f"wrote {json_path}")
    if plot_path:
        from gapless.pipeline.sampling.plot import plot_strategies

        plot_strategies(results, Path(plot_path), title=f"kernel {base.kernel}, λ = {base.lam:g}")
        console.print(f"wrote {plot_path}")
    return results


def run_draw(args: argparse.Namespace) -> int:
    import numpy as np

    from gapless.console import console
    from gapless.errors import InputError
    from gapless.io import atomic_output

    if args.n < 1:
        raise InputError(f"-n must be at least 1, got {args.n}")
    dist = _build(config_from_args(args, args.strategy))
    draws = dist.sample(args.n, np.random.default_rng(args.seed))
    with atomic_output(args.out) as tmp, open(tmp, "wb") as f:
        np.save(f, draws)
    console.print(
        f"wrote {args.n} draws of '{args.strategy}' to {args.out} "
        f"(min {draws.min():.4g}, median {np.median(draws):.4g}, max {draws.max():.4g})"
    )
    return 0
