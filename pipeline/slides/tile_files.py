"""The JPEG tiles of TIFF/SVS pages as byte streams, and the check that a tile's data is whole before a decoder
sees it.

Decoders that take raw tile streams (nvImageCodec, nvJPEG, DALI's decoder, cuCIM's plugins) decode damaged
entropy-coded data without failing: a tile whose start marker is intact but whose bytes are corrupted in the
middle comes out as grey blocks and colour noise, with at most a warning on stderr. :meth:`TileFiles.vet` decodes
each tile once per process with libjpeg-turbo in strict mode (a warning is an error) at 1/8 scale, where the
inverse DCT reduces to the DC term and the cost is mostly the entropy decoding that finds the damage. A region
touching a tile that fails raises :class:`~gapless.errors.SlideError`, so the tile source retries it elsewhere and
counts it.

:class:`TileFiles` keeps a bounded set of open files per process with their page layouts and which tiles passed.
Not picklable: make one per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.backends import PageLayout, tiff_layout
from gapless.pipeline.slides.decoding import complete_stream, vet_jpeg
from gapless.pipeline.slides.planning import level_origin


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


def jpeg_stream(page: PageLayout, data: bytes) -> bytes:
    """A tile's complete JPEG stream (the page's shared tables spliced in); ValueError without a start marker."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start-of-image marker")
    return complete_stream(data, page.jpeg_tables)


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

    def page(self, request: RegionRequest) -> PageLayout | None:
        """The TIFF page of the request's level (None for other formats or a level that is no tiled page)."""
        return self._open(request.path).pages.get(tuple(request.level_size))

    def jpeg_page(self, request: RegionRequest) -> PageLayout | None:
        """The request's page when it is a JPEG-tiled TIFF page, else None (never raises)."""
        try:
            page = self.page(request)
        except (OSError, SlideError):
            return None
        return page if page is not None and page.jpeg else None

    def touched(self, request: RegionRequest, page: PageLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, rows, tile indices in row-major order) of the page's tiles the region covers."""
        return page.tiles_touched(*request.level_origin, *request.size)

    def stream(self, request: RegionRequest, page: PageLayout, tile: int, vet: bool = False) -> bytes:
        """Tile ``tile``'s complete JPEG stream; with ``vet``, checked first (once per process)."""
        if tile >= len(page.offsets) or page.counts[tile] <= 0:
            raise SlideError(f"{request.path}: tile {self._name(page, tile)} of level {request.level} has no data "
                             "(missing)")  # fmt: skip
        entry = self._open(request.path)
        data = os.pread(entry.fd, int(page.counts[tile]), int(page.offsets[tile]))
        if len(data) != int(page.counts[tile]):
            raise SlideError(f"{request.path}: tile {self._name(page, tile)} of level {request.level} is cut short "
                             "(truncated file)")  # fmt: skip
        try:
            stream = jpeg_stream(page, data)
            if vet:
                vetted = self._vetted(request.path, page)
                if not vetted[tile]:
                    vet_jpeg(stream)
                    vetted[tile] = True
                    self.tiles_vetted += 1
        except ValueError as exc:
            raise SlideError(f"{request.path}: tile {self._name(page, tile)} of level {request.level} cannot be "
                             f"decoded ({exc}: corrupt data)") from exc  # fmt: skip
        return stream

    def vet(self, request: RegionRequest) -> None:
        """Check every tile the region covers (a no-op where its level is no JPEG-tiled TIFF page)."""
        page = self.jpeg_page(request)
        if page is None:
            return
        done = self._vetted(request.path, page)
        for tile in self.touched(request, page)[2]:
            if tile >= len(done) or not done[tile]:
                self.stream(request, page, int(tile), vet=True)

    def _vetted(self, path: str, page: PageLayout) -> np.ndarray:
        return self._open(path).vetted.setdefault((page.width, page.height), np.zeros(len(page.offsets), bool))

    @staticmethod
    def _name(page: PageLayout, tile: int) -> str:
        cols = -(-page.width // page.tile_width)
        return f"({tile % cols}, {tile // cols})"

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
        for entry in self._files.values():
            os.close(entry.fd)
        self._files.clear()

    def __reduce__(self) -> Any:
        raise TypeError("TileFiles holds open files: make one per process")
