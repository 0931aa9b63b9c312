"""Prototype: read a tile's region from JPEG tiles decoded at reduced DCT scale ("virtual pyramid levels").

libjpeg(-turbo) can decode a JPEG at 1/2, 1/4 or 1/8 of its size by computing a smaller inverse DCT: fewer pixels
are reconstructed, colour-converted and then resized. A 0.25 mpp level decoded at 1/2 scale is a 0.5 mpp level, at
1/4 a 1.0 mpp level, so every real level ``s`` offers virtual levels ``s·k`` (k = 1, 2, 4, 8), and a tile at target
``t`` reads the coarsest virtual level with mpp ≤ t. On a 4x pyramid that bounds the decoded region at 2x the
output per side (CU: 2.33 region pixels per output pixel on average instead of 4.3). The entropy-coded data still
has to be parsed in full, so decode time does not fall with the pixel count: this file measures by how much.

``ScaledTileReader`` decodes the tiles of one slide file itself (tifffile for the tile offsets, OpenCV's
``IMREAD_REDUCED_COLOR_k`` for the scaled decode); ``FastReadTileSource`` is a :class:`pipeline.source.TileSource`
whose CPU reads go through it, so the real loaders can run on it unchanged. Limits of the prototype: 8-bit
YCbCr/JFIF JPEG tiles only (what ``gapless synth`` writes, and most SVS), no OpenSlide formats, no GPU path.

    python -m benchmarks.prototype_fastread [--index INDEX] [--tiles 200] [--loaders baseline dali]
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pipeline.source import TileSource

SCALES = (1, 2, 4, 8)
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip


@dataclass(frozen=True)
class TiledPage:
    """Where one pyramid level's JPEG tiles are in the file."""

    width: int
    height: int
    tile: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    tables: bytes | None

    @property
    def columns(self) -> int:
        return math.ceil(self.width / self.tile)


def choose_virtual_level(
    level_mpps: list[float], target_mpp: float, scales: tuple[int, ...] = SCALES, tol: float = 1e-3
) -> tuple[int, int]:
    """(level, scale): the coarsest virtual level ``mpp·scale`` ≤ target; ties go to the coarser real level
    (fewer compressed bytes to parse). Level 0 at full scale when every level is coarser."""
    limit = target_mpp * (1.0 + tol)
    best, best_mpp = (0, 1), 0.0
    for level, mpp in enumerate(level_mpps):
        for k in scales:
            vm = mpp * k
            if vm <= limit and (vm > best_mpp * (1 + 1e-9) or (abs(vm - best_mpp) <= best_mpp * 1e-9 and k < best[1])):
                best, best_mpp = (level, k), vm
    return best


class ScaledTileReader:
    """Regions of one slide from JPEG tiles decoded at 1/k scale; not picklable (an open file), one per process."""

    def __init__(self, path: str, level_dims: list[tuple[int, int]]) -> None:
        import tifffile

        self.path = path
        self.pages: list[TiledPage] = []
        with tifffile.TiffFile(path) as tif:
            by_size = {(p.imagewidth, p.imagelength): p for p in tif.pages if p.is_tiled}
            for w, h in level_dims:
                p = by_size.get((w, h))
                if p is None or p.compression != 7 or p.tilewidth != p.tilelength:
                    raise ValueError(f"{path}: level {w}x{h} is not a square-tiled JPEG page")
                self.pages.append(TiledPage(w, h, p.tilewidth, tuple(p.dataoffsets), tuple(p.databytecounts),
                                            bytes(p.jpegtables) if p.jpegtables else None))  # fmt: skip
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def decode_tile(self, level: int, tx: int, ty: int, k: int) -> np.ndarray:
        page = self.pages[level]
        i = ty * page.columns + tx
        data = os.pread(self.fd, page.counts[i], page.offsets[i])
        if page.tables:  # abbreviated stream: the shared tables (minus EOI) then the tile (minus SOI)
            data = page.tables[:-2] + data[2:]
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[k])
        if image is None:
            raise OSError(f"{self.path}: tile ({tx}, {ty}) of level {level} does not decode")
        return image

    def read(self, level: int, k: int, x: int, y: int, size: int) -> np.ndarray:
        """``size``² RGB pixels of virtual level (level, 1/k) with top-left (x, y) in virtual pixels."""
        page = self.pages[level]
        t = page.tile // k
        tx0, ty0, tx1, ty1 = x // t, y // t, (x + size - 1) // t, (y + size - 1) // t
        canvas = np.empty(((ty1 - ty0 + 1) * t, (tx1 - tx0 + 1) * t, 3), np.uint8)
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                block = self.decode_tile(level, tx, ty, k)
                canvas[(ty - ty0) * t : (ty - ty0 + 1) * t, (tx - tx0) * t : (tx - tx0 + 1) * t] = block
        ox, oy = x - tx0 * t, y - ty0 * t
        return cv2.cvtColor(canvas[oy : oy + size, ox : ox + size], cv2.COLOR_BGR2RGB)


def virtual_region(entry: Any, plan: Any, max_scale: int = 8) -> tuple[int, int, int, int, int]:
    """(level, k, x, y, size) in virtual pixels covering the same footprint as ``plan`` (same centre and microns)."""
    levels = list(entry.levels)
    mpps = [lv.mpp for lv in levels]
    scales = tuple(s for s in SCALES if s <= max_scale)
    level, k = choose_virtual_level(mpps, plan.target_mpp, scales) if max_scale > 1 else (plan.level, 1)
    lv_plan = levels[plan.level]
    cx = plan.location[0] + plan.read_size * lv_plan.downsample / 2
    cy = plan.location[1] + plan.read_size * lv_plan.downsample / 2
    lv = levels[level]
    unit = lv.downsample * k  # level-0 pixels per virtual pixel
    size = max(1, round(plan.out_px * plan.target_mpp / (lv.mpp * k)))
    vw, vh = lv.width // k, lv.height // k
    x = min(max(round(cx / unit - size / 2), 0), vw - size)
    y = min(max(round(cy / unit - size / 2), 0), vh - size)
    return level, k, x, y, size


class FastReadTileSource(TileSource):
    """A TileSource whose host reads decode JPEG tiles at reduced scale (GPU reads are unchanged).

    ``linear_finish``: return the tile already resized to ``tile_px`` with bilinear interpolation. After DCT
    scaling the remaining factor is below 2, where bilinear barely aliases, and OpenCV's ``INTER_AREA`` (what
    the loaders use) is slow at non-integer factors.
    """

    def __init__(self, *args: Any, max_scale: int = 8, linear_finish: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_scale, self.linear_finish = max_scale, linear_finish
        self._readers: dict[str, ScaledTileReader] = {}

    @classmethod
    def from_source(cls, source: TileSource, max_scale: int = 8, linear_finish: bool = False) -> FastReadTileSource:
        fast = cls.__new__(cls)
        fast.__dict__.update(source.__getstate__())
        fast.max_scale, fast.linear_finish, fast._readers = max_scale, linear_finish, {}
        return fast

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_readers"] = {}
        return state

    def reader(self, index: int) -> ScaledTileReader:
        entry = self.slides[index]
        reader = self._readers.get(entry.path)
        if reader is None:
            reader = ScaledTileReader(entry.path, [(lv.width, lv.height) for lv in entry.levels])
            self._readers[entry.path] = reader
        return reader

    def read_spec(self, spec: Any, device: str = "cpu") -> Any:
        if device != "cpu":
            return super().read_spec(spec, device)
        level, k, x, y, size = virtual_region(self.slides[spec.slide], spec.plan, self.max_scale)
        region = self.reader(spec.slide).read(level, k, x, y, size)
        if self.linear_finish and size != self.tile_px:
            region = cv2.resize(region, (self.tile_px, self.tile_px), interpolation=cv2.INTER_LINEAR)
        return region
