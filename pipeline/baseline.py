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

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gapless.pipeline.augment import MultiCrop
from gapless.pipeline.augparams import ParamSampler, views_vary
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.loader_base import TrainLoader
from gapless.pipeline.resize import resize_square
from gapless.pipeline.source import Shard, TileSource


class BaselineDataset(IterableDataset):
    """An endless stream of packed multi-crop batches for one rank, split across DataLoader workers."""

    def __init__(self, cfg: DataConfig, source: TileSource, shard: Shard):
        super().__init__()
        self.cfg, self.source, self.shard = cfg, source, shard
        self.multicrop = MultiCrop(cfg.augment)
        self.params = ParamSampler(cfg.augment, cfg.tile_px)
        # Views that never vary (plain tiles) need no parameters drawn: any sample's serve every sample.
        self.fixed = None if views_vary(cfg.augment, cfg.tile_px) else self.params(0, 0)

    def __iter__(self) -> Iterator[torch.Tensor]:
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

    def make_batch(self, b: int, shared: bool = False) -> torch.Tensor:
        """Batch ``b`` of this rank, packed in one uint8 tensor (:class:`PackedBatch`): per-sample metadata, then the
        crop-major global and local views (uint8 HWC), each written in place by the augmentation.

        ``shared`` (in a worker): the tensor is made in shared memory here, as the DataLoader's own collate does, so
        the queue's feeder thread has nothing to copy, and one tensor means one shared segment and one handle to
        send per batch. The loader unpacks and normalises it on arrival.
        """
        cfg, aug = self.cfg, self.cfg.augment
        B = cfg.batch_size
        layout = PackedBatch(aug, B)
        packed = shared_bytes(layout.nbytes) if shared else torch.empty(layout.nbytes, dtype=torch.uint8)
        meta, globals_, locals_ = (t.numpy() for t in layout.unpack(packed))
        # Crop-major: view c of sample k is row c·B + k of its group.
        for k, g in enumerate(self.shard.batch(b, B)):
            tile = self.source.read(g)
            base = resize_square(tile.region, cfg.tile_px)
            params = self.params(self.source.seed, g) if self.fixed is None else self.fixed
            out = [globals_[c * B + k] for c in range(aug.global_crops)]
            out += [locals_[c * B + k] for c in range(aug.local_crops)]
            self.multicrop.apply(base, params, out)
            meta[:, k] = (tile.target_mpp, tile.level, tile.retries, float(tile.skipped))
        return packed


def shared_bytes(nbytes: int) -> torch.Tensor:
    """A uint8 tensor allocated in shared memory, as the DataLoader's own collate allocates its batches
    (``UntypedStorage._new_shared``): ``share_memory_()`` on an ordinary tensor would allocate twice and copy, several
    times the cost per batch."""
    new_shared = getattr(torch.UntypedStorage, "_new_shared", None)
    if new_shared is None:  # a torch without it: the public, slower way
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()
    return torch.empty(0, dtype=torch.uint8).set_(new_shared(nbytes))


class PackedBatch:
    """The layout of a baseline batch in one uint8 tensor: metadata (float64 [4, B]: mpp, level, retries, skipped),
    then the global views [n_global·B, G, G, 3] and the local views [n_local·B, L, L, 3]."""

    def __init__(self, aug: AugmentConfig, batch_size: int) -> None:
        self.shapes = [(aug.global_crops * batch_size, aug.global_size, aug.global_size, 3),
                       (aug.local_crops * batch_size, aug.local_size, aug.local_size, 3)]  # fmt: skip
        self.meta_bytes = 4 * batch_size * 8
        self.batch_size = batch_size
        self.nbytes = self.meta_bytes + sum(math.prod(shape) for shape in self.shapes)

    def unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(meta, global views, local views): views into ``packed``, no copy."""
        meta = packed[: self.meta_bytes].view(torch.float64).view(4, self.batch_size)
        start, views = self.meta_bytes, []
        for shape in self.shapes:
            size = math.prod(shape)
            views.append(packed[start : start + size].view(shape))
            start += size
        return meta, views[0], views[1]


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
        self.layout = PackedBatch(cfg.augment, cfg.batch_size)
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
        meta, globals_, locals_ = self.layout.unpack(next(self._it))
        mpp, level, retries, skipped = meta
        self._count(retries, skipped)
        dev = self.out_device
        return {
            "global_crops": self.normalize(globals_),
            "local_crops": self.normalize(locals_),
            "mpp": mpp.to(torch.float32).to(dev),
            "level": level.to(torch.int64).to(dev),
        }

    def _shutdown(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
