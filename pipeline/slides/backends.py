"""Native slide readers behind :class:`pipeline.slides.slide.Slide`: cuCIM and OpenSlide.

Both take level-0 (x, y) locations and level-pixel (w, h) sizes. cuCIM does not raise on an undecodable JPEG
tile: it logs to stderr and returns black pixels. A region containing a whole-black tile block is therefore
checked against the file with tifffile, and a tile that does not decode raises an error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gapless.cli import UserError

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _TIFF_MAGIC


def check_tiff_integrity(path: Path) -> None:
    """Raise if a TIFF's directories or tile data run past the end of the file (a truncated copy)."""
    if not is_tiff(path):
        return
    import tifffile

    size = path.stat().st_size
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                offsets, counts = page.dataoffsets, page.databytecounts
                if offsets and max(o + c for o, c in zip(offsets, counts)) > size:
                    raise UserError(
                        f"{path}: truncated or corrupt file (image data of page {page.index} runs past the end "
                        f"of the {size}-byte file)"
                    )
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{path}: corrupt TIFF ({exc})") from exc


def tile_decodes(path: Path, width: int, height: int, tile_index: int) -> bool:
    """Whether tile ``tile_index`` of the tiled page of size ``width`` x ``height`` decodes (checked with tifffile)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            if page.is_tiled and (page.imagewidth, page.imagelength) == (width, height):
                fh = tif.filehandle
                fh.seek(page.dataoffsets[tile_index])
                data = fh.read(page.databytecounts[tile_index])
                try:
                    page.decode(data, tile_index, jpegtables=page.jpegtables)
                except Exception:
                    return False
                return True
    return True  # no matching page: nothing to contradict the reader


class CucimBackend:
    """cuCIM's ``CuImage``: tiled TIFF/SVS, decoded on the CPU or with nvJPEG on the GPU."""

    name = "cucim"

    def __init__(self, path: Path) -> None:
        from cucim import CuImage

        self._image = CuImage(str(path))
        res = self._image.resolutions
        self.dimensions = [tuple(int(v) for v in d) for d in res["level_dimensions"]]
        self.downsamples = [float(d) for d in res["level_downsamples"]]
        self.tile_sizes = [tuple(int(v) for v in t) for t in res["level_tile_sizes"]]

    def properties(self) -> dict[str, str] | None:
        return None  # mpp is read from the TIFF tags directly (pipeline.slides.mpp)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        region = self._image.read_region(location, size, level, device=device)
        if device == "cuda":
            import cupy

            pixels = cupy.asarray(region)
        else:
            pixels = np.asarray(region)
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = pixels[..., :3]
        if not bool(pixels.all()):  # some zero byte: rule out a tile that failed to decode
            self._check_blank_tiles(path, pixels, location, level)
        return pixels

    def _check_blank_tiles(self, path: Path, pixels: Any, location: tuple[int, int], level: int) -> None:
        tw, th = self.tile_sizes[level]
        width, height = self.dimensions[level]
        ds = self.downsamples[level]
        lx, ly = int(location[0] / ds), int(location[1] / ds)
        h, w = pixels.shape[:2]
        cols = (width + tw - 1) // tw
        for ty in range(ly // th, (ly + h - 1) // th + 1):
            for tx in range(lx // tw, (lx + w - 1) // tw + 1):
                y0, x0 = max(ty * th - ly, 0), max(tx * tw - lx, 0)
                block = pixels[y0 : min((ty + 1) * th - ly, h), x0 : min((tx + 1) * tw - lx, w)]
                if block.size and int(block.max()) == 0 and not tile_decodes(path, width, height, ty * cols + tx):
                    raise UserError(
                        f"{path}: tile ({tx}, {ty}) of level {level} cannot be decoded (corrupt image data)"
                    )

    def close(self) -> None:
        self._image = None


class OpenSlideBackend:
    """OpenSlide: NDPI, MRXS, SCN, DICOM and the other formats cuCIM does not read."""

    name = "openslide"

    def __init__(self, path: Path) -> None:
        import openslide

        if openslide.OpenSlide.detect_format(str(path)) is None:
            raise UserError(f"{path}: not a whole-slide image format OpenSlide recognises")
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
            raise UserError(f"{path}: cannot decode the region at level {level}, {location} ({exc})") from exc
        pixels = np.ascontiguousarray(rgba[..., :3])
        if device == "cuda":
            import cupy

            return cupy.asarray(pixels)  # OpenSlide decodes on the host; upload for a uniform interface
        return pixels

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._slide = None
