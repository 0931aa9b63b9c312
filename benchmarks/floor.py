"""The floor every loader is measured against: a bare plan + read + resize loop in one process, no loader around it.

:class:`BareLoop` makes the same tiles as the loaders (the same slides, seed and sampling strategy, through
``TileSource.read``: target mpp, slide and tissue location, the slide reader's read (the tifffile reader for JPEG
pyramids), retries) and resizes each region to its base tile with :func:`gapless.pipeline.resize.resize_square`, with
OpenCV on one thread as in a loader worker. It keeps nothing and delivers nothing: what it costs per tile is the work
that makes the pixels, and what a loader costs beyond it (worker processes, hand-offs, batching, normalisation, its
augmentation) is that loader's overhead. It offers the loaders' ``next_batch`` / ``stats`` / ``close`` so the throughput
harness measures it like one (the ``reference`` row of ``gapless bench``).
"""

from __future__ import annotations

from typing import Any

from gapless.pipeline.config import DataConfig
from gapless.pipeline.resize import resize_square
from gapless.pipeline.source import Shard


class BareLoop:
    """``next_batch()`` plans, reads and resizes the next ``batch_size`` tiles of rank 0 and drops them."""

    def __init__(self, cfg: DataConfig) -> None:
        import cv2

        from gapless.pipeline.loader import build_source

        self.cfg = cfg
        self.source, self.skipped_slides = build_source(cfg)
        self.shard = Shard()
        self.iteration = 0
        self._threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one thread, as in a loader worker: the figure is per core
        self.counts = {"reads": 0, "retries": 0, "skipped_tiles": 0, "skipped_slides": self.skipped_slides}

    def next_batch(self) -> None:
        for g in self.shard.batch(self.iteration, self.cfg.batch_size):
            tile = self.source.read(g)
            resize_square(tile.region, self.cfg.tile_px)
            self.counts["retries"] += tile.retries
            self.counts["skipped_tiles" if tile.skipped else "reads"] += 1
        self.iteration += 1

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    def close(self) -> None:
        import cv2

        self.source.close()
        cv2.setNumThreads(self._threads)
