"""The trainer's consumption rate (tiles/s) from the trainer step benchmark, for the "does the loader keep up" verdict.

Runs ``gapless.benchmarks.train_step.measure``: the real training loop on its synthetic, no-I/O source, so the figure is
what the model alone can consume. ``vits16`` is ViT-S/16 with DINOv2's 2 x 224 + 8 x 96 crops, the same multi-crop the
loaders make. On a CPU a ViT-S step takes tens of seconds, so the batch is small and one step is timed; on a GPU the
config's batch and precision are used. When the trainer cannot run the result says why instead.
"""

from __future__ import annotations

from typing import Any

from gapless.benchmarks.config import BenchConfig


def trainer_rate(cfg: BenchConfig) -> dict[str, Any]:
    """Tiles/s the trainer consumes (``cfg.trainer_model`` on this machine), with train_step's own figures."""
    import torch

    from gapless.benchmarks import train_step

    overrides = [f"data.batch_size={cfg.trainer_batch}"] if cfg.trainer_batch else []
    if not torch.cuda.is_available():
        overrides += ["device=cpu", "precision=fp32"]
        if not cfg.trainer_batch:
            overrides.append("data.batch_size=2")
    try:
        result = train_step.measure(cfg.trainer_model, cfg.trainer_steps, overrides)
    except Exception as exc:  # recorded; the loader figures stand on their own
        return {"error": f"{type(exc).__name__}: {exc}", "model": cfg.trainer_model}
    return {**result, "tiles_per_s": float(result["images_per_s"]), "steps": cfg.trainer_steps}
