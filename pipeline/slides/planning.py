"""Region planning: which level to read, how many pixels, and where, for a tile at a target mpp.

A tile of ``out_px`` pixels at target mpp ``t`` covers ``out_px * t`` microns. It is read from the coarsest level
whose mpp ``s`` is at most ``t`` (never upsampled), as a square of ``round(out_px * t / s)`` level pixels, and then
resized to ``out_px``. Locations are level-0 pixels (x, y) of the region's top-left corner, snapped so that they
map to whole pixels of the chosen level, and clamped so that no read leaves the slide.

The conversions between level-0 pixels and pixels of a level live here, and every read path uses them: a level-0
coordinate lies in level pixel ``floor(x / downsample)`` (:func:`level_origin`; cuCIM counts the same way), and a
level pixel is reached from the smallest level-0 coordinate inside it, ``ceil(p * downsample)``
(:func:`level0_location`). A small tolerance absorbs the rounding of the products, so that each is the other's
inverse for any downsample, whole or not. OpenSlide, which interpolates where a location falls between level
pixels, is started from :func:`level0_pixel_at_or_before`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gapless.errors import RegionTooLargeError


class _LevelLike(Protocol):
    index: int
    width: int
    height: int
    downsample: float
    mpp: float


@dataclass(frozen=True)
class RegionPlan:
    """What to read for one tile: ``read_size`` x ``read_size`` pixels of ``level`` at level-0 ``location``."""

    level: int
    location: tuple[int, int]
    read_size: int
    level_mpp: float
    target_mpp: float
    out_px: int

    @property
    def pixels_per_output_pixel(self) -> float:
        """Decoded region pixels per output pixel (1.0 when the level matches the target exactly)."""
        return (self.read_size / self.out_px) ** 2


def choose_level(level_mpps: Sequence[float], target_mpp: float, tol: float = 1e-3) -> int:
    """Index of the coarsest level with mpp <= target * (1 + tol); level 0 when every level is coarser.

    The tolerance makes 0.2501 count as 0.25: scanners round their mpp, and a 0.04 % mismatch must not send a
    read to a level four times larger.
    """
    if target_mpp <= 0:
        raise ValueError(f"target mpp must be positive, got {target_mpp}")
    limit = target_mpp * (1.0 + tol)
    best = 0
    for i, mpp in enumerate(level_mpps):
        if mpp <= limit and mpp >= level_mpps[best]:
            best = i
    return best


def read_size_px(out_px: int, target_mpp: float, level_mpp: float) -> int:
    """Side in level pixels of the region that becomes an ``out_px`` tile at ``target_mpp``."""
    return max(1, round(out_px * target_mpp / level_mpp))


def plan_region(
    levels: Sequence[_LevelLike],
    target_mpp: float,
    out_px: int,
    center_xy_level0: tuple[float, float],
    tol: float = 1e-3,
) -> RegionPlan:
    """Plan the read for a tile centred (as nearly as the slide allows) on ``center_xy_level0``."""
    index = choose_level([lv.mpp for lv in levels], target_mpp, tol)
    lv = levels[index]
    size = read_size_px(out_px, target_mpp, lv.mpp)
    if size > lv.width or size > lv.height:
        raise RegionTooLargeError(
            f"a {out_px} px tile at {target_mpp:g} mpp needs {size} x {size} px of level {index} "
            f"({out_px * target_mpp:.0f} um square) but the level is {lv.width} x {lv.height} px"
        )
    location = level0_location(region_origin(center_xy_level0, size, lv), lv.downsample)
    return RegionPlan(index, location, size, float(lv.mpp), float(target_mpp), int(out_px))


def region_origin(center_xy_level0: tuple[float, float], size: int, level: _LevelLike) -> tuple[int, int]:
    """Top-left corner, in pixels of ``level``, of a ``size``² region centred as nearly as the level allows on a
    level-0 point: clamped so that the region stays inside the level."""
    ds = level.downsample
    lx = min(max(round(center_xy_level0[0] / ds - size / 2), 0), level.width - size)
    ly = min(max(round(center_xy_level0[1] / ds - size / 2), 0), level.height - size)
    return int(lx), int(ly)


# Absorbs the rounding of level-0 x downsample products (exact ones are integers): far below a pixel.
_TOLERANCE = 1e-6


def level_pixel(coord: float, downsample: float) -> int:
    """The pixel of a level (of ``downsample``) that level-0 coordinate ``coord`` lies in."""
    return math.floor(coord / downsample + _TOLERANCE)


def level0_pixel(pixel: int, downsample: float) -> int:
    """The smallest level-0 coordinate inside pixel ``pixel`` of a level: :func:`level_pixel` maps it back."""
    return math.ceil(pixel * downsample - _TOLERANCE)


def level0_pixel_at_or_before(pixel: int, downsample: float) -> int:
    """The largest level-0 coordinate at or before the start of level pixel ``pixel``: for readers that start a
    read at the fractional level position ``coord / downsample`` (OpenSlide), the start that keeps the region
    from reaching past the level's edge."""
    return math.floor(pixel * downsample + _TOLERANCE)


def level_origin(location: Sequence[float], downsample: float) -> tuple[int, int]:
    """The level pixel (x, y) of a level-0 location."""
    return level_pixel(location[0], downsample), level_pixel(location[1], downsample)


def level0_location(origin: Sequence[int], downsample: float) -> tuple[int, int]:
    """The level-0 location of a level pixel (x, y): the inverse of :func:`level_origin`."""
    return level0_pixel(origin[0], downsample), level0_pixel(origin[1], downsample)
