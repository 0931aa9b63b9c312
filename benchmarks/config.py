"""What a benchmark run measures and how hard: the :class:`BenchConfig` schema and the quick and full presets.

The full preset is the default; ``--quick`` trades strategies (DU and CU only), repeats and batch counts for a short
run (its slides, once synthesised, are cached). Every field can be overridden with ``key=value``
on the command line (``gapless bench --quick repeats=5``), as every other gapless config.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.sampling.config import PAPER_STRATEGIES

LOADERS = ("dali", "baseline")
REFERENCE = "reference"  # the floor: a bare plan + read + resize loop (gapless.benchmarks.floor), not a loader
# What each loader makes per tile: DINOv2 multi-crop (the loader's augmentation config), or one plain base tile
# (a single whole-tile view at tile_px, no augmentation): the loader's own overhead over the bare floor.
MODES = ("multicrop", "plain")
# Optional loaders, measured when named: the DALI graph fed by GPU decoding (read_device=cuda; needs CUDA) of
# batched nvImageCodec calls (dali-gpudecode), cuCIM's cuslide2 plugin (dali-cuslide2) or DALI's own decoder
# (dali-dalidecode), beside the default 'dali', whose parallel workers decode on the host.
OPTIONAL_LOADERS = ("dali-gpudecode", "dali-cuslide2", "dali-dalidecode")
STRATEGIES = PAPER_STRATEGIES


@dataclass
class SlideSetConfig:
    """The synthetic slide set written when no ``--index`` is given (SVS-like by default)."""

    slides: int = 4
    side_px: int = 8192  # level-0 side at base_mpp: 2.0 mpp tiles (1792 level-0 px) fit many times over
    base_mpp: float = 0.25
    level_step: int = 4  # 4: levels 0.25 / 1.0 / 4.0 mpp (SVS-like); 2: a 2x pyramid
    he_texture: bool = True  # real H&E texture, so JPEG tiles compress (and decode) like real ones
    seed: int = 0

    def __post_init__(self) -> None:
        if self.slides < 1 or self.side_px < 2048:
            raise ValueError("slides must be >= 1 and side_px >= 2048 (a 2.0 mpp tile needs 1792 px at 0.25 mpp)")
        if self.level_step not in (2, 4):
            raise ValueError(f"level_step: must be 2 or 4, got {self.level_step}")


@dataclass
class BenchConfig:
    """One benchmark run. Loader throughput is measured per (loader, strategy) with equal worker counts."""

    preset: str = "full"
    loaders: list[str] = field(default_factory=lambda: list(LOADERS))
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    reference: bool = True  # the floor: a bare plan + read + resize loop in one process, per strategy
    workers: int = 2  # DataLoader workers = DALI source workers = DALI threads (0: in the main process)
    batch_size: int = 16
    tiles_per_slide: int = 1  # data.tiles_per_slide of every loader (consecutive samples sharing a slide)
    warmup_batches: int = -1  # after start-up, before the clock starts; -1: the loader's queue depth + 1
    batches_per_repeat: int = 6  # one measurement window, at least ...
    min_window_s: float = 1.0  # ... and at least this long (fast loaders would otherwise time their prefetch queue)
    repeats: int = 8  # measurement windows per (loader, strategy): median, min, max
    passes: int = 4  # strategies measured forward, backward, forward, … (loaders rebuilt), windows split evenly
    synthetic: bool = True  # the no-I/O upper bound (gapless.pipeline.synthetic.SyntheticLoader)
    scaling_workers: list[int] = field(default_factory=list)  # empty: 1, 2, 4, ... up to the usable cores
    scaling_loaders: list[str] = field(default_factory=lambda: list(LOADERS))
    scaling_strategy: str = "cu"
    scaling_repeats: int = 3
    stage_tiles: int = 128  # tiles timed stage by stage, per strategy, in one process
    stage_strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    stage_batch: int = 16  # batch size of the transfer (collate/pin/copy) stage
    trainer: bool = True  # the trainer's consumption rate (gapless.benchmarks.train_step)
    trainer_model: str = "vits16"  # vits16 (ViT-S/16, the loaders' multi-crop) | tiny (a 2-block test model)
    trainer_batch: int = 0  # 0: the config's batch on a GPU, 2 on a CPU (a ViT-S step there takes many seconds)
    trainer_steps: int = 1  # timed steps (as many again run first as warm-up)
    seed: int = 0
    slides: SlideSetConfig = field(default_factory=SlideSetConfig)

    def __post_init__(self) -> None:
        for name in [*self.loaders, *self.scaling_loaders]:
            if name not in LOADERS + OPTIONAL_LOADERS:
                choices = ", ".join(LOADERS + OPTIONAL_LOADERS)
                raise ValueError(f"loaders: unknown loader '{name}' (choose from {choices})")
        for name in self.modes:
            if name not in MODES:
                raise ValueError(f"modes: unknown mode '{name}' (choose from {', '.join(MODES)})")
        for name in [*self.strategies, *self.stage_strategies, self.scaling_strategy]:
            if name not in STRATEGIES:
                raise ValueError(f"strategies: unknown strategy '{name}' (choose from {', '.join(STRATEGIES)})")
        if min(self.batch_size, self.batches_per_repeat, self.repeats, self.passes, self.tiles_per_slide) < 1:
            raise ValueError("batch_size, batches_per_repeat, repeats, passes and tiles_per_slide must all be >= 1")
        # 0 workers: everything in the main process (DALI: the pipeline thread); quick starts, for tests
        if self.workers < 0 or any(w < 0 for w in self.scaling_workers):
            raise ValueError("workers and scaling_workers must be >= 0")
        if self.trainer_model not in ("vits16", "tiny"):
            raise ValueError(f"trainer_model: '{self.trainer_model}' is not one of vits16, tiny")
        if self.warmup_batches < -1 or self.stage_tiles < 0 or self.stage_batch < 1 or self.min_window_s < 0:
            raise ValueError("warmup_batches must be >= -1, stage_tiles >= 0, stage_batch >= 1, min_window_s >= 0")

    def warmup(self, workers: int, prefetch: int) -> int:
        """Batches to discard first: enough to drain what the workers queued while the loader started, so the
        clock measures the steady state and not batches made during start-up."""
        return self.warmup_batches if self.warmup_batches >= 0 else workers * max(1, prefetch) + 1

    def scaling_points(self) -> list[int]:
        if self.scaling_workers:
            return sorted(set(self.scaling_workers))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        points = [1]
        while points[-1] * 2 <= max(2, cores):
            points.append(points[-1] * 2)
        return points


def plain_augment(aug: AugmentConfig) -> AugmentConfig:
    """The ``plain`` mode's recipe: one view, the whole base tile at its own size, nothing random applied."""
    return dataclasses.replace(
        aug,
        global_crops=1,
        local_crops=0,
        global_scale=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p_global1=0.0,
        blur_p_global2=0.0,
        solarize_p_global2=0.0,
    )


def quick(cfg: BenchConfig | None = None) -> BenchConfig:
    """The quick preset: the same measurements with fewer, smaller windows."""
    base = cfg or BenchConfig()
    return dataclasses.replace(
        base,
        preset="quick",
        strategies=["du", "cu"],  # the verdict; the stage breakdown still covers all four strategies
        batch_size=8,
        batches_per_repeat=4,
        min_window_s=0.5,
        repeats=3,
        passes=1,
        scaling_workers=[1, 2],
        scaling_loaders=["dali"],
        scaling_repeats=2,
        stage_tiles=24,
        stage_batch=8,
        trainer=False,  # a ViT-S step on 2 CPU cores alone outlasts the quick budget; the full preset measures it
        slides=dataclasses.replace(base.slides, slides=2, side_px=4096),
    )


def preset_overrides(preset: str) -> BenchConfig:
    return quick() if preset == "quick" else BenchConfig()
