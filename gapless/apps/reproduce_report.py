"""The verdict of `gapless reproduce`, its figure and its summary: does DU dip, and does continuous sampling close it?

The verdict is a number with its spread, not an impression. Per fold, the *gap* is the mean over the intermediate
mpps of (mean of the two neighbouring mpps minus the value there); a strategy *dips* when its mean gap is above
``MIN_GAP`` and above two standard errors (:mod:`gapless.eval.gaps`). A continuous strategy *closes the gap* when DU
dips and DU's gap exceeds its own by more than ``MIN_GAP`` and two standard errors. With one seed the spread is
over folds; with several, each seed's fold-mean is one sample and the spread is over seeds (folds then only sharpen
each seed's value), alongside the verdict of every seed on its own folds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gapless.eval.gaps import MIN_GAP, dip_test, mean_se, significant
from gapless.io import save_figure
from gapless.pipeline.sampling.config import CONTINUOUS
from gapless.pipeline.sampling.magnifications import INTERMEDIATE_MPPS, mpp_key

INTERMEDIATE = tuple(mpp_key(m) for m in INTERMEDIATE_MPPS)
NEAR_CHANCE = 0.1  # balanced accuracy this close to chance: the summary warns that the gaps mean little


def strategy_verdict(
    per_strategy: dict[str, dict[str, list[float]]], min_gap: float = MIN_GAP, unit: str = "folds"
) -> dict:
    """Does DU dip, and which continuous strategies close its gap? With numbers, and in words.

    ``per_strategy`` maps a strategy to its values per mpp, one per fold (or one per seed: ``unit="seeds"``).
    ``init`` (the untrained network, when given) is the probe protocol's own gap: probes are trained at the
    standard mpps only, so some dip at the others needs no pretraining at all.
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
        lines.append(f"DU {state} at the intermediate mpps: gap {pts(du['gap'], du['se'])} (mean ± SE over {unit}).")
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
        "unit": unit,
        "strategies": tests,
        "du_dips": None if du is None else du["dips"],
        "du_minus": {s: {"mean": d[0], "se": d[1]} for s, d in comparisons.items()},
        "closes": closes,
        "effect": effect,
        "text": lines,
    }


def fold_values(run: dict, probe: str) -> dict[str, list[float]]:
    return {m: s["folds"] for m, s in run["probes"][probe]["summary"]["balanced_accuracy"].items()}


def seed_values(runs_by_seed: dict[int, dict[str, dict]], probe: str) -> dict[str, dict[str, list[float]]]:
    """strategy -> mpp -> one value per seed (the mean over folds), for the strategies every seed has."""
    seeds = sorted(runs_by_seed)
    common = [s for s in runs_by_seed[seeds[0]] if all(s in runs_by_seed[k] for k in seeds)]
    out: dict[str, dict[str, list[float]]] = {}
    for s in common:
        per_seed = [fold_values(runs_by_seed[k][s], probe) for k in seeds]
        out[s] = {m: [float(np.mean(v[m])) for v in per_seed] for m in per_seed[0]}
    return out


def verdicts(runs_by_seed: dict[int, dict[str, dict]], probes: list[str]) -> dict[str, dict[str, Any]]:
    """Per probe: the verdict of each seed over its folds and, with several seeds, the verdict over seeds."""
    out: dict[str, dict[str, Any]] = {}
    for probe in probes:
        per_seed = {
            str(k): strategy_verdict({s: fold_values(r, probe) for s, r in runs.items()})
            for k, runs in runs_by_seed.items()
        }
        entry: dict[str, Any] = {"per_seed": per_seed}
        if len(runs_by_seed) > 1:
            entry["across_seeds"] = strategy_verdict(seed_values(runs_by_seed, probe), unit="seeds")
        entry["main"] = entry.get("across_seeds") or next(iter(per_seed.values()))
        out[probe] = entry
    return out


def plot_reproduction(per_strategy: dict[str, dict[str, list[float]]], verdict: dict, path: Path, title: str) -> Path:
    """The paper's figure: balanced accuracy against mpp per strategy (± SE band), and each strategy's gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for name, per_mpp in per_strategy.items():
        mpps = sorted(per_mpp, key=float)
        x = np.array([float(m) for m in mpps])
        stats = [mean_se(per_mpp[m]) for m in mpps]
        mean = np.array([m for m, _ in stats])
        se = np.array([0.0 if math.isinf(e) else e for _, e in stats])
        (line,) = curves.plot(x, mean, marker="o", label=name, linestyle="--" if name == "init" else "-")
        curves.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.15, linewidth=0)
    for m in INTERMEDIATE_MPPS:
        curves.axvline(m, color="grey", linewidth=0.6, linestyle=":")
    curves.set_xscale("log")
    curves.set_xticks([float(m) for m in sorted(next(iter(per_strategy.values())), key=float)])
    curves.get_xaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    curves.set_xlabel("mpp (dotted: intermediate)")
    curves.set_ylabel("balanced accuracy")
    curves.legend(fontsize="small")
    names = list(verdict["strategies"])
    gaps = [100 * verdict["strategies"][n]["gap"] for n in names]
    errors = [100 * 2 * verdict["strategies"][n]["se"] if math.isfinite(verdict["strategies"][n]["se"]) else 0
              for n in names]  # fmt: skip
    bars.bar(range(len(names)), gaps, yerr=errors, capsize=3, color=["C3" if n == "du" else "C0" for n in names])
    bars.axhline(0, color="black", linewidth=0.8)
    bars.set_xticks(range(len(names)), names, rotation=45, ha="right")
    bars.set_ylabel(f"gap, points (± 2 SE over {verdict['unit']})")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
