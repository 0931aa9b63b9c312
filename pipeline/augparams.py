"""The random parameters of DINOv2 multi-crop, drawn once per sample on the host.

Every random choice about sample ``g``'s views (crop windows, flips, colour jitter factors, grayscale, blur and its
sigma, solarize) comes from :func:`sample_params`, a pure function of ``(seed, g)``. Both loaders consume the same
parameters: the DALI graph as per-sample argument inputs (:mod:`pipeline.dali.graph`), the baseline in NumPy/OpenCV
(:mod:`pipeline.augment`). So augmentations resume exactly from any iteration, do not depend on worker or thread
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

from pipeline.config import AugmentConfig

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


def crop_window(
    rng: np.random.Generator, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params``: (y, x, h, w) in integer pixels of a height x width image.

    Ten tries of (area uniform in ``scale``, aspect log-uniform in ``ratio``) placed uniformly; when none fits,
    the whole image clamped to the ratio range, centred.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def draw_params(aug: AugmentConfig, rng: np.random.Generator, tile_px: int) -> np.ndarray:
    """All random parameters of one sample's views, ``[n_crops, N_PARAMS]`` float32 (see the module docstring).

    Windows are drawn in integer pixels of the ``tile_px``² base tile, as torchvision does, and stored relative,
    so DALI's ``roi_relative`` window and the baseline's integer slice cover the same pixels. Every view draws the
    same number of values whatever its coins say, so one view's flips never shift another's window.
    """
    recipes = crop_recipes(aug)
    params = np.zeros((len(recipes), N_PARAMS), dtype=np.float32)
    for row, recipe in zip(params, recipes):
        y, x, h, w = crop_window(rng, tile_px, tile_px, recipe.scale, CROP_RATIO)
        row[[Y0, X0, Y1, X1]] = (y / tile_px, x / tile_px, (y + h) / tile_px, (x + w) / tile_px)
        coins = rng.random(5)  # flip, jitter, grayscale, blur, solarize
        factors = (
            rng.uniform(max(0.0, 1.0 - aug.brightness), 1.0 + aug.brightness),
            rng.uniform(max(0.0, 1.0 - aug.contrast), 1.0 + aug.contrast),
            rng.uniform(max(0.0, 1.0 - aug.saturation), 1.0 + aug.saturation),
            rng.uniform(-aug.hue, aug.hue),
        )
        sigma = rng.uniform(*BLUR_SIGMA)
        row[FLIP] = coins[0] < aug.flip_p
        row[[BRIGHTNESS, CONTRAST, SATURATION, HUE]] = factors if coins[1] < aug.jitter_p else (1.0, 1.0, 1.0, 0.0)
        row[GRAY] = coins[2] < aug.grayscale_p
        row[BLUR] = coins[3] < recipe.blur_p
        row[SIGMA] = sigma
        row[SOLARIZE] = coins[4] < recipe.solarize_p
    return params


def sample_params(aug: AugmentConfig, seed: int, g: int, tile_px: int) -> np.ndarray:
    """The parameters of global sample ``g``: :func:`draw_params` with a generator seeded by ``(seed, g)``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), _STREAM_AUGMENT, int(g)])))
    return draw_params(aug, rng, tile_px)


def window_pixels(row: np.ndarray, tile_px: int) -> tuple[int, int, int, int]:
    """The integer (y, x, h, w) window of a parameter row, back from its relative coordinates."""
    y0, x0, y1, x1 = (int(round(float(row[c]) * tile_px)) for c in (Y0, X0, Y1, X1))
    return y0, x0, y1 - y0, x1 - x0
