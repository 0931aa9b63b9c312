"""The DALI loader: builds the pipeline for a rank and turns its outputs into the trainer's batches.

An epoch is ``iterations_per_epoch`` batches counted here; the DALI stream itself never ends (the source never
raises ``StopIteration``), so no tail batch is dropped and the next epoch continues the same deterministic stream.
The graph delivers uint8 views; they are normalised into new float32 tensors on the output device (which copies
them out of DALI's buffers), so a consumer may keep them.
"""

from __future__ import annotations

from typing import Any

import torch

from gapless.pipeline.augparams import views_vary
from gapless.pipeline.config import DataConfig
from gapless.pipeline.dali import pipelines
from gapless.pipeline.dali.gpu_source import BatchParams, GpuBatchReader
from gapless.pipeline.loader_base import TrainLoader
from gapless.pipeline.source import SampleCallback, Shard, TileSource


def build_dali_pipeline(
    cfg: DataConfig,
    source: TileSource,
    shard: Shard,
    device: str,
    read_device: str,
    evaluation: bool = False,
    normalized: bool = True,
    seed: int | None = None,
    host_resize: bool | None = None,
) -> tuple[Any, pipelines.RegionReads]:
    """Build (not run) the training or evaluation pipeline of a shard of the sample stream: (pipeline, its reads).
    The caller stops it by dropping the pipeline (DALI's source workers end with it) and ``reads.close()`` (a GPU
    reader's own processes and files).

    ``host_resize``: host reads deliver base tiles resized in the source workers (OpenCV) instead of regions for
    DALI's resize; None (default) does so for CPU graphs, where it is the cheaper resize (:mod:`.pipelines`).
    """
    gpu_reads = read_device == "cuda"
    resized = (device == "cpu" if host_resize is None else host_resize) and not gpu_reads
    with_params = not evaluation and views_vary(cfg.augment, cfg.tile_px)  # some view uses them
    if gpu_reads and cfg.gpu_decode == "dali":
        from gapless.pipeline.dali.tile_decode import DaliTileReader

        callback: Any = DaliTileReader(source, cfg.batch_size, shard, cfg.workers, cfg.prefetch,
                                       augment=cfg.augment if with_params else None)  # fmt: skip
        params = callback.params if with_params else None
    elif gpu_reads:
        callback = GpuBatchReader(source, cfg.batch_size, shard, decode=cfg.gpu_decode, planners=cfg.workers)
        params = BatchParams(callback, cfg.augment) if with_params else None
    else:  # training: each sample's augmentation parameters travel with it from the worker that read it
        augment = cfg.augment if with_params else None
        callback = SampleCallback(source, shard, cfg.batch_size, augment, cfg.tile_px if resized else 0)
        params = None
    reads = pipelines.RegionReads(callback, gpu_reads, not gpu_reads and cfg.workers > 0, cfg.prefetch, params)
    common = dict(
        batch_size=cfg.batch_size,
        num_threads=max(1, cfg.workers),
        device_id=(torch.cuda.current_device() if device == "gpu" else None),
        # The graphs draw no random numbers (augmentation parameters come with the samples), so nothing depends
        # on this seed; DALI wants one.
        seed=int(cfg.seed if seed is None else seed) % (2**31),
        prefetch_queue_depth=max(1, cfg.prefetch),
    )
    if reads.parallel:
        common.update(py_num_workers=cfg.workers, py_start_method="spawn")
    if evaluation:
        return pipelines.eval_pipeline(reads, device, cfg.tile_px, cfg.augment, normalized, **common), reads
    return pipelines.train_pipeline(reads, device, cfg.tile_px, cfg.augment, **common), reads


class DaliLoader(TrainLoader):
    """Iterable of training batches (the contract in :mod:`gapless.pipeline.loader`), backed by a DALI pipeline."""

    def __init__(
        self,
        cfg: DataConfig,
        source: TileSource,
        shard: Shard,
        device: str = "cpu",
        read_device: str = "cpu",
        skipped_slides: int = 0,
    ) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        super().__init__(cfg, skipped_slides)
        self._it: Any = None
        self.pipe: Any = None  # close() after a failed build finds nothing to stop
        self.reads: pipelines.RegionReads | None = None
        self.pipe, self.reads = build_dali_pipeline(cfg, source, shard, device, read_device)
        self.pipe.build()
        self.names = pipelines.output_names(cfg.augment)
        self._it = DALIGenericIterator([self.pipe], self.names, auto_reset=False)

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            raise RuntimeError("the loader is closed")
        out = next(self._it)[0]
        aug = self.cfg.augment
        dev = self.out_device
        batch = {
            # The normalised copy on the output device owns its memory: DALI may reuse its buffers.
            "global_crops": self._views(out, "global", aug.global_crops, aug.global_size),
            "local_crops": self._views(out, "local", aug.local_crops, aug.local_size),
            "mpp": out["mpp"].reshape(-1).float().clone().to(dev),
            "level": out["level"].reshape(-1).long().clone().to(dev),
        }
        self._count(out["retries"], out["skipped"])
        return batch

    def _views(self, out: dict[str, torch.Tensor], name: str, crops: int, size: int) -> torch.Tensor:
        """The crop-major uint8 views ``name0 .. name{crops-1}`` as one normalised float32 batch."""
        if not crops:
            return torch.empty(0, 3, size, size, device=self.out_device)
        views = [out[f"{name}{k}"] for k in range(crops)]
        return self.normalize(views[0] if crops == 1 else torch.cat(views))

    def _shutdown(self) -> None:
        self._it = None
        pipe, self.pipe = self.pipe, None
        del pipe  # the last reference: DALI stops the pipeline and its source workers
        if self.reads is not None:
            self.reads.close()
