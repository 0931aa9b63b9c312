"""Reports of an evaluation: a rich table (metric x mpp), JSON, and PNG plots with runs overlaid.

A run's results are flattened into *series*: ``rankme``, ``rankme_paper`` (RankMe as the paper's code computes it)
and ``<probe>/<metric>`` (``knn/balanced_accuracy``, ...),
each a mean (and fold std) per mpp, with the gap of each series at the intermediate mpps (:mod:`gapless.eval.gaps`),
so a sawtooth is a number rather than an impression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gapless.eval.gaps import gaps
from gapless.eval.probes import METRICS
from gapless.io import output_folder, save_figure
from gapless.pipeline.sampling.magnifications import INTERMEDIATE_MPPS, mpp_key

SERIES_TITLES = {
    "rankme": "RankMe",
    "rankme_paper": "RankMe (paper: CLS, covariance)",
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "weighted_f1": "weighted F1",
}
GAP_SERIES = ("rankme", "rankme_paper", "knn/balanced_accuracy", "linear/balanced_accuracy")  # in the gap table


def series(run: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """``{series: {mpp: (mean, std)}}`` of one run (RankMe has no fold std: None)."""
    out = {"rankme": {m: (v, None) for m, v in run["rankme"]["values"].items()}}
    if run.get("rankme_paper", {}).get("values"):
        out["rankme_paper"] = {m: (v, None) for m, v in run["rankme_paper"]["values"].items()}
    for probe, result in run.get("probes", {}).items():
        for metric in METRICS:
            out[f"{probe}/{metric}"] = {m: (s["mean"], s["std"]) for m, s in result["summary"][metric].items()}
    return out


def add_gaps(run: dict) -> dict:
    """Attach ``run["gap"] = {series: {mpp: drop, "mean": mean drop}}``."""
    run["gap"] = {}
    for name, per_mpp in series(run).items():
        drops = gaps({m: mean for m, (mean, _) in per_mpp.items()})
        if drops:
            run["gap"][name] = {**drops, "mean": float(np.mean(list(drops.values())))}
    return run


def _label(name: str) -> str:
    probe, _, metric = name.rpartition("/")
    title = SERIES_TITLES.get(metric, metric)
    return f"{probe} {title}" if probe else title


def print_tables(runs: list[dict], console) -> None:
    """The models, one table per run (series x mpp, mean ± std), then every run's gaps in RankMe and balanced
    accuracy at the intermediate mpps."""
    from gapless.console import table

    model_rows = [[run["name"], run.get("model", {}).get("kind", "?"), run.get("model", {}).get("prefix_tokens", "?"),
                   run.get("model", {}).get("patch_size", "?"), run.get("model", {}).get("normalisation_source", "?")]
                  for run in runs]  # fmt: skip
    console.print(table("models", ["run", "kind", "prefix tokens", "patch", "normalisation from"], model_rows))
    for run in runs:
        per_series = series(run)
        mpps = sorted(next(iter(per_series.values())), key=float)
        rows = [[_label(name), *(_cell(*values[m]) for m in mpps)] for name, values in per_series.items() if values]
        title = f"{run['name']} (step {run.get('step', '?')}; RankMe: {run['rankme']['method']})"
        console.print(table(title, ["metric", *(f"{m} mpp" for m in mpps)], rows))
        for key in ("rankme", "rankme_paper"):
            if run.get(key, {}).get("warning"):
                console.print(f"[yellow]warning:[/] {run['name']}: {key}: {run[key]['warning']}")
    gap_cols = [mpp_key(m) for m in INTERMEDIATE_MPPS]
    gap_rows = [
        [
            run["name"],
            _label(name),
            *(run["gap"][name].get(m, float("nan")) for m in gap_cols),
            run["gap"][name]["mean"],
        ]
        for name in GAP_SERIES
        for run in runs
        if name in run["gap"]
    ]
    console.print(
        table("gap: neighbours' mean minus value (positive = dip)", ["run", "metric", *gap_cols, "mean"], gap_rows)
    )


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.4g}" if std is None else f"{mean:.4f} ± {std:.4f}"


def plot_series(runs: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per series: value against mpp (log axis), every run overlaid, fold std as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    output_folder(out_dir)
    names = list(dict.fromkeys(n for run in runs for n in series(run)))
    written = []
    for name in names:
        fig, ax = plt.subplots(figsize=(6, 4))
        all_mpps: set[float] = set()
        for run in runs:
            values = series(run).get(name)
            if not values:
                continue
            mpps = sorted(values, key=float)
            x = np.array([float(m) for m in mpps])
            mean = np.array([values[m][0] for m in mpps])
            std = np.array([values[m][1] or 0.0 for m in mpps])
            (line,) = ax.plot(x, mean, marker="o", label=run["name"])
            if std.any():
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
            all_mpps.update(x.tolist())
        _mpp_axis(ax, sorted(all_mpps))
        ax.set_ylabel(_label(name))
        ax.set_title(f"{_label(name)} per magnification")
        ax.legend(fontsize="small")
        path = out_dir / f"{name.replace('/', '_')}.png"
        fig.tight_layout()
        save_figure(fig, path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def plot_gaps(runs: list[dict], out_dir: str | Path) -> Path:
    """gap.png: one panel per RankMe and balanced-accuracy series, bars of the drop at each intermediate mpp, one bar
    colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in GAP_SERIES if any(n in run["gap"] for run in runs)]
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / max(1, len(runs))
    for ax, name in zip(axes.flat, names):
        keys = [mpp_key(m) for m in INTERMEDIATE_MPPS]
        for j, run in enumerate(runs):
            g = run["gap"].get(name, {})
            ax.bar(np.arange(len(keys)) + j * width, [g.get(k, np.nan) for k in keys], width, label=run["name"])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(keys)) + width * (len(runs) - 1) / 2, [f"{k} mpp" for k in keys])
        ax.set_title(_label(name), fontsize="medium")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle("gap: mean of neighbouring mpps minus value (positive = dip)")
    fig.tight_layout()
    path = Path(out_dir) / "gap.png"
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _mpp_axis(ax, mpps: list[float]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(mpps, [f"{m:g}" for m in mpps])
    ax.minorticks_off()
    ax.set_xlabel("mpp (µm per pixel, log scale)")
    ax.grid(alpha=0.3)
