"""Showing a benchmark result: rich tables, PNG plots, and the comparison of two result files.

Plots (matplotlib, Agg): ``throughput.png`` (median tiles/s per loader × strategy with min–max bars, the no-I/O
upper bound and the trainer's rate as lines), ``stages.png`` (ms per tile per stage, stacked, per strategy),
``scaling.png`` (tiles/s against worker count).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from gapless.benchmarks.stages import STAGES
from gapless.benchmarks.verdict import series
from gapless.console import console, table
from gapless.errors import InputError
from gapless.io import save_figure
from gapless.pipeline.sampling.config import STRATEGY_LABELS


def _label(strategy: str) -> str:
    return STRATEGY_LABELS.get(strategy, strategy)


def _mib(memory: dict[str, Any], key: str) -> float | str:
    value = memory.get(key)
    return "-" if value is None else float(value)


def _optional(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def throughput_rows(result: dict[str, Any]) -> list[list[Any]]:
    du = {series(r): r["median"] for r in result["throughput"] if r["strategy"] == "du" and r["rates"]}
    rows = []
    for r in result["throughput"]:
        if r["error"] and not r["rates"]:  # the message itself is printed when it happens and kept in the JSON
            rows.append([series(r), _label(r["strategy"]), r["workers"], "failed", *[""] * 10])
            continue
        ref = du.get(series(r))
        rel = f"{r['median'] / ref:.3f}×" if ref and r["loader"] != "synthetic" else "-"
        mem = r["memory"]
        cpu = statistics.median(r["cpu_ms_per_tile"]) if r.get("cpu_ms_per_tile") else float("nan")
        rows.append([series(r), _label(r["strategy"]), r["workers"], r["median"], r["min"], r["max"], cpu,
                     _optional(r.get("cpu_vs_floor"), ".2f"), _optional(r.get("cores_at_trainer_rate"), ".2f"),
                     r["startup_s"], _mib(mem, "rss_peak_mib"), _mib(mem, "worker_uss_peak_mib"),
                     _mib(mem, "gpu_peak_mib"), rel])  # fmt: skip
    return rows


def print_report(result: dict[str, Any]) -> None:
    """All tables of a result, then the verdict sentences."""
    cols = ["loader", "strategy", "workers", "tiles/s", "min", "max", "CPU ms", "× floor", "cores/GPU", "start s",
            "RSS MiB", "worker USS", "GPU MiB", "vs DU"]  # fmt: skip
    title = ("Loader throughput, tiles/s (a tile = its whole multi-crop output; plain: one un-augmented tile); CPU ms "
             "per tile of process + workers, × the floor's (reference: bare plan + read + resize; + augmentation "
             "for multi-crop); cores one GPU needs at the trainer's rate; peak memory: RSS of all processes, "
             "unique memory of the largest worker")  # fmt: skip
    _print(table(title, cols, throughput_rows(result)))
    if result.get("stages"):
        rows = []
        for strategy, s in result["stages"].items():
            ms = s["ms_per_tile"]
            rows.append([_label(strategy), *(ms[k] for k in STAGES), s["total_ms_per_tile"],
                         s["pixels_per_output_pixel"], s["tile_aligned_pixels_per_output_pixel"]])  # fmt: skip
        cols = ["strategy", *STAGES, "total", "px/out", "tiles px/out"]
        _print(table("Where a tile's time goes (ms per tile, one worker; decoded px per output px)", cols, rows))
    if result.get("scaling"):
        rows = [[r["loader"], _label(r["strategy"]), r["workers"], r["median"], r["min"], r["max"]]
                for r in result["scaling"] if r["rates"]]  # fmt: skip
        _print(table("Scaling with workers", ["loader", "strategy", "workers", "tiles/s", "min", "max"], rows))
    trainer = result.get("trainer") or {}
    if trainer.get("error"):
        console.print(f"[yellow]trainer rate not measured:[/] {trainer['error']}")
    if trainer.get("tiles_per_s"):
        console.print(f"trainer ({trainer.get('model')}, batch {trainer.get('batch')}, {trainer.get('device')}, "
                      f"{trainer.get('precision')}): {trainer['tiles_per_s']:.3g} tiles/s")  # fmt: skip
    for sentence in result.get("verdict", {}).get("sentences", []):
        console.print(f"[bold]verdict:[/] {sentence}")


def _print(renderable: Any) -> None:
    # Tables are wider than the 80 columns rich assumes for a pipe or file: widen those (never a terminal).
    if console.is_terminal:
        console.print(renderable)
        return
    width = console.width
    console.width = max(width, 150)
    try:
        console.print(renderable)
    finally:
        console.width = width


def plot_all(result: dict[str, Any], out: Path) -> list[Path]:
    """Write the PNG plots of a result into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    runs = [r for r in result["throughput"] if r["rates"] and r["loader"] != "synthetic"]
    if runs:
        loaders = list(dict.fromkeys(series(r) for r in runs))
        strategies = list(dict.fromkeys(r["strategy"] for r in runs))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / len(loaders)
        for i, loader in enumerate(loaders):
            sel = {r["strategy"]: r for r in runs if series(r) == loader}
            xs = [j + i * width for j, s in enumerate(strategies) if s in sel]
            med = [sel[s]["median"] for s in strategies if s in sel]
            err = [[sel[s]["median"] - sel[s]["min"] for s in strategies if s in sel],
                   [sel[s]["max"] - sel[s]["median"] for s in strategies if s in sel]]  # fmt: skip
            ax.bar(xs, med, width, yerr=err, capsize=3, label=loader)
        for r in result["throughput"]:
            if r["loader"] == "synthetic" and r["rates"]:
                ax.axhline(r["median"], color="grey", ls="--", label="no-I/O upper bound")
        trainer = (result.get("trainer") or {}).get("tiles_per_s")
        if trainer:
            ax.axhline(trainer, color="black", ls=":", label="trainer consumption")
        ax.set_xticks([j + width * (len(loaders) - 1) / 2 for j in range(len(strategies))])
        ax.set_xticklabels([_label(s) for s in strategies])
        ax.set_ylabel("tiles/s (median, min–max)")
        ax.set_title(f"Loader throughput, {runs[0]['workers']} workers")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "throughput.png"))
    if result.get("stages"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        names = list(result["stages"])
        bottom = [0.0] * len(names)
        for stage in STAGES:
            vals = [result["stages"][n]["ms_per_tile"][stage] for n in names]
            ax.bar([_label(n) for n in names], vals, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_ylabel("ms per tile (one worker)")
        ax.set_title("Where a tile's time goes")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "stages.png"))
    scaling = [r for r in result.get("scaling", []) if r["rates"]]
    if scaling:
        fig, ax = plt.subplots(figsize=(6, 4))
        for loader in dict.fromkeys(r["loader"] for r in scaling):
            pts = sorted((r["workers"], r["median"], r["min"], r["max"]) for r in scaling if r["loader"] == loader)
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], capsize=3, marker="o", label=loader,
                        yerr=[[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]])  # fmt: skip
        ax.set_xlabel("workers")
        ax.set_ylabel("tiles/s")
        ax.set_title(f"Scaling ({_label(scaling[0]['strategy'])})")
        ax.legend(fontsize=8)
        paths.append(_save(fig, out / "scaling.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def load_result(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: benchmark result not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON file ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != "gapless-bench/1" or "throughput" not in data:
        raise InputError(f"{path}: not a gapless benchmark result (no 'schema: gapless-bench/1')")
    return data


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[list[Any]]:
    """(what, A, B, B/A) for every figure present in both results: throughput medians, stage totals, costs."""
    rows: list[list[Any]] = []

    def key(r: dict[str, Any]) -> tuple[str, str, int]:
        return series(r), r["strategy"], r["workers"]

    for section in ("throughput", "scaling"):
        mine = {key(r): r for r in b.get(section, []) if r["rates"]}
        seen = set()
        for r in a.get(section, []):
            k = key(r)
            if r["rates"] and k in mine and (section, k) not in seen:
                seen.add((section, k))
                where = "scaling: " if section == "scaling" else ""
                rows.append([f"{where}{k[0]} {_label(k[1])} ×{k[2]} tiles/s", r["median"], mine[k]["median"],
                             mine[k]["median"] / r["median"]])  # fmt: skip
    for strategy, s in (a.get("stages") or {}).items():
        other = (b.get("stages") or {}).get(strategy)
        if other:
            for stage in (*STAGES, "total"):
                va = s["total_ms_per_tile"] if stage == "total" else s["ms_per_tile"][stage]
                vb = other["total_ms_per_tile"] if stage == "total" else other["ms_per_tile"][stage]
                rows.append([f"{_label(strategy)} {stage} ms/tile", va, vb, vb / va if va else float("nan")])
    costs_b = {(c["loader"], c["strategy"]): c for c in b.get("verdict", {}).get("costs", [])}
    for c in a.get("verdict", {}).get("costs", []):
        other = costs_b.get((c["loader"], c["strategy"]))
        if other:
            rows.append([f"{c['loader']} {_label(c['strategy'])}/DU ratio", c["ratio"], other["ratio"],
                         other["ratio"] / c["ratio"]])  # fmt: skip
    return rows


def print_compare(a_path: str | Path, b_path: str | Path) -> list[list[Any]]:
    a, b = load_result(a_path), load_result(b_path)
    rows = compare_rows(a, b)
    if not rows:
        raise InputError(f"{a_path} and {b_path} have no measurement in common")
    title = f"A = {a_path} ({a.get('preset')}, {a['machine'].get('cpu')})\nB = {b_path} ({b.get('preset')})"
    _print(table(title, ["figure", "A", "B", "B / A"], rows))
    return rows
