"""The random parameters of DINOv2 multi-crop, drawn once per sample on the host.

Every random choice about sample ``g``'s views (crop windows, flips, colour jitter factors, grayscale, blur and its
sigma, solarize) comes from :func:`sample_params`, a pure function of ``(seed, g)``. Both loaders consume the same
parameters: the DALI graph as per-sample argument inputs (:mod:`gapless.pipeline.dali.graph`), the baseline in NumPy/OpenCV
(:mod:`gapless.pipeline.augment`). So augmentations resume exactly from any iteration, do not depend on worker or thread
layout, and the two loaders make the same views of the same tile up to interpolation.

The parameters of one sample are a float32 array ``[n_crops, N_PARAMS]``: rows are the global crops then the local
crops (the loaders' crop-major order), columns are named by the constants below. Coin flips are stored as 0/1, and
factors whose coin says "no" are stored as the identity (brightness/contrast/saturation 1, hue 0), so a consumer
applies them unconditionally.

Per-crop probabilities follow DINOv2: the first global crop is always blurred, the second rarely blurred and
sometimes solarized, local crops blurred half the time (:func:`crop_recipes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gapless.pipeline.config import AugmentConfig
from gapless.seeding import generator

# Column layout of a sample's parameter array.
Y0, X0, Y1, X1 = 0, 1, 2, 3  # crop window, relative to the base tile (0..1), (y, x) as DALI's roi arguments
FLIP = 4  # horizontal flip
BRIGHTNESS, CONTRAST, SATURATION, HUE = 5, 6, 7, 8  # colour jitter factors (hue in turns of the colour wheel)
GRAY = 9  # grayscale
BLUR, SIGMA = 10, 11  # Gaussian blur on/off and its sigma (pixels of the crop)
SOLARIZE = 12
N_PARAMS = 13

BLUR_SIGMA = (0.1, 2.0)  # DINOv2's GaussianBlur radius range
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # RandomResizedCrop's aspect-ratio range
_STREAM_AUGMENT = 0x617567


@dataclass(frozen=True)
class CropRecipe:
    """What is fixed about one view: output size, area range, and the probabilities that depend on the crop."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


def crop_recipes(aug: AugmentConfig) -> list[CropRecipe]:
    """The views of a sample in output order: global crops, then local crops."""
    recipes = []
    for k in range(aug.global_crops):
        first = k == 0  # global crop 1: always blurred; crop 2 (and any further): DINOv2's second-view recipe
        recipes.append(
            CropRecipe(
                aug.global_size,
                tuple(aug.global_scale),
                aug.blur_p_global1 if first else aug.blur_p_global2,
                0.0 if first else aug.solarize_p_global2,
            )
        )
    recipes += [CropRecipe(aug.local_size, tuple(aug.local_scale), aug.blur_p_local, 0.0)] * aug.local_crops
    return recipes


def crop_windows(
    rng: np.random.Generator,
    height: int,
    width: int,
    scales: np.ndarray,
    ratio: tuple[float, float],
    tries: int = 10,
) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for ``len(scales)`` crops at once: int [n, 4] of (y, x, h, w).

    Per crop, ``tries`` draws of (area uniform in its ``scales`` row, aspect log-uniform in ``ratio``); the first
    that fits is placed uniformly. When none fits, the whole image clamped to the ratio range, centred. All tries
    are drawn up front (vectorised): the first fitting one of i.i.d. tries has torchvision's distribution.
    """
    n = len(scales)
    u = rng.random((n, tries, 2))
    area = height * width * (scales[:, :1] + (scales[:, 1:] - scales[:, :1]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w, h = np.rint(np.sqrt(area * aspect)), np.rint(np.sqrt(area / aspect))  # round half to even, as round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    h, w = h[np.arange(n), first].astype(np.int64), w[np.arange(n), first].astype(np.int64)
    position = rng.random((n, 2))
    y = np.floor(position[:, 0] * (height - h + 1)).astype(np.int64)
    x = np.floor(position[:, 1] * (width - w + 1)).astype(np.int64)
    missed = ~fits.any(axis=1)
    if missed.any():
        in_ratio = width / height
        if in_ratio < min(ratio):
            fw, fh = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            fh, fw = height, int(round(height * max(ratio)))
        else:
            fw, fh = width, height
        h[missed], w[missed], y[missed], x[missed] = fh, fw, (height - fh) // 2, (width - fw) // 2
    return np.stack([y, x, h, w], axis=1)


def _between(u: np.ndarray, low: float, high: float) -> np.ndarray:
    return low + (high - low) * u


def draw_params(aug: AugmentConfig, rng: np.random.Generator, tile_px: int) -> np.ndarray:
    """All random parameters of one sample's views, ``[n_crops, N_PARAMS]`` float32 (see the module docstring).

    Windows are drawn in integer pixels of the ``tile_px``² base tile, as torchvision does, and stored relative,
    so DALI's ``roi_relative`` window and the baseline's integer slice cover the same pixels. Every view draws the
    same number of values whatever its coins say, so one view's coins never shift another's window. Vectorised
    over views: this runs once per sample in the loader workers.
    """
    recipes = crop_recipes(aug)
    n = len(recipes)
    params = np.zeros((n, N_PARAMS), dtype=np.float32)
    if n == 0:
        return params
    scales = np.array([r.scale for r in recipes], dtype=np.float64)
    y, x, h, w = crop_windows(rng, tile_px, tile_px, scales, CROP_RATIO).T
    params[:, [Y0, X0, Y1, X1]] = np.stack([y, x, y + h, x + w], axis=1) / tile_px
    u = rng.random((n, 10))  # 5 coins, 4 jitter factors, sigma
    flip, jitter, gray, blur, solarize = u[:, :5].T
    params[:, FLIP] = flip < aug.flip_p
    factors = np.stack(
        [
            _between(u[:, 5], max(0.0, 1.0 - aug.brightness), 1.0 + aug.brightness),
            _between(u[:, 6], max(0.0, 1.0 - aug.contrast), 1.0 + aug.contrast),
            _between(u[:, 7], max(0.0, 1.0 - aug.saturation), 1.0 + aug.saturation),
            _between(u[:, 8], -aug.hue, aug.hue),
        ],
        axis=1,
    )
    identity = np.array([1.0, 1.0, 1.0, 0.0])
    params[:, [BRIGHTNESS, CONTRAST, SATURATION, HUE]] = np.where((jitter < aug.jitter_p)[:, None], factors, identity)
    params[:, GRAY] = gray < aug.grayscale_p
    params[:, BLUR] = blur < np.array([r.blur_p for r in recipes])
    params[:, SIGMA] = _between(u[:, 9], *BLUR_SIGMA)
    params[:, SOLARIZE] = solarize < np.array([r.solarize_p for r in recipes])
    return params


def sample_params(aug: AugmentConfig, seed: int, g: int, tile_px: int) -> np.ndarray:
    """The parameters of global sample ``g``: :func:`draw_params` with a generator seeded by ``(seed, g)``."""
    rng = generator(seed, _STREAM_AUGMENT, g)
    return draw_params(aug, rng, tile_px)


def window_pixels(row: np.ndarray, tile_px: int) -> tuple[int, int, int, int]:
    """The integer (y, x, h, w) window of a parameter row, back from its relative coordinates."""
    y0, x0, y1, x1 = (int(round(float(row[c]) * tile_px)) for c in (Y0, X0, Y1, X1))
    return y0, x0, y1 - y0, x1 - x0
