"""The plain-CPU baseline loaders: a PyTorch DataLoader doing everything the DALI graph does, on the CPU.

"DU" and "CU" are this loader with ``data.sampling.strategy=du`` or ``cu`` (any strategy works). It shares the tile
source with the DALI loader (same tiles for the same (seed, rank, i)), crop-resizes with
:func:`gapless.pipeline.resize.resize_square` (antialiased) and augments with :class:`gapless.pipeline.augment.MultiCrop`
using the parameters the DALI loader delivers to its graph (:class:`gapless.pipeline.augparams.ParamSampler`), so both
loaders make the same views of the same samples.

Tuned as one would tune it for real: each worker builds whole batches (``batch_size=None``: no per-sample IPC and
no collate in the main process) of uint8 views straight into shared memory (no copy when they are sent, a quarter of
the bytes of float32), the loader normalises each batch once on the output device, OpenCV and torch are pinned to
one thread per worker (no oversubscription), workers persist across epochs, each keeps ``prefetch`` batches in
flight, and batches are pinned when a GPU will receive them. Worker ``w`` of ``n`` builds batches
``start + w, start + w + n, …``; the DataLoader returns worker outputs round-robin, so batches arrive in order and
batch ``b`` is the same whatever the worker count. Augmentation parameters are a pure function of (seed, g), so the
baseline is resumable bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gapless.pipeline.augment import MultiCrop
from gapless.pipeline.augparams import ParamSampler, views_vary
from gapless.pipeline.config import DataConfig
from gapless.pipeline.loader_base import TrainLoader
from gapless.pipeline.resize import resize_square
from gapless.pipeline.source import Shard, TileSource


class BaselineDataset(IterableDataset):
    """An endless stream of collated multi-crop batches for one rank, split across DataLoader workers."""

    def __init__(self, cfg: DataConfig, source: TileSource, shard: Shard):
        super().__init__()
        self.cfg, self.source, self.shard = cfg, source, shard
        self.multicrop = MultiCrop(cfg.augment)
        self.params = ParamSampler(cfg.augment, cfg.tile_px)
        # Views that never vary (plain tiles) need no parameters drawn: any sample's serve every sample.
        self.fixed = None if views_vary(cfg.augment, cfg.tile_px) else self.params(0, 0)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if info is not None:
            import cv2

            # One thread each: parallelism comes from the workers themselves (no oversubscription).
            cv2.setNumThreads(0)
            torch.set_num_threads(1)
        b = self.shard.start + worker
        try:
            while True:
                yield self.make_batch(b, shared=info is not None)
                b += n_workers
        finally:
            self.source.close()  # this process's slide handles

    def make_batch(self, b: int, shared: bool = False) -> dict[str, torch.Tensor]:
        """Batch ``b`` of this rank: crop-major uint8 HWC global and local views plus per-sample metadata.

        ``shared`` (in a worker): the tensors are made in shared memory here, as the DataLoader's own collate does,
        so the queue's feeder thread has nothing to copy when it sends them. The loader normalises them on arrival.
        """
        cfg, aug = self.cfg, self.cfg.augment
        B = cfg.batch_size
        crops = {
            "global_crops": torch.empty(aug.global_crops * B, aug.global_size, aug.global_size, 3, dtype=torch.uint8),
            "local_crops": torch.empty(aug.local_crops * B, aug.local_size, aug.local_size, 3, dtype=torch.uint8),
        }
        meta = torch.zeros(4, B, dtype=torch.float64)  # mpp, level, retries, skipped
        if shared:
            crops = {key: crop.share_memory_() for key, crop in crops.items()}
            meta.share_memory_()
        # Crop-major views of the outputs: [crop, sample, S, S, 3].
        globals_ = crops["global_crops"].numpy().reshape(aug.global_crops, B, aug.global_size, aug.global_size, 3)
        locals_ = crops["local_crops"].numpy().reshape(aug.local_crops, B, aug.local_size, aug.local_size, 3)
        meta_np = meta.numpy()
        for k, g in enumerate(self.shard.batch(b, B)):
            tile = self.source.read(g)
            base = resize_square(tile.region, cfg.tile_px)
            params = self.params(self.source.seed, g) if self.fixed is None else self.fixed
            views_g, views_l = self.multicrop.apply(base, params)
            for c, view in enumerate(views_g):
                globals_[c, k] = view
            for c, view in enumerate(views_l):
                locals_[c, k] = view
            meta_np[:, k] = (tile.target_mpp, tile.level, tile.retries, float(tile.skipped))
        return {**crops, "meta": meta}


def _join_queue_feeders_at_exit(worker_id: int) -> None:
    """Worker init: at exit, let the worker's queue feeder thread finish before the interpreter finalizes.

    A worker told to stop may still be sending a prefetched batch: the feeder thread (a daemon; the DataLoader
    cancels its join) is pickling tensors or freeing them, in torch C++ code that releases the GIL. CPython (before
    3.14) ends a thread that wants the GIL back during finalization with ``pthread_exit``, and its forced unwind
    through those C++ frames calls ``std::terminate``: the worker died of SIGABRT at shutdown. ``atexit``
    handlers run before finalization, so joining the feeder there (bounded: the main process may have stopped
    reading) closes the race.
    """
    import atexit
    import threading

    def join_feeders(timeout: float = 2.0) -> None:
        for thread in threading.enumerate():
            if thread.name == "QueueFeederThread":  # multiprocessing.Queue's sender thread
                thread.join(timeout)

    atexit.register(join_feeders)


class BaselineLoader(TrainLoader):
    """Iterable of training batches backed by a PyTorch DataLoader (same contract as the DALI loader)."""

    def __init__(
        self,
        cfg: DataConfig,
        source: TileSource,
        shard: Shard,
        skipped_slides: int = 0,
    ) -> None:
        super().__init__(cfg, skipped_slides)
        self._it: Any = None  # close() after a failed start finds nothing to stop
        dataset = BaselineDataset(cfg, source, shard)
        workers = max(0, cfg.workers)
        self.dataloader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.out_device.type == "cuda",
            prefetch_factor=max(1, cfg.prefetch) if workers else None,
            persistent_workers=workers > 0,
            # spawn: cuCIM and OpenCV keep native thread pools that do not survive fork reliably.
            multiprocessing_context="spawn" if workers else None,
            worker_init_fn=_join_queue_feeders_at_exit if workers else None,
        )
        self._it = iter(self.dataloader)

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            raise RuntimeError("the loader is closed")
        raw = next(self._it)
        mpp, level, retries, skipped = raw["meta"]
        self._count(retries, skipped)
        dev = self.out_device
        return {
            "global_crops": self.normalize(raw["global_crops"]),
            "local_crops": self.normalize(raw["local_crops"]),
            "mpp": mpp.to(torch.float32).to(dev),
            "level": level.to(torch.int64).to(dev),
        }

    def _shutdown(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
