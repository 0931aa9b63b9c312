"""Native slide readers behind :class:`gapless.pipeline.slides.slide.Slide`: cuCIM and OpenSlide.

Both take level-0 (x, y) locations and level-pixel (w, h) sizes. Neither reports all damage: cuCIM decodes a JPEG
tile whose data is corrupt without failing (it prints libjpeg's warning and returns the damaged pixels), OpenSlide
stops before the end of a tile's data, and both read a tile that holds no data as whatever fills the buffer. So the
tiles of TIFF files they read are vetted first (:class:`~gapless.pipeline.slides.tiled.TileVetter`: each tile holds
data, and each JPEG tile passes a strict decode, once per open slide). The readers gapless decodes itself are in
:mod:`gapless.pipeline.slides.tiled` (tifffile) and :mod:`gapless.pipeline.slides.dicom` (wsidicom). The TIFF
layout helpers are re-exported here for the batched reader (:mod:`gapless.pipeline.slides.tiled_decode`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.decoding import tile_check_enabled
from gapless.pipeline.slides.dicom import dicom_files
from gapless.pipeline.slides.planning import level0_pixel_at_or_before, level_origin
from gapless.pipeline.slides.tiff import PageLayout
from gapless.pipeline.slides.tiled import TileVetter

__all__ = ["CucimBackend", "OpenSlideBackend"]


class CucimBackend:
    """cuCIM's ``CuImage``: tiled TIFF/SVS/Philips, decoded on the CPU or with nvJPEG on the GPU."""

    name = "cucim"

    def __init__(self, path: Path, layout: list[PageLayout] | None = None) -> None:
        from cucim import CuImage

        self._image = CuImage(str(path))
        res = self._image.resolutions
        self.dimensions = [tuple(int(v) for v in d) for d in res["level_dimensions"]]
        self.downsamples = [float(d) for d in res["level_downsamples"]]
        self._vetter = TileVetter(path, self.dimensions, layout)

    def properties(self) -> dict[str, str] | None:
        return None  # mpp is read from the TIFF structure directly (pipeline.slides.formats)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        if tile_check_enabled():
            self._vetter.check(level, level_origin(location, self.downsamples[level]), size)
        region = self._image.read_region(location, size, level, device=device)
        if device == "cuda":
            import cupy

            pixels = cupy.asarray(region)
        else:
            pixels = np.asarray(region)
        return pixels[..., :3] if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels

    def close(self) -> None:
        self._image = None
        self._vetter.close()


class OpenSlideBackend:
    """OpenSlide: DICOM, NDPI, MRXS, SCN and the other formats cuCIM does not read."""

    name = "openslide"

    def __init__(self, path: Path, layout: list[PageLayout] | None = None) -> None:
        import openslide

        target = _dicom_instance(path) if path.is_dir() else path
        if openslide.OpenSlide.detect_format(str(target)) is None:
            raise SlideError(f"{path}: not a whole-slide image format OpenSlide recognises")
        self._target = target
        self._slide = openslide.OpenSlide(str(target))
        self.dimensions = [tuple(int(v) for v in d) for d in self._slide.level_dimensions]
        self.downsamples = [float(d) for d in self._slide.level_downsamples]
        self._vetter = TileVetter(path, self.dimensions, layout)

    def properties(self) -> dict[str, str]:
        return dict(self._slide.properties)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        import openslide

        ds = self.downsamples[level]
        origin = level_origin(location, ds)
        if tile_check_enabled():
            self._vetter.check(level, origin, size)
        # OpenSlide starts a read at level position location / downsample, interpolating when that falls between
        # level pixels: start at the nearest level-0 pixel at or before the level origin, so that the region never
        # reaches past the level's right or bottom edge (where it would blend in transparent pixels).
        start = (level0_pixel_at_or_before(origin[0], ds), level0_pixel_at_or_before(origin[1], ds))
        try:
            rgba = np.asarray(self._slide.read_region(start, level, size))
        except openslide.OpenSlideError as exc:
            # An OpenSlide handle stays in its error state after a failed read: reopen it for later reads.
            self._slide.close()
            self._slide = openslide.OpenSlide(str(self._target))
            raise SlideError(f"{path}: cannot decode the region at level {level}, {location} ({exc})") from exc
        pixels = np.ascontiguousarray(rgba[..., :3])
        if device == "cuda":
            import cupy

            return cupy.asarray(pixels)  # OpenSlide decodes on the host; upload for a uniform interface
        return pixels

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
            self._vetter.close()
            self._slide = None


def _dicom_instance(folder: Path) -> Path:
    """One instance file of a DICOM slide folder: OpenSlide opens it and finds the rest of the series."""
    files = dicom_files(folder)
    if not files:
        raise SlideError(f"{folder}: a folder without DICOM files")
    return files[0]
