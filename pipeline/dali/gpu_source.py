"""GPU read path: a batch's regions decoded on the GPU and handed to DALI as CuPy arrays, without a host copy.

``decode`` chooses how (``data.gpu_decode``): ``batched`` decodes the JPEG tiles of the whole batch in one
nvImageCodec call (:class:`gapless.pipeline.slides.tiled_decode.TiledJpegReader`); ``cuslide2`` reads each slide's
regions with cuCIM's nvImageCodec plugin in batched calls (:class:`gapless.pipeline.slides.cuslide2.Cuslide2Reader`);
``cucim`` reads region by region with cuCIM's ``device="cuda"`` decode (one call per region). All three plan the
next batches in worker processes and vet the tiles of each plan there, strictly and once per process, because
GPU decoders turn damaged data into noise without failing (:mod:`gapless.pipeline.batch_read`); ``verify=False``
skips the vetting (to measure what it costs). The fourth path, DALI's own decoder, is
:class:`gapless.pipeline.dali.tile_decode.DaliTileReader`.

A batch callable for a non-parallel ``device="gpu"`` external source, and a second, host-side batch callable for
the same samples' augmentation parameters (DALI argument inputs are CPU data even in a GPU graph, and one external
source has one device). It imports CuPy only when called, so this module imports (and the GPU path can be
selected and tested for shape) on machines without CUDA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gapless.pipeline.augparams import ParamSampler
from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.slides.decoding import tile_check_enabled
from gapless.pipeline.source import Shard, TileSource

READERS = ("batched", "cuslide2", "cucim")  # the decode modes of GpuBatchReader


class GpuBatchReader:
    """``reader(iteration) -> (regions, mpp, level, retries, skipped)``, each a list of ``batch_size`` CuPy arrays.

    Iteration ``j`` of the DALI stream is batch ``shard.start + j`` of the shard, the same samples the CPU
    per-sample callback produces, so the two read paths make the same tiles.
    """

    def __init__(
        self,
        source: TileSource,
        batch_size: int,
        shard: Shard,
        decode: str = "batched",
        planners: int = 0,
        device: str = "cuda",
        verify: bool | None = None,
    ) -> None:
        if decode not in READERS:
            raise ValueError(f"decode: '{decode}' is not one of {', '.join(READERS)}")
        self.source, self.batch_size = source, int(batch_size)
        self.shard = shard
        self.decode = decode
        self.planners = int(planners)  # processes planning the next batches while this one decodes
        self.device = device  # "cpu": NumPy arrays and the CPU decoder, this reader's CPU twin for tests
        self.verify = tile_check_enabled() if verify is None else bool(verify)
        self._reader: Any = None
        self._prefetcher: Any = None
        self._vet: Any = None
        if decode == "cuslide2":  # before anything in this process opens a slide with cuCIM
            from gapless.pipeline.slides.cuslide2 import enable_cuslide2

            enable_cuslide2()

    def sample_indices(self, iteration: int) -> list[int]:
        return self.shard.batch(self.shard.start + int(iteration), self.batch_size)

    def __call__(self, iteration: int) -> tuple[list[Any], ...]:
        from gapless.pipeline.slides.tiled_decode import array_module

        xp = array_module(self.device)
        tiles = self._read(int(iteration), self.sample_indices(iteration))
        regions = [xp.ascontiguousarray(t.region) for t in tiles]
        # The metadata columns cross to the GPU as one array each, handed to DALI as per-sample rows.
        meta = np.array([[t.target_mpp, t.level, t.retries, int(t.skipped)] for t in tiles], np.float64)
        mpp = xp.asarray(meta[:, 0:1].astype(np.float32))
        ints = xp.asarray(meta[:, 1:].astype(np.int32))
        columns = [[ints[b, k : k + 1] for b in range(len(tiles))] for k in range(3)]
        return (regions, [mpp[b] for b in range(len(tiles))], *columns)

    def _read(self, iteration: int, gs: list[int]) -> list[Any]:
        """The tiles of ``gs``: plans made ahead and vetted, then read (``cucim``: region by region through the
        slide's backend, which ``read_many`` does for what its reader does not handle)."""
        from gapless.pipeline.batch_read import PlanPrefetcher, PlanVetter, read_many

        if self._prefetcher is None:
            self._vet = PlanVetter() if self.verify else None
            if self.decode == "cuslide2":
                from gapless.pipeline.slides.cuslide2 import Cuslide2Reader

                self._reader = Cuslide2Reader(self.device)
            elif self.decode == "batched":
                from gapless.pipeline.slides.tiled_decode import TiledJpegReader

                self._reader = TiledJpegReader(self.device)
            self._prefetcher = PlanPrefetcher(self.source, self.planners, self._vet)
        plans = self._prefetcher.plans(iteration, gs)
        for ahead in range(iteration + 1, iteration + 1 + self.planners):
            self._prefetcher.ahead(ahead, self.sample_indices(ahead))
        return read_many(self.source, gs, self._reader, device=self.device, plans=plans, vet=self._vet)

    def close(self) -> None:
        """Stop the planner processes and close the decoder's and the vetter's files (idempotent; a later call
        starts them afresh)."""
        for part in (self._prefetcher, self._reader, self._vet):
            if part is not None:
                part.close()
        self._reader = self._prefetcher = self._vet = None


class BatchParams:
    """``params(iteration) -> [B host arrays]``: the augmentation parameters of the reader's samples of ``iteration``.

    The same :func:`gapless.pipeline.augparams.sample_params` values the CPU callback delivers with each sample, so
    the GPU and CPU read paths make the same views; drawn with one :class:`~gapless.pipeline.augparams.ParamSampler`.
    """

    def __init__(self, reader: GpuBatchReader, augment: AugmentConfig) -> None:
        self.reader, self.augment = reader, augment
        self.sampler = ParamSampler(augment, reader.source.tile_px)

    def __call__(self, iteration: int) -> list[np.ndarray]:
        seed = self.reader.source.seed
        return [self.sampler(seed, g) for g in self.reader.sample_indices(iteration)]
