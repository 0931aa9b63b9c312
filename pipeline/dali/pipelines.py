"""DALI pipeline definitions: the training pipeline (multi-crop) and the evaluation pipeline (crop-and-resize only).

Both read regions through an external source and differ only in what the graph does with them:

- CPU reads (:class:`pipeline.source.SampleCallback`): a per-sample callback; with ``workers > 0`` it runs in DALI's
  parallel external source (``py_num_workers`` spawned processes, each with its own slide-handle cache), with
  ``workers == 0`` in the pipeline's own thread (fast start; tests and tiny jobs).
- GPU reads (:class:`pipeline.dali.gpu_source.GpuBatchReader`): cuCIM ``device="cuda"`` decodes a whole batch and
  hands CuPy arrays to a ``device="gpu"`` external source: no host round trip. GPU input cannot be parallel, so
  this source runs in the pipeline thread.

``device`` ("cpu" | "gpu") says where crop-and-resize and augmentation run; with "cpu" the pipeline is built with
``device_id=None`` and needs no CUDA at all.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, pipeline_def

from pipeline.config import AugmentConfig
from pipeline.dali import graph

META_NAMES = ("mpp", "level", "retries", "skipped")


def read_regions(source: Any, batched_gpu: bool, parallel: bool, prefetch: int) -> tuple[Any, ...]:
    """The external source node: (regions HWC uint8, mpp, level, retries, skipped)."""
    if batched_gpu:
        return fn.external_source(
            source=source, batch=True, device="gpu", num_outputs=5, layout=["HWC", "", "", "", ""]
        )
    kwargs = {"prefetch_queue_depth": max(1, prefetch)} if parallel else {}
    return fn.external_source(
        source=source,
        batch=False,
        parallel=parallel,
        num_outputs=5,
        layout=["HWC", "", "", "", ""],
        **kwargs,
    )


@pipeline_def(enable_conditionals=True)
def train_pipeline(
    source: Any, device: str, tile_px: int, aug: AugmentConfig, batched_gpu: bool, parallel: bool, prefetch: int
):
    """Regions -> base tiles (tile_px², antialiased) -> DINOv2 multi-crop -> (globals..., locals..., meta...)."""
    regions, *meta = read_regions(source, batched_gpu, parallel, prefetch)
    if device == "gpu" and not batched_gpu:
        regions = regions.gpu()
    tiles = graph.crop_resize(regions, tile_px)
    global_crops, local_crops = graph.multicrop(tiles, aug)
    return (*global_crops, *local_crops, *meta)


@pipeline_def(enable_conditionals=False)
def eval_pipeline(
    source: Any,
    device: str,
    tile_px: int,
    aug: AugmentConfig,
    batched_gpu: bool,
    parallel: bool,
    prefetch: int,
    normalized: bool,
):
    """Regions -> base tiles, no augmentation: uint8 HWC (``normalized=False``) or normalised float CHW."""
    regions, *meta = read_regions(source, batched_gpu, parallel, prefetch)
    if device == "gpu" and not batched_gpu:
        regions = regions.gpu()
    tiles = graph.crop_resize(regions, tile_px)
    if normalized:
        tiles = graph.normalize(tiles, aug)
    return (tiles, *meta)


def output_names(aug: AugmentConfig) -> list[str]:
    """Names of the training pipeline's outputs, in order, for ``DALIGenericIterator``'s output map."""
    return (
        [f"global{k}" for k in range(aug.global_crops)]
        + [f"local{k}" for k in range(aug.local_crops)]
        + list(META_NAMES)
    )
