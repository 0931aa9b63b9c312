"""Native slide readers behind :class:`gapless.pipeline.slides.slide.Slide`: cuCIM and OpenSlide.

Both take level-0 (x, y) locations and level-pixel (w, h) sizes. TIFF files are checked for truncation when
opened, and the tiles a cuCIM read touches are vetted first, because cuCIM does not raise on a tile it cannot
decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class PageLayout:
    """Where one tiled TIFF page keeps its tiles: enough to vet a tile before a decoder sees it."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    jpeg: bool
    offsets: np.ndarray
    counts: np.ndarray
    jpeg_tables: bytes | None = None  # shared quantisation/Huffman tables (JPEGTables tag), as SVS files use

    def tiles_touched(self, lx: int, ly: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(columns, rows, tile indices in row-major order) of the tiles a level-pixel box (lx, ly, w, h) touches."""
        tx = np.arange(lx // self.tile_width, (lx + w - 1) // self.tile_width + 1)
        ty = np.arange(ly // self.tile_height, (ly + h - 1) // self.tile_height + 1)
        cols = -(-self.width // self.tile_width)
        return tx, ty, (ty[:, None] * cols + tx[None, :]).ravel()


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def tiff_layout(path: Path) -> list[PageLayout] | None:
    """Tile layout of every tiled page of a TIFF (None for other formats); raises if the file is truncated."""
    if not is_tiff(path):
        return None
    import tifffile

    size = path.stat().st_size
    layout = []
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                offsets = np.asarray(page.dataoffsets, np.int64)
                counts = np.asarray(page.databytecounts, np.int64)
                if len(offsets) and int((offsets + counts).max()) > size:
                    raise SlideError(
                        f"{path}: truncated or corrupt file (image data of page {page.index} runs past the end "
                        f"of the {size}-byte file)"
                    )
                if page.is_tiled:
                    layout.append(PageLayout(page.imagewidth, page.imagelength, page.tilewidth, page.tilelength,
                                             page.compression == 7, offsets, counts,
                                             page.jpegtables or None))  # fmt: skip
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(f"{path}: corrupt TIFF ({exc})") from exc
    return layout


class CucimBackend:
    """cuCIM's ``CuImage``: tiled TIFF/SVS, decoded on the CPU or with nvJPEG on the GPU.

    cuCIM does not raise on an undecodable JPEG tile (it logs, and returns whatever the buffer held), so every tile
    a read touches is vetted once per process: it must have data, and JPEG tiles must start with a JPEG marker.
    """

    name = "cucim"

    def __init__(self, path: Path, layout: list[PageLayout] | None = None) -> None:
        from cucim import CuImage

        self._path = path
        self._image = CuImage(str(path))
        res = self._image.resolutions
        self.dimensions = [tuple(int(v) for v in d) for d in res["level_dimensions"]]
        self.downsamples = [float(d) for d in res["level_downsamples"]]
        pages = {(p.width, p.height): p for p in (layout or [])}
        self._pages = [pages.get(d) for d in self.dimensions]
        self._vetted = [np.zeros(len(p.offsets), bool) if p else None for p in self._pages]

    def properties(self) -> dict[str, str] | None:
        return None  # mpp is read from the TIFF tags directly (pipeline.slides.mpp)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        if self._pages[level] is not None:
            self._vet_tiles(location, level, size)
        region = self._image.read_region(location, size, level, device=device)
        if device == "cuda":
            import cupy

            pixels = cupy.asarray(region)
        else:
            pixels = np.asarray(region)
        return pixels[..., :3] if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels

    def _vet_tiles(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> None:
        page, vetted = self._pages[level], self._vetted[level]
        lx, ly = int(location[0] / self.downsamples[level]), int(location[1] / self.downsamples[level])
        cols = -(-page.width // page.tile_width)
        _, _, tiles = page.tiles_touched(lx, ly, size[0], size[1])
        tiles = tiles[(tiles < len(vetted))]
        todo = tiles[~vetted[tiles]]
        if not len(todo):
            return
        with open(self._path, "rb") as f:
            for tile in todo:
                ok = page.counts[tile] > 0
                if ok and page.jpeg:
                    f.seek(int(page.offsets[tile]))
                    ok = f.read(2) == b"\xff\xd8"
                if not ok:
                    raise SlideError(
                        f"{self._path}: tile ({tile % cols}, {tile // cols}) of level {level} cannot be "
                        "decoded (no JPEG data: corrupt or missing)"
                    )
                vetted[tile] = True

    def close(self) -> None:
        self._image = None


class OpenSlideBackend:
    """OpenSlide: NDPI, MRXS, SCN, DICOM and the other formats cuCIM does not read."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        if openslide.OpenSlide.detect_format(str(path)) is None:
            raise SlideError(f"{path}: not a whole-slide image format OpenSlide recognises")
        self._path = path
        self._slide = openslide.OpenSlide(str(path))
        self.dimensions = [tuple(int(v) for v in d) for d in self._slide.level_dimensions]
        self.downsamples = [float(d) for d in self._slide.level_downsamples]

    def properties(self) -> dict[str, str]:
        return dict(self._slide.properties)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        import openslide

        try:
            rgba = np.asarray(self._slide.read_region(location, level, size))
        except openslide.OpenSlideError as exc:
            # An OpenSlide handle stays in its error state after a failed read: reopen it for later reads.
            self._slide.close()
            self._slide = openslide.OpenSlide(str(self._path))
            raise SlideError(f"{path}: cannot decode the region at level {level}, {location} ({exc})") from exc
        pixels = np.ascontiguousarray(rgba[..., :3])
        if device == "cuda":
            import cupy

            return cupy.asarray(pixels)  # OpenSlide decodes on the host; upload for a uniform interface
        return pixels

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None
