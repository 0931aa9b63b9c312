"""One benchmark run, top to bottom: slides, loader throughput, scaling, stage breakdown, trainer rate, verdict.

``run_benchmark(cfg, out)`` returns the result dict (also written to ``out/bench.json``, with plots beside it).
Every loader configuration gets the same slides, seed, batch size, multi-crop recipe and worker count; devices are
'auto', so the DALI loader runs its GPU graph when CUDA is present (its workers decoding on the host; the optional
``dali-gpudecode`` loader decodes on the GPU), its CPU graph otherwise.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gapless.benchmarks import machine
from gapless.benchmarks.config import REFERENCE, BenchConfig
from gapless.benchmarks.slideset import prepare
from gapless.benchmarks.throughput import Throughput, loader_config, measure_loader
from gapless.benchmarks.verdict import floor_figures, loader_verdict, series_name
from gapless.config import to_dict
from gapless.console import console, progress
from gapless.devices import cuda_available
from gapless.io import output_folder, write_json
from gapless.pipeline.config import DataConfig
from gapless.pipeline.sampling.config import STRATEGY_LABELS

SCHEMA = "gapless-bench/1"


def base_data_config(cfg: BenchConfig, index: Path) -> DataConfig:
    # iterations_per_epoch only bounds iteration; the harness calls next_batch itself.
    return DataConfig(index=str(index), batch_size=cfg.batch_size, workers=cfg.workers, seed=cfg.seed,
                      iterations_per_epoch=1_000_000, tiles_per_slide=cfg.tiles_per_slide)  # fmt: skip


def device_name() -> str:
    return "gpu" if cuda_available() else "cpu"


def _measure(data: DataConfig, cfg: BenchConfig, repeats: int, device: str, label: str | None = None,
             mode: str = "multicrop") -> dict[str, Any]:  # fmt: skip
    """One loader configuration's throughput record; ``label`` names the loader in it (default ``data.loader``)."""
    warmup = cfg.warmup(data.workers, data.prefetch)
    result: Throughput = measure_loader(
        data,
        warmup,
        cfg.batches_per_repeat,
        repeats,
        device,
        min_window_s=cfg.min_window_s,
        name=label or data.loader,
        mode=mode,
    )
    name = f"{series_name(result.loader, mode)}/{data.sampling.strategy} ×{data.workers}"
    if result.error:
        console.print(f"[bold red]bench:[/] {name}: {result.error}")
    if result.warning:
        console.print(f"[yellow]bench:[/] {name}: {result.warning}")
    if result.rates:  # one line per measurement, so a log of a run cut short still holds its figures
        console.print(f"bench: {name}: {result.median:.1f} tiles/s (min {min(result.rates):.1f}, "
                      f"max {max(result.rates):.1f}), {statistics.median(result.cpu_ms_per_tile):.2f} CPU ms per "
                      f"tile, start-up {result.startup_s:.1f} s")  # fmt: skip
    return result.as_dict()


def merge_passes(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One throughput record from the same configuration measured in several passes (loader rebuilt each time)."""
    if len(parts) == 1:
        return parts[0]
    out = dict(parts[0])
    out["rates"] = [v for p in parts for v in p["rates"]]
    out["pass_rates"] = [p["rates"] for p in parts]  # for the verdict: strategies paired within each pass
    out["pass_cpu_ms_per_tile"] = [p["cpu_ms_per_tile"] for p in parts]
    out["cpu_ms_per_tile"] = [v for p in parts for v in p["cpu_ms_per_tile"]]
    out["startup_s"] = statistics.mean(p["startup_s"] for p in parts)
    out["memory"] = {k: max((p["memory"].get(k) for p in parts if p["memory"].get(k) is not None), default=None)
                     for k in parts[0]["memory"]}  # fmt: skip
    out["stats"] = {k: sum(p["stats"].get(k, 0) for p in parts) for k in parts[0]["stats"]}
    out["error"] = "; ".join(p["error"] for p in parts if p["error"])
    out["warning"] = "; ".join(p["warning"] for p in parts if p["warning"])
    rates = out["rates"]
    out.update(median=statistics.median(rates) if rates else float("nan"), min=min(rates, default=float("nan")),
               max=max(rates, default=float("nan")), passes=len(parts))  # fmt: skip
    return out


def measure_all(cfg: BenchConfig, data: DataConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Main throughput (the floor loop, every loader × mode × strategy, the no-I/O bound) and the worker scaling.

    With ``passes`` > 1 every series' strategies are measured forward, then backward (DU CU … CU DU), and so on,
    the windows split between passes; within a pass the floor and every loader are measured in turn. So what is
    compared (strategies of one loader, a loader and the floor) is measured close together in time, and a machine
    whose load drifts during the run biases none of them.
    """
    device = device_name()
    passes = max(1, min(cfg.passes, cfg.repeats))
    split = [cfg.repeats // passes + (1 if i < cfg.repeats % passes else 0) for i in range(passes)]
    series = [(REFERENCE, "plain")] if cfg.reference else []
    series += [(loader, mode) for mode in cfg.modes for loader in cfg.loaders]
    jobs = [(loader, mode, s, p) for p in range(passes) for loader, mode in series
            for s in (cfg.strategies if p % 2 == 0 else cfg.strategies[::-1])]  # fmt: skip
    scaling_jobs = [(loader, w) for loader in cfg.scaling_loaders for w in cfg.scaling_points() if w != cfg.workers]
    parts: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    main, scaling = [], []
    with progress() as bar:
        task = bar.add_task("loaders", total=len(jobs) + len(scaling_jobs) + int(cfg.synthetic))
        for loader, mode, strategy, p in jobs:
            bar.update(
                task, description=f"{series_name(loader, mode)} {STRATEGY_LABELS[strategy]} pass {p + 1}/{passes}"
            )
            config = loader_config(data, loader, strategy, cfg.workers, mode)
            parts.setdefault((loader, mode, strategy), []).append(_measure(config, cfg, split[p], device, loader, mode))
            bar.advance(task)
        main = [merge_passes(parts[(loader, mode, s)]) for loader, mode in series for s in cfg.strategies]
        for loader, workers in scaling_jobs:
            bar.update(task, description=f"{loader} {STRATEGY_LABELS[cfg.scaling_strategy]} ×{workers}")
            config = loader_config(data, loader, cfg.scaling_strategy, workers)
            scaling.append(_measure(config, cfg, cfg.scaling_repeats, device, loader))
            bar.advance(task)
        if cfg.synthetic:
            bar.update(task, description="synthetic (no I/O)")
            main.append(_measure(loader_config(data, "synthetic", "cu", cfg.workers), cfg, cfg.repeats, device))
            bar.advance(task)
    # The main measurement is also the scaling curve's point at cfg.workers.
    scaling += [r for r in main if r["strategy"] == cfg.scaling_strategy and r["loader"] in cfg.scaling_loaders
                and r["mode"] == "multicrop"]  # fmt: skip
    return main, sorted(scaling, key=lambda r: (r["loader"], r["workers"]))


def measure_stages(cfg: BenchConfig, data: DataConfig) -> dict[str, Any]:
    from gapless.benchmarks.stages import time_stages_interleaved

    cfgs = {s: dataclasses.replace(data, sampling=dataclasses.replace(data.sampling, strategy=s))
            for s in cfg.stage_strategies}  # fmt: skip
    return time_stages_interleaved(cfgs, cfg.stage_tiles, cfg.stage_batch)


def run_benchmark(
    cfg: BenchConfig, out: str | Path, index: str = "", cache_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run every measurement of ``cfg``; write ``bench.json`` and plots into ``out``; return the result."""
    from gapless.benchmarks.report import plot_all, print_report
    from gapless.benchmarks.trainer_rate import trainer_rate

    t0 = time.perf_counter()
    out = Path(out)
    output_folder(out)
    slides = prepare(cfg.slides, index, cache_dir)
    data = base_data_config(cfg, slides.index)
    main, scaling = measure_all(cfg, data)
    console.print("[bold]bench:[/] stage breakdown")
    stages = measure_stages(cfg, data) if cfg.stage_tiles else {}
    trainer = trainer_rate(cfg) if cfg.trainer else {}
    result = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preset": cfg.preset,
        "machine": machine.machine(),
        "versions": machine.versions(),
        "git": machine.git_commit(),
        "config": to_dict(cfg),
        "data_config": to_dict(data),
        "slides": {
            "index": str(slides.index),
            "synthetic": slides.directory is not None,
            "synthesised_s": slides.synthesised_s,
        },  # fmt: skip
        "device": device_name(),
        "throughput": main,
        "scaling": scaling,
        "stages": stages,
        "trainer": trainer,
    }
    floor_figures(main, stages, trainer.get("tiles_per_s"))  # each loader against the floor; cores per GPU
    result["verdict"] = loader_verdict(main, trainer, stages)
    result["duration_s"] = time.perf_counter() - t0
    result["plots"] = [p.name for p in plot_all(result, out)]
    write_json(result, out / "bench.json")
    print_report(result)
    console.print(
        f"[bold]bench:[/] {result['duration_s']:.0f} s; wrote {out / 'bench.json'} and {len(result['plots'])} plots"
    )
    return result
