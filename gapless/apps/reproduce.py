"""`gapless reproduce`: the paper's comparison of sampling strategies, at small scale, on synthetic slides.

The same model is trained under the same budget (``configs/reproduce_<budget>.yaml``) once per strategy — a fixed
single mpp, DU, CU, CU-MAXAVG and CU-MINMAX — on one set of synthetic slides, and each teacher is evaluated per mpp
on one multi-scale set over patient-disjoint folds. The question is the paper's: does DU dip at the intermediate
mpps (0.375, 0.75, 1.5), and do the continuous strategies close that gap? The untrained network (``init``, the
weights every run starts from) is evaluated too: the probes train at the four standard mpps only, so part of any
dip at the others is the protocol's own and needs no pretraining.

The verdict is a number with its fold spread, not an impression: per fold, the *gap* is the mean over the
intermediate mpps of (mean of the two neighbouring mpps minus the value there); a strategy *dips* when the mean gap
over folds is above ``MIN_GAP`` and above two standard errors (:mod:`gapless.eval.gaps`). A continuous strategy
*closes the gap* when DU dips and it does not. Trained strategies and their evaluations are kept in ``--out`` and
reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from gapless.apps import experiment as xp
from gapless.config import resolve_config_path
from gapless.console import console, progress
from gapless.errors import InputError
from gapless.eval.gaps import MIN_GAP, dip_test, mean_se, significant
from gapless.io import write_json, write_text
from gapless.pipeline.sampling.config import CONTINUOUS
from gapless.pipeline.sampling.magnifications import INTERMEDIATE_MPPS, mpp_key

INTERMEDIATE = tuple(mpp_key(m) for m in INTERMEDIATE_MPPS)
NEAR_CHANCE = 0.1  # balanced accuracy this close to chance: the summary warns that the gaps mean little


def strategy_verdict(per_strategy: dict[str, dict[str, list[float]]], min_gap: float = MIN_GAP) -> dict:
    """Does DU dip, and which continuous strategies close its gap? With numbers, and in words.

    A continuous strategy *closes the gap* when DU dips and DU's gap exceeds its gap, fold by fold, by more than
    ``min_gap`` and two standard errors. ``init`` (the untrained network, when given) is the probe protocol's own
    gap: probes are trained at the standard mpps only, so some dip at the others needs no pretraining at all.
    """
    tests = {s: dip_test(v, min_gap) for s, v in per_strategy.items()}
    du, init = tests.get("du"), tests.get("init")

    def versus(a: dict, b: dict) -> tuple[float, float]:
        return mean_se(np.subtract(a["folds"], b["folds"]))

    def pts(mean: float, se: float) -> str:
        return f"{100 * mean:+.1f} ± {100 * se:.1f} points"

    comparisons = {s: versus(du, tests[s]) for s in tests if du and s in CONTINUOUS}
    closes = {s: bool(du["dips"] and significant(*d, min_gap)) for s, d in comparisons.items()}
    lines = []
    if du is None:
        lines.append("DU was not trained: no verdict on the dip.")
    else:
        state = "dips" if du["dips"] else "does not dip"
        lines.append(f"DU {state} at the intermediate mpps: gap {pts(du['gap'], du['se'])} (mean ± SE over folds).")
    if init is not None:
        lines.append(f"The untrained network's gap (the probe protocol's own share): {pts(init['gap'], init['se'])}.")
        if du is not None:
            lines.append(f"DU minus untrained: {pts(*versus(du, init))}.")
    for s, d in comparisons.items():
        word = "closes the gap" if closes[s] else "does not close the gap"
        lines.append(
            f"{s.upper()}: gap {pts(tests[s]['gap'], tests[s]['se'])}; DU minus {s.upper()}: {pts(*d)}; {word}."
        )
    effect = bool(du and du["dips"] and any(closes.values()))
    if du is not None and not effect:
        lines.append("The effect (a DU dip that continuous sampling removes) did not appear at this budget.")
    return {
        "strategies": tests,
        "du_dips": None if du is None else du["dips"],
        "du_minus": {s: {"mean": d[0], "se": d[1]} for s, d in comparisons.items()},
        "closes": closes,
        "effect": effect,
        "text": lines,
    }


def fold_values(run: dict, probe: str) -> dict[str, list[float]]:
    return {m: s["folds"] for m, s in run["probes"][probe]["summary"]["balanced_accuracy"].items()}


def run_reproduce(args: argparse.Namespace) -> int:
    import dataclasses

    from gapless.eval.evaluate import evaluate_features
    from gapless.eval.features import FeatureFile, featurise_checkpoint
    from gapless.eval.report import plot_gaps, plot_series, print_tables
    from gapless.eval.sets.file import EvalSet

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(xp.REPRODUCE_STRATEGIES))
    if unknown or not strategies:
        raise InputError(
            f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {xp.REPRODUCE_STRATEGIES}"
        )
    cfg = xp.load_experiment(resolve_config_path(f"reproduce_{args.budget}"), args.overrides)
    out: Path = args.out
    stages = xp.Stages(out, cfg, args.fresh, f"reproduce-{args.budget}")
    started = time.perf_counter()
    index = out / "slides" / "index.h5"
    stages.run("synthetic slides + index", lambda: xp.make_slides(cfg.slides, out / "slides"))
    stages.run("evaluation set", lambda: xp.make_evalset(cfg, index, out / "evalset.h5"))
    evalset = EvalSet.load(out / "evalset.h5")
    stages.run(
        "untrained network", lambda: xp.untrained_backbone(cfg.pretrain, out / "pretrain" / "init" / "backbone.pt")
    )
    for s in strategies:
        sampling = dataclasses.replace(cfg.pretrain.data.sampling, strategy=s)
        train_cfg = dataclasses.replace(cfg.pretrain, data=dataclasses.replace(cfg.pretrain.data, sampling=sampling))
        stages.run(f"train {s}", lambda c=train_cfg, s=s: xp.pretrain(c, index, out / "pretrain" / s))
    runs = []
    for s in ["init", *strategies]:

        def evaluation(s: str = s) -> None:
            with progress() as bar:
                path = featurise_checkpoint(out / "pretrain" / s / "backbone.pt", evalset, out / "features" / f"{s}.h5",
                                            batch_size=cfg.eval.batch_size, device=cfg.eval.device, progress=bar)  # fmt: skip
                result = evaluate_features(FeatureFile.load(path, evalset), evalset, cfg.eval, s, bar)
            write_json(result, out / "results" / f"{s}.json")

        stages.run(f"evaluate {s}", evaluation)
        runs.append(json.loads((out / "results" / f"{s}.json").read_text()))
    print_tables(runs, console)
    plots = [str(p) for p in plot_series(runs, out / "plots")] + [str(plot_gaps(runs, out / "plots"))]
    verdicts = {probe: strategy_verdict({r["name"]: fold_values(r, probe) for r in runs}) for probe in cfg.eval.probes}
    result = {
        "budget": args.budget,
        "config": str(out / "config.yaml"),
        "strategies": strategies,
        "fixed_mpp": cfg.pretrain.data.sampling.fixed_mpp,
        "regions": len(evalset),
        "chance": 1.0 / len(evalset.classes),
        "folds": int(len(np.unique(evalset.folds))),
        "verdict": verdicts,
        "balanced_accuracy": {
            p: {r["name"]: r["probes"][p]["summary"]["balanced_accuracy"] for r in runs} for p in cfg.eval.probes
        },  # fmt: skip
        "stages_s": stages.manifest["done"],
        "total_s_this_run": time.perf_counter() - started,
        "figure": str(out / "plots" / "linear_balanced_accuracy.png"),
        "plots": plots,
    }
    write_json(result, out / "reproduce.json")
    write_text(summary_markdown(cfg, result), out / "SUMMARY.md")
    for probe, v in verdicts.items():
        console.print(f"[bold]{probe} probe:[/] " + " ".join(v["text"]))
    console.print(f"results in {out}/: SUMMARY.md, reproduce.json, plots/ (figure: {result['figure']})")
    return 0


def summary_markdown(cfg, result: dict) -> str:
    p = cfg.pretrain
    parts = [
        f"# gapless reproduce (budget {result['budget']})",
        f"Same model and budget for every strategy: {p.model.arch} (patch {p.model.patch_size}), "
        f"{p.total_iterations} iterations of {p.data.batch_size} tiles at {p.data.tile_px} px through the "
        f"`{p.data.loader}` loader; {cfg.slides.count} synthetic slides of {cfg.slides.size_mm[0]:g} x "
        f"{cfg.slides.size_mm[1]:g} mm (regular vs atypia differ in nuclei only, lobular in architecture only); "
        f"{result['regions']} regions at 7 mpps; probes trained on {', '.join(f'{m:g}' for m in cfg.eval.train_mpps)} "
        f"mpp, tested at every mpp over {result['folds']} patient-disjoint folds. fixed = {result['fixed_mpp']:g} mpp.",
        f"Figure: `{result['figure']}` (balanced accuracy vs mpp, one line per strategy, fold std bands).",
    ]
    for probe, v in result["verdict"].items():
        parts.append(f"## {probe} probe\n\n**Verdict.** " + " ".join(v["text"]))
        table = result["balanced_accuracy"][probe]
        best = max(cell["mean"] for t in table.values() for cell in t.values())
        if best < result["chance"] + NEAR_CHANCE:
            parts.append(
                f"**Caution:** the best balanced accuracy, {best:.3f}, is within {100 * NEAR_CHANCE:g} points of chance "
                f"({result['chance']:.3f}): these features barely tell the classes apart, so gaps of a few points are "
                "noise-level, whatever the standard errors say."
            )
        mpps = sorted(next(iter(table.values())), key=float)
        rows = [[s, *(f"{t[m]['mean']:.3f} ± {t[m]['std']:.3f}" for m in mpps)] for s, t in table.items()]
        parts.append("Balanced accuracy (mean ± std over folds):\n\n" + xp.markdown_table(["strategy", *mpps], rows))
        gap_rows = [[s, *(f"{100 * t['per_mpp'].get(m, math.nan):+.1f}" for m in INTERMEDIATE),
                     f"{100 * t['gap']:+.1f} ± {100 * t['se']:.1f}", "yes" if t["dips"] else "no"]
                    for s, t in v["strategies"].items()]  # fmt: skip
        header = ["strategy", *(f"gap {m}" for m in INTERMEDIATE), "mean ± SE", "dips"]
        parts.append("Gaps in balanced-accuracy points (positive = dip):\n\n" + xp.markdown_table(header, gap_rows))
    rows = [[n, f"{s:.1f}"] for n, s in result["stages_s"].items()]
    parts.append("## Time per stage (seconds, when each ran)\n\n" + xp.markdown_table(["stage", "seconds"], rows))
    return "\n\n".join(parts) + "\n"
