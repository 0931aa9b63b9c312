"""The structure of a TIFF-based slide, read with tifffile: which kind it is, where its pyramid is, where its tiles are.

- :func:`tiff_layout`: the tile layout (offsets, byte counts, JPEG tables) of every tiled page, SubIFDs included;
  it raises :class:`~gapless.errors.SlideError` when image data runs past the end of the file (truncation).
- :func:`tiff_pyramid`: the kind (Aperio SVS, OME-TIFF, Philips, NDPI, generic, ...), the pyramid's pages from
  largest to smallest, and the texts that hold the mpp (ImageDescription, OME-XML, resolution tags); whether every
  level is JPEG that gapless decodes itself (:func:`gapless_decodes`: the tifffile reader then needs no more than
  the levels' tile layouts, which :func:`inspect_tiff` reads once).

Readers compare the number of levels they see with the pyramid found here, so a reader that misses a pyramid kept
in SubIFDs (OME-TIFF) is noticed and the next reader tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
JPEG = 7  # the TIFF Compression value of JPEG ("new-style", tiles with optional shared JPEGTables)
_RGB, _YCBCR = 2, 6  # PhotometricInterpretation values


@dataclass(frozen=True)
class PageLayout:
    """Where one tiled TIFF page keeps its tiles: enough to fetch and vet a tile without a TIFF library."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    jpeg: bool
    offsets: np.ndarray
    counts: np.ndarray
    jpeg_tables: bytes | None = None  # shared quantisation/Huffman tables (JPEGTables tag), as SVS files use
    rgb: bool = False  # JPEG tiles of a page whose PhotometricInterpretation is RGB: components stored untransformed

    def tiles_touched(self, lx: int, ly: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, rows, tile indices in row-major order) of the tiles a level-pixel box (lx, ly, w, h) touches."""
        tx = np.arange(lx // self.tile_width, (lx + w - 1) // self.tile_width + 1)
        ty = np.arange(ly // self.tile_height, (ly + h - 1) // self.tile_height + 1)
        cols = -(-self.width // self.tile_width)
        return tx, ty, (ty[:, None] * cols + tx[None, :]).ravel()

    def tile_name(self, tile: int) -> str:
        """``(column, row)`` of tile index ``tile``, for messages."""
        cols = -(-self.width // self.tile_width)
        return f"({tile % cols}, {tile // cols})"

    def check_data(self, path: Any, level: int, tiles: Any) -> None:
        """Raise :class:`SlideError` naming the first of ``tiles`` (indices) that holds no image data: a byte count
        of zero (sparse or damaged pages) or no entry in the page's tile table. Decoders given such a tile return
        whatever fills the buffer."""
        tiles = np.asarray(tiles, np.int64)
        present = tiles < len(self.counts)
        empty = tiles[~present]
        if not len(empty):
            empty = tiles[self.counts[tiles] <= 0]
        if len(empty):
            raise SlideError(f"{path}: tile {self.tile_name(int(empty[0]))} of level {level} has no image data")


@dataclass(frozen=True)
class TiffPyramid:
    """The main image of a TIFF slide: its kind, its pyramid pages (largest first) and its metadata texts."""

    kind: str  # svs | ome | philips | ndpi | scn | bif | qpi | generic
    pages: list[Any] = field(repr=False)  # tifffile TiffPage per level (valid while the file is open)
    sizes: list[tuple[int, int]]  # (width, height) per level
    description: str = ""
    ome_xml: str = ""
    resolution: tuple[float, int] | None = None  # (XResolution in pixels per unit, ResolutionUnit) of level 0
    jpeg: bool = False  # every level is JPEG-tiled in a way gapless decodes itself (:func:`gapless_decodes`)
    layouts: list[PageLayout] | None = field(default=None, repr=False)  # per level; set by :func:`inspect_tiff`

    @property
    def levels(self) -> int:
        return len(self.sizes)


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in TIFF_MAGIC


def page_layout(page: Any) -> PageLayout:
    jpeg = page.compression == JPEG
    return PageLayout(page.imagewidth, page.imagelength, page.tilewidth, page.tilelength, jpeg,
                      np.asarray(page.dataoffsets, np.int64), np.asarray(page.databytecounts, np.int64),
                      page.jpegtables or None, jpeg and page.photometric == _RGB)  # fmt: skip


def gapless_decodes(page: Any) -> bool:
    """Whether gapless's own strict JPEG decoding reads ``page``: tiled, JPEG, 8-bit RGB or YCbCr, interleaved."""
    return (page.is_tiled and page.compression == JPEG and page.photometric in (_RGB, _YCBCR)
            and page.samplesperpixel == 3 and page.bitspersample == 8 and page.planarconfig == 1)  # fmt: skip


def _check_extent(path: Path, page: Any, size: int) -> None:
    offsets = np.asarray(page.dataoffsets, np.int64)
    counts = np.asarray(page.databytecounts, np.int64)
    if len(offsets) and int((offsets + counts).max()) > size:
        raise SlideError(
            f"{path}: truncated or corrupt file (image data of page {page.index} runs past the end of the "
            f"{size}-byte file)"
        )


def _all_pages(tif: Any) -> list[Any]:
    """Top-level pages, and after the first its SubIFD pages (where OME-TIFF keeps the reduced levels)."""
    pages = []
    for page in tif.pages:
        pages.append(page)
        if page.index == 0 and page.subifds:
            pages.extend(level.pages[0] for level in tif.series[0].levels[1:])
    return pages


def inspect_tiff(path: Path) -> tuple[list[PageLayout], TiffPyramid]:
    """(tile layout of every tiled page, the pyramid) of a TIFF; raises :class:`SlideError` when it is truncated
    or unreadable."""
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            pages = _all_pages(tif)
            for page in pages:
                _check_extent(path, page, size)
            layouts = {id(page): page_layout(page) for page in pages if page.is_tiled}
            pyramid = tiff_pyramid(tif)
            levels = [layouts.get(id(page)) or page_layout(page) for page in pyramid.pages]
            return list(layouts.values()), replace(pyramid, layouts=levels)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(f"{path}: corrupt TIFF ({exc})") from exc


def tiff_layout(path: Path) -> list[PageLayout] | None:
    """Tile layout of every tiled page of a TIFF (None for other formats); raises if the file is truncated."""
    return inspect_tiff(path)[0] if is_tiff(path) else None


def _kind(tif: Any) -> str:
    for kind in ("svs", "ome", "philips", "ndpi", "scn", "bif", "qpi"):
        if getattr(tif, f"is_{kind}", False):
            return kind
    return "generic"


def tiff_pyramid(tif: Any) -> TiffPyramid:
    """The pyramid of an open ``tifffile.TiffFile``: OME-TIFF and vendor kinds from the first series' levels
    (SubIFDs included), the others from the tiled top-level pages of decreasing size and the first page's shape.
    A TIFF without tiled pages has a pyramid of no levels."""
    kind = _kind(tif)
    first = tif.pages.first
    if kind not in ("svs", "philips", "generic"):  # OME's SubIFDs, and vendor layouts tifffile knows
        pages = [level.pages[0] for level in tif.series[0].levels]
    else:
        pages = []
        for page in tif.pages:
            if not page.is_tiled or page.imagewidth <= 0:
                continue
            if pages:
                prev = pages[-1]
                same_shape = abs(page.imagewidth / page.imagelength - prev.imagewidth / prev.imagelength) < 0.02
                if page.imagewidth >= prev.imagewidth or not same_shape:
                    continue
            pages.append(page)
    tags = first.tags
    x_res, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    resolution = None
    if x_res is not None and unit is not None:
        num, den = x_res.value if isinstance(x_res.value, tuple) else (x_res.value, 1)
        resolution = (num / den if den else 0.0, int(unit.value))
    return TiffPyramid(kind, pages, [(p.imagewidth, p.imagelength) for p in pages], first.description or "",
                       tif.ome_metadata or "" if kind == "ome" else "", resolution,
                       bool(pages) and all(gapless_decodes(p) for p in pages))  # fmt: skip
