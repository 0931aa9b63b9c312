"""Regions assembled from the tiles of a pyramid level, the tifffile reader built on it, and tile vetting.

:func:`assemble_region` cuts a region out of the tiles it touches, decoded one by one by a callback; the tifffile
reader (here) and the wsidicom reader (:mod:`gapless.pipeline.slides.dicom`) share it. JPEG tiles are decoded
strictly (:func:`gapless.pipeline.slides.decoding.decode_jpeg`), so a damaged tile raises instead of yielding
noise. The tifffile reader reads any tiled TIFF pyramid that tifffile understands, OME-TIFF pyramids kept in
SubIFDs included, which neither cuCIM nor OpenSlide sees.

Tile vetting, for decoders that do not report all damage: :func:`vet_tiles` checks that each tile a read touches
holds data and decodes each JPEG tile strictly at 1/8 scale, once (:func:`vetted_stream` does it for one tile and
returns its stream). :class:`TileVetter` runs it for one open slide before cuCIM or OpenSlide decodes (cuCIM returns
the pixels of corrupt data, OpenSlide stops before the end of a tile's data);
:class:`gapless.pipeline.slides.tile_files.TileFiles` runs it for the batched GPU reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.decoding import complete_stream, decode_jpeg, tile_check_enabled, vet_jpeg
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.slides.tiff import PageLayout, page_layout, tiff_pyramid


def level_downsamples(sizes: list[tuple[int, int]]) -> list[float]:
    """Downsample of each level from level 0: the mean of the width and height ratios (as OpenSlide computes it)."""
    w0, h0 = sizes[0]
    return [(w0 / w + h0 / h) / 2.0 for w, h in sizes]


def assemble_region(
    origin: tuple[int, int],
    size: tuple[int, int],
    tile_size: tuple[int, int],
    decode: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """The (h, w, 3) uint8 region of ``size`` (w, h) at level pixel ``origin`` (x, y), from ``decode(col, row)``."""
    (lx, ly), (w, h), (tw, th) = origin, size, tile_size
    out = np.empty((h, w, 3), np.uint8)
    for row in range(ly // th, (ly + h - 1) // th + 1):
        for col in range(lx // tw, (lx + w - 1) // tw + 1):
            tile = decode(col, row)
            x0, y0 = col * tw, row * th
            sx0, sx1, sy0, sy1 = max(lx, x0), min(lx + w, x0 + tw), max(ly, y0), min(ly + h, y0 + th)
            part = tile[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
            if part.shape[:2] != (sy1 - sy0, sx1 - sx0):
                raise ValueError(f"tile ({col}, {row}) has shape {tile.shape[:2]}, smaller than its {th}x{tw} cell")
            out[sy0 - ly : sy1 - ly, sx0 - lx : sx1 - lx] = part[..., :3] if part.ndim == 3 else part[..., None]
    return out


def to_device(pixels: np.ndarray, device: str) -> Any:
    if device == "cuda":
        import cupy

        return cupy.asarray(pixels)  # decoded on the host; uploaded for a uniform interface
    return pixels


class TifffileBackend:
    """Any tiled TIFF pyramid tifffile understands (generic, SVS, Philips, OME-TIFF with SubIFDs), decoded here.

    ``jpeg_levels``: the tile layout of each level of a pyramid that is JPEG throughout
    (:attr:`gapless.pipeline.slides.formats.SlideFormat.jpeg_levels`): the tiles are then read and decoded from the
    layouts alone, without parsing the file a second time; other pyramids are decoded by tifffile's codecs."""

    name = "tifffile"

    def __init__(self, path: Path, jpeg_levels: list[PageLayout] | None = None) -> None:
        self._tif: Any = None
        self._pages: list[Any] = []
        if jpeg_levels:
            self._layouts = list(jpeg_levels)
        else:
            import tifffile

            self._tif = tifffile.TiffFile(path)
            try:
                pyramid = tiff_pyramid(self._tif)
                if not pyramid.levels or not all(page.is_tiled for page in pyramid.pages):
                    raise SlideError(f"{path}: tifffile reads tiled pyramids only (this one has untiled levels)")
                self._pages = pyramid.pages
                self._layouts = [page_layout(page) for page in pyramid.pages]
            except Exception:
                self._tif.close()
                raise
        self._fd: int | None = os.open(path, os.O_RDONLY)
        self.dimensions = [(layout.width, layout.height) for layout in self._layouts]
        self.downsamples = level_downsamples(self.dimensions)

    def properties(self) -> None:
        return None  # mpp comes from the TIFF structure (pipeline.slides.formats)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        layout, strict = self._layouts[level], tile_check_enabled()
        columns = -(-layout.width // layout.tile_width)

        def decode(col: int, row: int) -> np.ndarray:
            index = row * columns + col
            data = tile_bytes(self._fd, layout, index, path, level)
            try:
                if layout.jpeg:
                    return decode_jpeg(complete_stream(data, layout.jpeg_tables, layout.rgb), strict)
                page = self._pages[level]
                segment = page.decode(data, index, jpegtables=page.jpegtables)[0]
                return segment.reshape(segment.shape[-3:])
            except Exception as exc:
                raise SlideError(f"{path}: damaged image data in tile ({col}, {row}) of level {level} ({exc})") from exc

        origin = level_origin(location, self.downsamples[level])
        region = assemble_region(origin, size, (layout.tile_width, layout.tile_height), decode)
        return to_device(region, device)

    def close(self) -> None:
        if self._tif is not None:
            self._tif.close()
            self._tif = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def jpeg_stream(page: PageLayout, data: bytes) -> bytes:
    """A tile's complete JPEG stream (the page's shared tables spliced in); ValueError without a start marker."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start-of-image marker")
    return complete_stream(data, page.jpeg_tables, page.rgb)


def tile_bytes(fd: int, page: PageLayout, tile: int, path: Any, level: int) -> bytes:
    """The stored bytes of tile ``tile``; :class:`SlideError` when it has no data or the file ends inside it."""
    page.check_data(path, level, [tile])
    data = os.pread(fd, int(page.counts[tile]), int(page.offsets[tile]))
    if len(data) != int(page.counts[tile]):
        raise SlideError(f"{path}: tile {page.tile_name(tile)} of level {level} is cut short (truncated file)")
    return data


def vetted_stream(fd: int, page: PageLayout, tile: int, path: Any, level: int, vetted: np.ndarray | None) -> bytes:
    """Tile ``tile``'s complete JPEG stream, checked first (decoded strictly at 1/8 scale) unless ``vetted`` says
    it passed already, or is None (no check); :class:`SlideError` naming the tile when it is damaged."""
    data = tile_bytes(fd, page, tile, path, level)
    try:
        stream = jpeg_stream(page, data)
        if vetted is not None and not vetted[tile]:
            vet_jpeg(stream)
            vetted[tile] = True
    except ValueError as exc:
        raise SlideError(f"{path}: damaged image data in tile {page.tile_name(tile)} of level {level} ({exc})") from exc
    return stream


def vet_tiles(fd: int, page: PageLayout, tiles: np.ndarray, path: Any, level: int, vetted: np.ndarray) -> int:
    """Check tiles a read touches before a decoder that does not report all damage sees them: every tile must hold
    data, and each JPEG tile is decoded strictly once (``vetted`` marks those that passed). Returns how many tiles
    were decoded."""
    page.check_data(path, level, tiles)
    if not page.jpeg:
        return 0
    todo = tiles[~vetted[tiles]]
    for tile in todo.tolist():
        vetted_stream(fd, page, tile, path, level, vetted)
    return len(todo)


class TileVetter:
    """``vetter.check(level, (lx, ly), (w, h))`` raises :class:`SlideError` if a tile the box touches holds no data
    or (JPEG pages) damaged data; each JPEG tile is decoded (strictly, at 1/8 scale) once per vetter, that is once
    per open slide. Levels that are no tiled page of ``layout`` are not checked."""

    def __init__(self, path: Path, dimensions: list[tuple[int, int]], layout: list[PageLayout] | None) -> None:
        pages = {(p.width, p.height): p for p in layout or []}
        self._path = path
        self._pages = [pages.get(tuple(d)) for d in dimensions]
        self._vetted = [np.zeros(len(p.offsets), bool) if p else None for p in self._pages]
        self._fd: int | None = None

    def check(self, level: int, origin: tuple[int, int], size: tuple[int, int]) -> None:
        page, vetted = self._pages[level], self._vetted[level]
        if page is None:
            return
        if self._fd is None and page.jpeg:
            self._fd = os.open(self._path, os.O_RDONLY)
        fd = -1 if self._fd is None else self._fd  # tiles of other compressions are only checked for data
        vet_tiles(fd, page, page.tiles_touched(*origin, *size)[2], self._path, level, vetted)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
