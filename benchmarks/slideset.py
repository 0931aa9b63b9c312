"""The benchmark's slides: a synthetic SVS-like set written once into a cache directory, or a user's index.

Without ``--index`` the benchmark writes ``slides`` JPEG-tiled pyramidal slides (256 px tiles, Q 90, real H&E texture,
levels 0.25 / 1.0 / 4.0 mpp for the default 4x step) with ``gapless.pipeline.synth.writer.make_dataset`` and indexes
them with ``gapless.pipeline.slides.indexer.build_index`` (what ``gapless synth`` and ``gapless index`` run). The
directory is keyed by the slide-set parameters and marked complete only after the index is written, so an interrupted
run rebuilds it and a finished one is reused.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gapless.benchmarks.config import SlideSetConfig

_DONE = "COMPLETE"


@dataclass(frozen=True)
class SlideSet:
    index: Path
    directory: Path | None  # None for a user's index
    synthesised_s: float  # time spent writing slides and index in this run (0 when cached)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gapless" / "bench-slides"


def slide_set_key(cfg: SlideSetConfig) -> str:
    texture = "he" if cfg.he_texture else "synth"
    return f"{cfg.slides}x{cfg.side_px}px-{cfg.base_mpp:g}mpp-step{cfg.level_step}-{texture}-seed{cfg.seed}"


def synthesise(cfg: SlideSetConfig, directory: Path) -> Path:
    """Write the slides and their index into ``directory`` (overwriting); returns the index path."""
    from gapless.pipeline.slides.indexer import build_index
    from gapless.pipeline.synth.writer import make_dataset

    side_mm = cfg.side_px * cfg.base_mpp / 1000.0
    result = make_dataset(
        directory,
        slides=cfg.slides,
        size_mm=(side_mm, side_mm),
        base_mpp=cfg.base_mpp,
        fmt="svs",
        seed=cfg.seed,
        level_step=cfg.level_step,
        use_he_texture=cfg.he_texture,
    )
    index = directory / "index.h5"
    summary = build_index([directory], index, labels_csv=result.labels_csv, workers=1)
    if summary.usable < 1:
        raise RuntimeError(f"{directory}: none of the synthesised slides could be indexed ({summary.failed})")
    return index


def prepare(cfg: SlideSetConfig, index: str = "", cache_dir: str | Path | None = None) -> SlideSet:
    """The slide set of a run: ``index`` when given, else the cached synthetic set (written if missing)."""
    if index:
        from gapless.pipeline.slides import SlideIndex

        SlideIndex.load(index)  # a missing, foreign or damaged index is named now, not after every measurement
        return SlideSet(Path(index), None, 0.0)
    directory = Path(cache_dir or default_cache_dir()) / slide_set_key(cfg)
    if (directory / _DONE).is_file() and (directory / "index.h5").is_file():
        return SlideSet(directory / "index.h5", directory, 0.0)
    from gapless.console import console

    console.print(f"[bold]bench:[/] synthesising {cfg.slides} slides of {cfg.side_px}² px into {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = synthesise(cfg, directory)
    (directory / _DONE).write_text(slide_set_key(cfg) + "\n")
    return SlideSet(path, directory, time.perf_counter() - t0)
