"""Resizing on the CPU with OpenCV: every host-side resize of tiles and crops, in one place.

All shrinking starts the same way: exact 2x box averages (:func:`halve`, OpenCV's fast integer ``INTER_AREA`` path)
while the image is at least twice the output, so no output pixel sees only part of its footprint. What differs is
the last step, for the remaining factor in [1, 2):

- :func:`resize_square` (the baseline loaders' crop-and-resize): a Gaussian pre-filter of sigma
  0.5·sqrt(f² - 1), which widens the footprint to the factor f, then bilinear interpolation. An antialiased
  downscale close to DALI's antialiased linear resize, and far cheaper than ``INTER_AREA`` at a non-integer factor,
  which OpenCV computes on a slow general path; continuous sampling makes nearly every factor non-integer.
  Enlarging (a target mpp finer than the slide's own) is bilinear, as in DALI.
- :func:`downsample` (evaluation-set tiles): one ``INTER_AREA`` resize, an exact area average.
- :func:`resize_window` (multi-crop views): a crop window resized axis by axis, area where an axis shrinks and
  bicubic where it grows, the twin of DALI's antialiased cubic resize of the views.
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


def halve_while_twice(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Halve ``image`` while it is at least twice ``width`` x ``height`` on both axes."""
    image = np.ascontiguousarray(image)
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        image = halve(image)
    return image


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square HWC uint8 image to ``size`` x ``size`` (antialiased when shrinking)."""
    image = halve_while_twice(image, size, size)
    if image.shape[:2] == (size, size):
        return image
    factor = image.shape[0] / size
    if factor > 1.0:
        # Widen the bilinear kernel's footprint to the remaining factor, as an antialiased resize does.
        image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.5 * np.sqrt(factor * factor - 1.0))
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def downsample(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Shrink ``image`` (H x W [x C]) to ``size`` (square side, or (width, height)) in area steps of at most 2x."""
    width, height = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    if width > w or height > h:
        raise ValueError(f"downsample cannot enlarge: {w}x{h} -> {width}x{height}")
    out = halve_while_twice(image, width, height)
    if out.shape[1] != width or out.shape[0] != height:
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_AREA)
    return out


def resize_window(image: np.ndarray, window: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop (y, x, h, w) out of ``image`` and resize it to ``size``², antialiased along every shrinking axis.

    Bicubic where an axis grows and ``INTER_AREA`` (area averaging) where it shrinks, axis by axis, the nearest
    OpenCV has to DALI's antialiased cubic resize (OpenCV's cubic filter does not widen when it shrinks); a crop
    that shrinks one way and grows the other is resized in two passes.
    """
    y, x, h, w = window
    crop = np.ascontiguousarray(image[y : y + h, x : x + w])
    if (h > size) == (w > size) or h == size or w == size:
        interp = cv2.INTER_AREA if h > size or w > size else cv2.INTER_CUBIC
        return cv2.resize(crop, (size, size), interpolation=interp)
    first = cv2.resize(crop, (size, h), interpolation=cv2.INTER_AREA if w > size else cv2.INTER_CUBIC)
    return cv2.resize(first, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_CUBIC)
