"""The trainer's entry point to the data: ``build_loader(cfg, rank, world_size, start_iteration)``.

Contract (both the DALI and the baseline loader keep it):

- iterating yields exactly ``cfg.iterations_per_epoch`` batches per epoch; the stream continues across epochs;
- each batch is a dict: ``global_crops`` float32 [n_global·B, 3, G, G] and ``local_crops`` [n_local·B, 3, L, L]
  in crop-major order (all B samples of crop 0, then crop 1, …, as DINOv2 collates), normalised with the
  configured mean/std; ``mpp`` float32 [B] (target mpp of each tile) and ``level`` int64 [B] (pyramid level read,
  -1 for a skipped sample); on the GPU when there is one;
- ``loader.stats()`` -> {reads, retries, skipped_tiles, skipped_slides}; ``loader.close()`` stops the workers
  (also a context manager);
- sample ``i`` of ``rank``, its augmented views included, is a pure function of (seed, rank, i), whatever the
  worker count: see :mod:`gapless.pipeline.source` and :mod:`gapless.pipeline.augparams`; so a run resumed at
  iteration k gets the batches an uninterrupted run gets there, bit for bit (on the same kind of device).

``cfg.loader``: dali -> DALI (operators on the GPU when there is one, else CPU operators), baseline -> PyTorch
DataLoader, synthetic -> in-memory batches with no I/O (:mod:`gapless.pipeline.synthetic`), auto -> DALI when CUDA
is available, the DataLoader when not (:func:`resolve_loader`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gapless.devices import cuda_available
from gapless.errors import ConfigError, InputError
from gapless.pipeline.config import DataConfig
from gapless.pipeline.slide_table import SlideTable
from gapless.pipeline.source import Shard, SlideEntry, TileSource

log = logging.getLogger(__name__)


def resolve_loader(cfg: DataConfig, has_cuda: bool | None = None) -> str:
    """The loader ``cfg.loader`` names; auto is DALI with CUDA and the DataLoader baseline without.

    With a GPU, DALI runs crop-resize and multi-crop on it. On a CPU both loaders make the same views from the same
    host reads, but DALI's CPU operators (antialiased resize, colour twist, Gaussian blur) cost about six times what
    OpenCV's do for a tile's views, so the DataLoader delivers about three times the multi-crop tiles per CPU-second
    (benchmarks/results/RESULTS.md).
    """
    if cfg.loader != "auto":
        return cfg.loader
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    return "dali" if has_cuda else "baseline"


def resolve_devices(cfg: DataConfig, has_cuda: bool | None = None) -> tuple[str, str]:
    """(device, read_device): where the graph runs ("cpu"|"gpu") and where JPEG tiles are decoded ("cpu"|"cuda").

    auto runs the graph on the GPU when CUDA is present and decodes on the host, in the parallel workers: measured,
    that delivered more tiles per second than GPU decoding, whose batched call runs in the one pipeline thread
    (benchmarks/results/RESULTS.md). GPU decoding (read_device=cuda) takes about half the CPU time per tile: the
    choice where CPU cores are scarcer than GPU time. It feeds a GPU graph only (the regions never come back to the
    host), so read_device=cuda with device=cpu is refused.
    """
    has_cuda = cuda_available() if has_cuda is None else has_cuda
    device = cfg.device if cfg.device != "auto" else ("gpu" if has_cuda else "cpu")
    if device == "gpu" and not has_cuda:
        raise ConfigError("data.device: 'gpu' requested but CUDA is not available on this machine")
    read_device = cfg.read_device if cfg.read_device != "auto" else "cpu"
    if read_device == "cuda" and device != "gpu":
        raise ConfigError("data.read_device: 'cuda' decoding needs data.device=gpu (the graph runs where the data is)")
    return device, read_device


def load_slides(index_path: str | Path, check: bool = True) -> tuple[Sequence[SlideEntry], int, Any]:
    """(readable slides, number skipped, the SlideIndex) of an index; the slides as a
    :class:`~gapless.pipeline.slide_table.SlideTable` over the index.

    Skipped: slides the index itself marks as failed, and, with ``check``, slides whose file is gone, or has changed
    since it was indexed and no longer opens (missing, truncated, corrupt). A slide with the size and modification
    time the index recorded costs one ``stat`` (a DICOM folder one per instance file), so an index of 200,000 slides
    is checked in seconds; a changed one is opened (one header read). Skipped slides are logged, counted and never
    drawn. A file that goes bad later is handled by the source's retries.
    """
    from gapless.pipeline.slides import SlideIndex

    if not index_path:
        raise ConfigError("data.index: no slide index given (write one with `gapless index`)")
    index = SlideIndex.load(index_path)
    positions, skipped = [], len(index.failed)
    for path, status, reason in index.failed:
        log.warning("skipping slide %s (%s in the index: %s)", path, status, reason)
    for k, rec in enumerate(index.records):
        if check and not _still_readable(rec):
            skipped += 1
            continue
        positions.append(k)
    if not positions:
        raise InputError(f"{index_path}: none of the {len(index.records) + len(index.failed)} slides is readable")
    return SlideTable(index, positions), skipped, index


def _still_readable(record: Any) -> bool:
    """Whether an indexed slide can still be read: unchanged since it was indexed, or still opening."""
    from gapless.pipeline.slides import open_slide
    from gapless.pipeline.slides.inputs import slide_stat

    try:
        if slide_stat(Path(record.path)) == (record.size, record.mtime):  # as the indexer recorded them
            return True
        open_slide(record.path, mpp=record.mpp).close()
        return True
    except Exception as exc:  # a bad slide is skipped and counted, never fatal
        log.warning("skipping slide %s: %s", record.path, exc)
        return False


def build_source(cfg: DataConfig, check: bool = True, world_size: int = 1) -> tuple[TileSource, int]:
    """The tile source of a data config for a run of ``world_size`` ranks, and the number of slides skipped while
    loading its index."""
    from gapless.pipeline.sampling import build_distribution

    entries, skipped, index = load_slides(cfg.index, check)
    source = TileSource(
        entries,
        build_distribution(cfg.sampling),
        seed=cfg.seed,
        tile_px=cfg.tile_px,
        tissue_threshold=cfg.tissue_threshold,
        max_retries=cfg.max_read_retries,
        handle_cache=cfg.handle_cache,
        fill=tuple(cfg.augment.mean),
        index=index,
        tiles_per_slide=cfg.tiles_per_slide,
        world_size=world_size,
    )
    return source, skipped


def build_loader(cfg: DataConfig, rank: int = 0, world_size: int = 1, start_iteration: int = 0) -> Any:
    """The loader of ``rank`` (of ``world_size``) starting at iteration ``start_iteration`` (see module doc)."""
    shard = Shard(rank, world_size, start_iteration)
    loader = resolve_loader(cfg)
    if loader == "synthetic":
        from gapless.pipeline.synthetic import SyntheticLoader

        return SyntheticLoader(cfg, shard)
    if cfg.read_device == "cuda" and cfg.gpu_decode == "cuslide2":  # cuCIM's plugin: chosen before a slide opens
        from gapless.pipeline.slides.cuslide2 import enable_cuslide2

        enable_cuslide2()
    source, skipped = build_source(cfg, world_size=world_size)
    if loader == "baseline":
        from gapless.pipeline.baseline import BaselineLoader

        return BaselineLoader(cfg, source, shard, skipped_slides=skipped)
    from gapless.pipeline.dali.loader import DaliLoader

    device, read_device = resolve_devices(cfg)
    return DaliLoader(cfg, source, shard, device, read_device, skipped_slides=skipped)
