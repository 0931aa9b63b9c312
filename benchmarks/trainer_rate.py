"""The trainer's consumption rate (tiles/s) from the trainer step benchmark, for the "does the loader keep up" verdict.

Uses ``train.bench_step``; when the trainer is not importable the result says so instead of failing the run.
"""

from __future__ import annotations

from typing import Any

from benchmarks.config import BenchConfig
from pipeline.config import DataConfig


def trainer_rate(cfg: BenchConfig, data: DataConfig) -> dict[str, Any]:
    """Training steps per second of ``cfg.trainer_arch`` on this machine, as tiles/s."""
    try:
        from train import bench_step
    except ImportError as exc:
        return {"error": f"train.bench_step is not available ({exc})"}
    try:
        return dict(bench_step.measure(cfg.trainer_arch, cfg.trainer_batch, cfg.trainer_steps, data.augment))
    except Exception as exc:  # recorded; the loader figures stand on their own
        return {"error": f"{type(exc).__name__}: {exc}"}
