"""DALI pipeline definitions: the training pipeline (multi-crop) and the evaluation pipeline (crop-and-resize only).

Both read regions through an external source and differ only in what the graph does with them:

- CPU reads (:class:`gapless.pipeline.source.SampleCallback`): a per-sample callback; with ``workers > 0`` it runs
  in DALI's parallel external source (``py_num_workers`` spawned processes, each with its own slide-handle cache),
  with ``workers == 0`` in the pipeline's own thread (fast start; tests and tiny jobs). For training it also
  delivers each sample's augmentation parameters (a sixth output, a small host array) when some view uses them
  (:func:`gapless.pipeline.augparams.views_vary`).
- GPU reads (``read_device=cuda``): a batch callable hands the batch's regions, decoded on the GPU, to a
  ``device="gpu"`` external source: no host round trip. ``data.gpu_decode`` says how they are decoded: ``batched``,
  ``cuslide2`` and ``cucim`` by :class:`gapless.pipeline.dali.gpu_source.GpuBatchReader` (the batch's JPEG tiles in
  one nvImageCodec call, cuCIM's nvImageCodec plugin per slide, or cuCIM region by region), ``dali`` by DALI's own
  decoder in a tile-decode pipeline beside this one (:class:`gapless.pipeline.dali.tile_decode.DaliTileReader`).
  GPU input cannot be parallel, so this source runs in the pipeline thread. The augmentation parameters of the
  same samples come from a second, CPU external source (:class:`gapless.pipeline.dali.gpu_source.BatchParams`, or
  ``DaliTileReader.params``): argument inputs must be CPU data.

``device`` ("cpu" | "gpu") says where crop-and-resize and augmentation run; with "cpu" the pipeline is built with
``device_id=None`` and needs no CUDA at all, and the host callback resizes each region to its base tile in the
worker (``RegionReads.resized``): OpenCV's antialiased resize there costs a fraction of DALI's CPU resize, runs in
parallel, and sends smaller arrays between processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nvidia.dali import fn, pipeline_def

from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.dali import graph

META_NAMES = ("mpp", "level", "retries", "skipped")


@dataclass(frozen=True)
class RegionReads:
    """Where a pipeline's regions come from: the host per-sample callback (``gpu=False``; in ``parallel`` worker
    processes or in the pipeline thread) or a GPU batch reader (``gpu=True``), with the CPU batch source of the
    augmentation parameters that a GPU reader needs beside it (``params``; None for evaluation)."""

    source: Any
    gpu: bool
    parallel: bool
    prefetch: int
    params: Any = None
    batch_device: str = "gpu"  # where a batch reader's arrays live: "cpu" for its CPU twin (NumPy arrays)

    def nodes(self) -> tuple[Any, ...]:
        """The external source nodes: (regions HWC uint8, mpp, level, retries, skipped[, params])."""
        if self.gpu:
            outputs = fn.external_source(
                source=self.source, batch=True, device=self.batch_device, num_outputs=5, layout=["HWC", "", "", "", ""]
            )
            if self.params is not None:
                outputs = [*outputs, fn.external_source(source=self.params, batch=True, device="cpu")]
            return tuple(outputs)
        n = self.source.num_outputs
        kwargs = {"prefetch_queue_depth": max(1, self.prefetch)} if self.parallel else {}
        return tuple(
            fn.external_source(source=self.source, batch=False, parallel=self.parallel, num_outputs=n,
                               layout=["HWC"] + [""] * (n - 1), **kwargs)
        )  # fmt: skip

    def close(self) -> None:
        """Stop a GPU batch reader's own processes and close its files (a host callback has none: its workers are
        the pipeline's)."""
        if self.gpu:
            self.source.close()

    @property
    def resized(self) -> bool:
        """Whether the host callback delivers base tiles, resized in its workers (``SampleCallback.resize_px``)."""
        return bool(getattr(self.source, "resize_px", 0))

    def base_tiles(self, regions: Any, device: str, tile_px: int) -> Any:
        """Regions -> base tiles (tile_px², antialiased), on the GPU when ``device`` says so; regions the host
        callback already resized (:attr:`resized`) are only moved there."""
        if device == "gpu" and not (self.gpu and self.batch_device == "gpu"):
            regions = regions.gpu()
        return regions if self.resized else graph.crop_resize(regions, tile_px)


@pipeline_def(enable_conditionals=True)
def train_pipeline(reads: RegionReads, device: str, tile_px: int, aug: AugmentConfig):
    """Regions -> base tiles -> DINOv2 multi-crop with the delivered parameters -> (globals..., locals..., meta...),
    the views uint8 HWC (the loader normalises them on the output device)."""
    regions, *meta = reads.nodes()
    params = meta.pop() if len(meta) > len(META_NAMES) else None  # none when no view uses them
    tiles = reads.base_tiles(regions, device, tile_px)
    global_crops, local_crops = graph.multicrop(tiles, params, aug, tile_px)
    return (*global_crops, *local_crops, *meta)


@pipeline_def(enable_conditionals=False)
def eval_pipeline(reads: RegionReads, device: str, tile_px: int, aug: AugmentConfig, normalized: bool):
    """Regions -> base tiles, no augmentation: uint8 HWC (``normalized=False``) or normalised float CHW."""
    regions, *meta = reads.nodes()
    tiles = reads.base_tiles(regions, device, tile_px)
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
