"""The JPEG tiles of TIFF/SVS pages as byte streams, and the check that a tile's data is whole before a decoder
sees it.

Decoders that take raw tile streams (nvImageCodec, nvJPEG, DALI's decoder, cuCIM's plugins) decode damaged
entropy-coded data without failing: a tile whose start marker is intact but whose bytes are corrupted in the
middle comes out as grey blocks and colour noise, with at most a warning on stderr. :meth:`TileFiles.vet` checks
that each tile a region touches holds data and decodes each JPEG tile once per process with libjpeg-turbo in strict
mode (a warning is an error) at 1/8 scale, where the inverse DCT reduces to the DC term and the cost is mostly the
entropy decoding that finds the damage (:func:`gapless.pipeline.slides.tiled.vet_tiles`, which the host readers'
vetting shares). A region touching a tile that fails raises :class:`~gapless.errors.SlideError`, so the tile source
retries it elsewhere and counts it.

:class:`TileFiles` keeps a bounded set of open files per process with their page layouts and which tiles passed.
``close()`` closes them; a TileFiles dropped without it closes them when it is collected. Not picklable: make one
per process.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.slides.tiff import PageLayout, tiff_layout
from gapless.pipeline.slides.tiled import vet_tiles, vetted_stream


@dataclass(frozen=True)
class RegionRequest:
    """One region: ``size`` (w, h) pixels of pyramid level ``level`` at level-0 ``location`` (x, y)."""

    path: str
    location: tuple[int, int]
    level: int
    size: tuple[int, int]
    downsample: float
    level_size: tuple[int, int]  # (width, height) of the level: it finds the TIFF page

    @property
    def level_origin(self) -> tuple[int, int]:
        """Top-left corner in pixels of the level."""
        return level_origin(self.location, self.downsample)


def tile_pastes(page: PageLayout, request: RegionRequest, tx: np.ndarray, ty: np.ndarray) -> np.ndarray:
    """Where each touched tile (row-major over ``ty`` x ``tx``) lands in the region: int32 rows of (source y,
    source x, height, width, destination y, destination x), the tile's intersection with the region."""
    lx, ly = request.level_origin
    w, h = request.size
    cols, rows = np.meshgrid(np.asarray(tx, np.int64), np.asarray(ty, np.int64))
    x0 = np.maximum(lx, cols * page.tile_width).ravel()
    y0 = np.maximum(ly, rows * page.tile_height).ravel()
    x1 = np.minimum(lx + w, (cols + 1) * page.tile_width).ravel()
    y1 = np.minimum(ly + h, (rows + 1) * page.tile_height).ravel()
    src_y, src_x = y0 - rows.ravel() * page.tile_height, x0 - cols.ravel() * page.tile_width
    return np.stack([src_y, src_x, y1 - y0, x1 - x0, y0 - ly, x0 - lx], axis=1).astype(np.int32)


@dataclass
class _OpenFile:
    fd: int
    pages: dict[tuple[int, int], PageLayout]
    vetted: dict[tuple[int, int], np.ndarray]  # per page: which tiles passed the check


class TileFiles:
    """Tile streams of JPEG-tiled TIFF pages, read with ``pread`` from up to ``max_open`` open files."""

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = int(max_open)
        self._files: dict[str, _OpenFile] = {}
        self.tiles_vetted = 0  # running count, for statistics
        weakref.finalize(self, _close_files, self._files)  # the descriptors never outlive the object

    def page(self, request: RegionRequest) -> PageLayout | None:
        """The TIFF page of the request's level (None for other formats or a level that is no tiled page)."""
        return self._open(request.path).pages.get(tuple(request.level_size))

    def tiled_page(self, request: RegionRequest) -> PageLayout | None:
        """The request's page when it is a tiled TIFF page, else None (never raises)."""
        try:
            return self.page(request)
        except (OSError, SlideError):
            return None

    def jpeg_page(self, request: RegionRequest) -> PageLayout | None:
        """The request's page when it is a JPEG-tiled TIFF page, else None (never raises)."""
        page = self.tiled_page(request)
        return page if page is not None and page.jpeg else None

    def touched(self, request: RegionRequest, page: PageLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, rows, tile indices in row-major order) of the page's tiles the region covers."""
        return page.tiles_touched(*request.level_origin, *request.size)

    def stream(self, request: RegionRequest, page: PageLayout, tile: int, vet: bool = False) -> bytes:
        """Tile ``tile``'s complete JPEG stream; with ``vet``, checked first (once per process)."""
        vetted = self._vetted(request.path, page) if vet else None
        fresh = vetted is not None and tile < len(vetted) and not vetted[tile]
        stream = vetted_stream(self._open(request.path).fd, page, tile, request.path, request.level, vetted)
        self.tiles_vetted += int(fresh)
        return stream

    def vet(self, request: RegionRequest) -> None:
        """Check every tile the region covers: each holds data, and (JPEG pages) each passes a strict decode, once
        per process. A no-op where the level is no tiled TIFF page."""
        page = self.tiled_page(request)
        if page is not None:
            fd, vetted = self._open(request.path).fd, self._vetted(request.path, page)
            self.tiles_vetted += vet_tiles(fd, page, self.touched(request, page)[2], request.path, request.level,
                                           vetted)  # fmt: skip

    def _vetted(self, path: str, page: PageLayout) -> np.ndarray:
        """Which tiles of ``page`` passed the check (a flag per tile, made on the page's first use)."""
        vetted, key = self._open(path).vetted, (page.width, page.height)
        if key not in vetted:
            vetted[key] = np.zeros(len(page.offsets), bool)
        return vetted[key]

    def _open(self, path: str) -> _OpenFile:
        entry = self._files.get(path)
        if entry is None:
            pages = {(p.width, p.height): p for p in (tiff_layout(Path(path)) or [])}
            entry = _OpenFile(os.open(path, os.O_RDONLY), pages, {})
            self._files[path] = entry
            while len(self._files) > self.max_open:
                os.close(self._files.pop(next(iter(self._files))).fd)
        return entry

    def close(self) -> None:
        """Close every open file (they reopen on demand)."""
        _close_files(self._files)

    def __reduce__(self) -> Any:
        raise TypeError("TileFiles holds open files: make one per process")


def _close_files(files: dict[str, _OpenFile]) -> None:
    while files:
        os.close(files.popitem()[1].fd)
