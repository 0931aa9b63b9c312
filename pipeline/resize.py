"""Crop-and-resize on the CPU with OpenCV: the baseline loaders' version of the DALI graph's first step.

Shrinking is done in two parts: exact 2x box averages (``INTER_AREA`` at factor 2, OpenCV's fast integer path)
while the image is at least twice the output, then, for the remaining factor f in (1, 2), a Gaussian pre-filter of
sigma 0.5·sqrt(f² - 1) (widening the footprint to f) and bilinear interpolation. That is an antialiased downscale at a
fraction of the cost of one ``INTER_AREA`` resize by a non-integer factor, which OpenCV computes on a slow general
path: on 250–887 px tissue regions 0.16–1.2 ms against 0.55–3.5 ms, and closer to DALI's antialiased linear resize
(39–53 dB PSNR, against 43–56 dB for ``INTER_AREA``; plain bilinear for the last step falls to 36 dB). Continuous
sampling makes nearly every factor non-integer, so this is what keeps its resize as cheap as DU's.
Enlarging (only when a target mpp is finer than the slide's own) uses bilinear interpolation, as DALI does.
"""

from __future__ import annotations

import cv2
import numpy as np


def halve(image: np.ndarray) -> np.ndarray:
    """Exact 2x2 box average; an odd last row or column is replicated first, so no pixel is dropped."""
    h, w = image.shape[:2]
    if h % 2 or w % 2:
        image = cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square HWC uint8 image to ``size`` x ``size`` (antialiased when shrinking)."""
    image = np.ascontiguousarray(image)
    while min(image.shape[:2]) >= 2 * size:
        image = halve(image)
    if image.shape[:2] == (size, size):
        return image
    factor = image.shape[0] / size
    if factor > 1.0:
        # Widen the bilinear kernel's footprint to the remaining factor, as an antialiased resize does.
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5 * np.sqrt(factor * factor - 1.0))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def crop_resize(region: np.ndarray, tile_px: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ``box`` = (x, y, w, h) out of ``region`` (whole region when None) and resize it to ``tile_px``²."""
    if box is not None:
        x, y, w, h = box
        region = region[y : y + h, x : x + w]
    return resize_square(region, tile_px)
