"""The tiles of an evaluation-set region: centre crops of one region, one per mpp, shrunk to the model's size.

A tile at mpp ``t`` is the centre ``round(tile_px · t / base_mpp)`` px of a region read at ``base_mpp``, shrunk to
``tile_px`` in steps of at most 2x, so every tile of a region shows the same tissue centre at its own magnification.
Two filters (the set file records which, :data:`RESAMPLINGS`):

- ``paper`` (how the paper's benchmark tiles were made): the step sizes halve (rounding down) until the target;
  each step is a Gaussian filter with sigma = (step's source size / its target size) / 2.5 on each channel (SciPy
  ``ndimage.gaussian_filter``, reflected edges, uint8 in and out: SciPy truncates each 1-D pass to uint8, which
  darkens a step by about one grey level, as it did the paper's tiles), then a bicubic resize (PIL).
- ``area``: exact 2x box averages while at least twice the target, then one area resize
  (:func:`gapless.pipeline.resize.downsample`).

They differ most between a 1.5x and a 2x step, exactly what separates intermediate from standard mpps, so the
choice moves a measured gap: compare models only on tiles made the same way.
"""

from __future__ import annotations

import numpy as np

from gapless.pipeline.resize import downsample

RESAMPLINGS = ("paper", "area")
SIGMA_PER_FACTOR = 1 / 2.5


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


def halving_steps(source: int, target: int) -> list[int]:
    """The sizes a ``source`` px square passes through on its way to ``target``: halved (floor) while above it."""
    sizes = []
    while source > target:
        source = max(target, source // 2)
        sizes.append(source)
    return sizes


def gaussian_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """The paper's downsampling of a square uint8 RGB image to ``size`` px (see the module docstring)."""
    from PIL import Image
    from scipy import ndimage

    current = np.ascontiguousarray(image)
    if current.shape[0] != current.shape[1]:
        raise ValueError(f"gaussian_bicubic takes square images, got {current.shape[1]}x{current.shape[0]}")
    if size > current.shape[0]:
        raise ValueError(f"gaussian_bicubic cannot enlarge: {current.shape[0]} -> {size}")
    for step in halving_steps(current.shape[0], size):
        sigma = current.shape[0] / step * SIGMA_PER_FACTOR
        # Rows, then columns, of each channel apart (sigma 0 across channels): what filtering channel by channel does.
        filtered = ndimage.gaussian_filter(current, sigma=(sigma, sigma, 0), mode="reflect")
        current = np.asarray(Image.fromarray(filtered).resize((step, step), Image.Resampling.BICUBIC))
    return current


def shrink(image: np.ndarray, size: int, resampling: str = "paper") -> np.ndarray:
    """Shrink a square crop to ``size`` px with the named filter."""
    if resampling == "paper":
        return gaussian_bicubic(image, size)
    if resampling == "area":
        return downsample(image, size)
    raise ValueError(f"unknown resampling '{resampling}' (choose from {', '.join(RESAMPLINGS)})")


def multiscale_tiles(
    region: np.ndarray, mpps: list[float], base_mpp: float, tile_px: int = 224, resampling: str = "paper"
) -> list[np.ndarray]:
    """One ``tile_px`` tile per mpp, all centred on the centre of ``region`` (read at ``base_mpp``)."""
    return [shrink(centre_crop(region, crop_side(m, base_mpp, tile_px)), tile_px, resampling) for m in mpps]
