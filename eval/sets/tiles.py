"""The tiles of an evaluation-set region: centre crops of one region, one per mpp, shrunk to the model's size.

A tile at mpp ``t`` is the centre ``224 · t / base_mpp`` px of a region read at ``base_mpp``, shrunk to 224 px in
antialiased steps of at most 2x (:func:`gapless.pipeline.resize.downsample`), so every tile of a region shows the
same tissue centre at its own magnification.
"""

from __future__ import annotations

import numpy as np

from gapless.pipeline.resize import downsample


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
