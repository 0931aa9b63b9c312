"""The host half of the DALI-decoder read path: a batch's tiles planned, read and vetted in worker processes.

:class:`TileBatchCallback` is the batch callback of a parallel external source (``batch=True``, ``batch_info=True``):
for iteration ``j`` it makes the batch of samples the per-sample callback makes (same samples, same attempts), but
instead of pixels it delivers what DALI needs to make them on the GPU in two operations: every JPEG tile stream the
batch reads (each tile once, shared tables spliced in) for one ``fn.decoders.image`` call, and, per region, where
its tiles land (``fn.multi_paste`` arguments). A region whose level is not JPEG-tiled is read on the host here and
travels as an uncompressed PNM image, as does the flat tile of a skipped sample; so does a region that would take
the batch past ``capacity`` tile streams (DALI's batch size).

DALI's batch size is one per iteration for every input of an operator, and a batch of B regions reads T tiles, so
every output has ``max(T, B)`` samples: the first B of the paste arguments and the metadata describe the regions,
the rest are empty canvases (and a 1-pixel image where T < B) that the reader drops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gapless.pipeline.augparams import ParamSampler
from gapless.pipeline.batch_read import PlanVetter, region_request
from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.slides.decoding import tile_check_enabled
from gapless.pipeline.source import Shard, TileSource, TileSpec

PASTE_NAMES = ("encoded", "in_ids", "in_anchors", "shapes", "out_anchors", "output_size")
META_DTYPES = (np.float32, np.int32, np.int32, np.int32)  # mpp, level, retries, skipped


def pnm(region: np.ndarray) -> np.ndarray:
    """An RGB image as a binary PNM (P6) file: a header and the pixels, which any decoder reads exactly."""
    h, w = region.shape[:2]
    header = np.frombuffer(f"P6\n{w} {h}\n255\n".encode(), np.uint8)
    return np.concatenate([header, np.ascontiguousarray(region[..., :3], np.uint8).ravel()])


class TileBatchCallback:
    """``callback(batch_info) -> (encoded, in_ids, in_anchors, shapes, out_anchors, output_size, mpp, level,
    retries, skipped[, params])``, each a list of ``max(T, B)`` host arrays. Picklable; files open per process
    (its :class:`~gapless.pipeline.batch_read.PlanVetter`)."""

    def __init__(self, source: TileSource, shard: Shard, batch_size: int, capacity: int,
                 augment: AugmentConfig | None = None, verify: bool | None = None) -> None:  # fmt: skip
        if capacity < batch_size:
            raise ValueError(f"capacity {capacity} is smaller than the batch size {batch_size}")
        self.source, self.shard, self.batch_size, self.capacity = source, shard, int(batch_size), int(capacity)
        self.augment = augment
        self.sampler = None if augment is None else ParamSampler(augment, source.tile_px)
        self.verify = tile_check_enabled() if verify is None else bool(verify)
        self.vetter = PlanVetter()  # this process's tile files, and which of their tiles passed the check
        # Regions read on the host (not JPEG-tiled, or past capacity), for statistics. Counted in the process that
        # runs the callback: with DALI source workers, each worker's count stays in that worker.
        self.host_reads = 0

    @property
    def num_outputs(self) -> int:
        return len(PASTE_NAMES) + len(META_DTYPES) + (self.augment is not None)

    @property
    def files(self) -> Any:
        """This process's :class:`~gapless.pipeline.slides.tile_files.TileFiles` (opened on demand)."""
        return self.vetter.files

    def sample_indices(self, iteration: int) -> list[int]:
        return self.shard.batch(self.shard.start + int(iteration), self.batch_size)

    def close(self) -> None:
        """Close this process's tile files (they reopen on demand)."""
        self.vetter.close()

    def __call__(self, info: Any) -> tuple[list[np.ndarray], ...]:
        iteration = info.iteration if hasattr(info, "iteration") else int(info)
        gs = self.sample_indices(iteration)
        encoded: list[np.ndarray] = []
        slot: dict[tuple[str, int, int], int] = {}
        pastes, meta = [], []
        for j, g in enumerate(gs):
            room = self.capacity - len(encoded) - (len(gs) - j - 1)  # keep one stream for each region to come
            mpp = self.source.target_mpp(g)
            ids, boxes, spec, attempt = self._read(g, mpp, encoded, slot, room)
            pastes.append((ids, boxes, spec))
            skipped = spec is None
            meta.append((mpp, -1 if skipped else spec.plan.level, attempt, int(skipped)))
        n = max(len(encoded), len(gs))
        encoded += [pnm(np.zeros((1, 1, 3), np.uint8))] * (n - len(encoded))
        columns = self._paste_columns(pastes, n)
        for k, dtype in enumerate(META_DTYPES):
            columns.append([np.array([row[k]], dtype) for row in meta] + [np.zeros(1, dtype)] * (n - len(gs)))
        if self.sampler is not None:
            params = [self.sampler(self.source.seed, g) for g in gs]
            columns.append(params + [np.zeros_like(params[0])] * (n - len(gs)))
        return (encoded, *columns)

    def _read(self, g: int, mpp: float, encoded: list[np.ndarray], slot: dict[tuple[str, int, int], int], room: int
              ) -> tuple[np.ndarray, np.ndarray, TileSpec | None, int]:  # fmt: skip
        """Sample ``g``'s (target ``mpp``) first attempt that can be read: (stream ids, paste boxes, spec, attempt);
        the streams it needs are appended to ``encoded``. Every attempt failing gives the skipped sample's flat
        tile."""
        for attempt in range(self.source.max_retries + 1):
            spec = self.source.plan(g, attempt, mpp)
            if spec is None:
                continue
            try:
                return (*self._tiles(spec, encoded, slot, room), spec, attempt)
            except Exception as exc:  # as in TileSource.read: any backend failure -> the next attempt
                self.source.attempt_failed(g, attempt, exc)
        fill = self.source.skipped_tile(g).region
        return (*self._whole(fill, encoded), None, self.source.max_retries + 1)

    def _tiles(self, spec: TileSpec, encoded: list[np.ndarray], slot: dict[tuple[str, int, int], int], room: int
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        from gapless.pipeline.slides.tile_files import tile_pastes

        request = region_request(self.source, spec)
        page = self.files.jpeg_page(request)
        if page is not None:
            tx, ty, tiles = self.files.touched(request, page)
            keys = [(request.path, request.level, int(t)) for t in tiles]
            new = [key for key in dict.fromkeys(keys) if key not in slot]
            if len(new) <= room:
                streams = [self.files.stream(request, page, key[2], self.verify) for key in new]  # may raise
                for key, stream in zip(new, streams):
                    slot[key] = len(encoded)
                    encoded.append(np.frombuffer(stream, np.uint8))
                return np.array([slot[key] for key in keys], np.int32), tile_pastes(page, request, tx, ty)
        region = np.asarray(self.source.read_spec(spec, "cpu"))  # not JPEG-tiled, or no room: read on the host
        self.host_reads += 1
        return self._whole(region, encoded)

    @staticmethod
    def _whole(region: np.ndarray, encoded: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """A whole region as one PNM stream pasted at the origin."""
        encoded.append(pnm(region))
        h, w = region.shape[:2]
        return np.array([len(encoded) - 1], np.int32), np.array([[0, 0, h, w, 0, 0]], np.int32)

    @staticmethod
    def _paste_columns(pastes: list[tuple[np.ndarray, np.ndarray, Any]], n: int) -> list[list[np.ndarray]]:
        """The multi_paste argument columns, padded to ``n`` samples with empty 1 x 1 canvases."""
        in_ids, in_anchors, shapes, out_anchors, sizes = [], [], [], [], []
        for ids, boxes, _ in pastes:
            in_ids.append(ids)
            in_anchors.append(np.ascontiguousarray(boxes[:, 0:2]))
            shapes.append(np.ascontiguousarray(boxes[:, 2:4]))
            out_anchors.append(np.ascontiguousarray(boxes[:, 4:6]))
            sizes.append(np.array([(boxes[:, 2] + boxes[:, 4]).max(), (boxes[:, 3] + boxes[:, 5]).max()], np.int32))
        pad = n - len(pastes)
        empty = np.zeros((0, 2), np.int32)
        return [
            in_ids + [np.zeros(0, np.int32)] * pad,
            in_anchors + [empty] * pad,
            shapes + [empty] * pad,
            out_anchors + [empty] * pad,
            sizes + [np.ones(2, np.int32)] * pad,
        ]
