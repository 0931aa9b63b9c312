"""Crop-and-resize on the CPU with OpenCV: the baseline loaders' version of the DALI graph's first step.

``INTER_AREA`` averages every source pixel that falls in an output pixel when shrinking, which is the antialiased
downscale (the same filter family as DALI's ``antialias=True`` linear resize, which widens its triangle filter to
the scale factor). Enlarging (only when a target mpp is finer than the slide's own) uses bilinear interpolation,
as DALI does.
"""

from __future__ import annotations

import cv2
import numpy as np


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HWC uint8 image to ``size`` x ``size`` (antialiased when shrinking)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if min(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interp)


def crop_resize(region: np.ndarray, tile_px: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ``box`` = (x, y, w, h) out of ``region`` (whole region when None) and resize it to ``tile_px``²."""
    if box is not None:
        x, y, w, h = box
        region = region[y : y + h, x : x + w]
    return resize_square(region, tile_px)
