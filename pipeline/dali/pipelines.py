"""DALI pipeline definitions: the training pipeline (multi-crop) and the evaluation pipeline (crop-and-resize only).

Both read regions through an external source and differ only in what the graph does with them:

- CPU reads (:class:`pipeline.source.SampleCallback`): a per-sample callback; with ``workers > 0`` it runs in DALI's
  parallel external source (``py_num_workers`` spawned processes, each with its own slide-handle cache), with
  ``workers == 0`` in the pipeline's own thread (fast start; tests and tiny jobs). For training it also delivers
  each sample's augmentation parameters (a sixth output, a small host array).
- GPU reads (:class:`pipeline.dali.gpu_source.GpuBatchReader`, ``read_device=cuda``): the batch's JPEG tiles are
  decoded on the GPU in one call and its regions handed as CuPy arrays to a ``device="gpu"`` external source: no
  host round trip. GPU input cannot be parallel, so
  this source runs in the pipeline thread. The augmentation parameters of the same samples come from a second,
  CPU external source (:class:`pipeline.dali.gpu_source.BatchParams`): argument inputs must be CPU data.

``device`` ("cpu" | "gpu") says where crop-and-resize and augmentation run; with "cpu" the pipeline is built with
``device_id=None`` and needs no CUDA at all.
"""

from __future__ import annotations

from typing import Any

from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.dali import graph
from nvidia.dali import fn, pipeline_def

META_NAMES = ("mpp", "level", "retries", "skipped")


def read_regions(
    source: Any, batched_gpu: bool, parallel: bool, prefetch: int, params_source: Any = None
) -> tuple[Any, ...]:
    """The external source nodes: (regions HWC uint8, mpp, level, retries, skipped[, params]).

    ``params_source``: for the GPU read path, the CPU batch source of the augmentation parameters; the CPU
    callback delivers them itself when built with an augmentation config (see ``with_params``).
    """
    if batched_gpu:
        outputs = fn.external_source(
            source=source, batch=True, device="gpu", num_outputs=5, layout=["HWC", "", "", "", ""]
        )
        if params_source is not None:
            outputs = [*outputs, fn.external_source(source=params_source, batch=True, device="cpu")]
        return tuple(outputs)
    n = source.num_outputs
    kwargs = {"prefetch_queue_depth": max(1, prefetch)} if parallel else {}
    return tuple(
        fn.external_source(
            source=source, batch=False, parallel=parallel, num_outputs=n, layout=["HWC"] + [""] * (n - 1), **kwargs
        )
    )


def base_tiles(regions: Any, device: str, batched_gpu: bool, tile_px: int) -> Any:
    """Regions -> base tiles (tile_px², antialiased), on the GPU when ``device`` says so."""
    if device == "gpu" and not batched_gpu:
        regions = regions.gpu()
    return graph.crop_resize(regions, tile_px)


@pipeline_def(enable_conditionals=True)
def train_pipeline(
    source: Any,
    device: str,
    tile_px: int,
    aug: AugmentConfig,
    batched_gpu: bool,
    parallel: bool,
    prefetch: int,
    params_source: Any = None,
):
    """Regions -> base tiles -> DINOv2 multi-crop with the delivered parameters -> (globals..., locals..., meta...)."""
    regions, *meta, params = read_regions(source, batched_gpu, parallel, prefetch, params_source)
    tiles = base_tiles(regions, device, batched_gpu, tile_px)
    global_crops, local_crops = graph.multicrop(tiles, params, aug)
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
    tiles = base_tiles(regions, device, batched_gpu, tile_px)
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
