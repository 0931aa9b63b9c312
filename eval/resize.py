"""Antialiased downsampling in steps of at most 2x, and the centre crops the benchmark tiles are cut from.

A benchmark tile at mpp ``t`` is the centre ``224 · t / base_mpp`` px of a region read at ``base_mpp``, shrunk to
224 px. Shrinking by up to 8x in one go lets each output pixel see only part of its footprint with some
interpolators; here the image is halved with OpenCV's area filter (an exact 2 x 2 box mean on even sizes) while it is
at least twice the target, and one final area resize covers the remaining factor in [1, 2).
"""

from __future__ import annotations

import cv2
import numpy as np


def downsample(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Shrink ``image`` (H x W [x C]) to ``size`` (square side, or (width, height)) in area steps of at most 2x."""
    width, height = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    if width > w or height > h:
        raise ValueError(f"downsample cannot enlarge: {w}x{h} -> {width}x{height}")
    out = np.ascontiguousarray(image)
    while out.shape[1] >= 2 * width and out.shape[0] >= 2 * height:
        half = ((out.shape[1] + 1) // 2, (out.shape[0] + 1) // 2)
        out = cv2.resize(out, half, interpolation=cv2.INTER_AREA)
    if out.shape[1] != width or out.shape[0] != height:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    return out


def centre_crop(image: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side`` x ``side`` px of ``image`` (floor offset when the margin is odd)."""
    h, w = image.shape[:2]
    if side > h or side > w:
        raise ValueError(f"cannot crop {side} px from a {w}x{h} image")
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def crop_side(mpp: float, base_mpp: float, tile_px: int = 224) -> int:
    """Side in base-level pixels of the footprint of a ``tile_px`` tile at ``mpp``: round(tile_px · mpp / base)."""
    return int(round(tile_px * mpp / base_mpp))


def multiscale_tiles(region: np.ndarray, mpps: list[float], base_mpp: float, tile_px: int = 224) -> list[np.ndarray]:
    """One ``tile_px`` tile per mpp, all centred on the centre of ``region`` (read at ``base_mpp``)."""
    return [downsample(centre_crop(region, crop_side(m, base_mpp, tile_px)), tile_px) for m in mpps]
