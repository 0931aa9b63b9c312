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

# Column layout of a sample's parameter array (ParamSampler.draw fills the window, the jitter factors and
# gray/blur as contiguous groups).
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


def whole_tile(recipe: CropRecipe, tile_px: int) -> bool:
    """Whether every window of ``recipe`` is the whole ``tile_px``² tile at its own size (area scale (1, 1))."""
    return tuple(recipe.scale) == (1.0, 1.0) and recipe.size == tile_px


def views_vary(aug: AugmentConfig, tile_px: int) -> bool:
    """Whether any view depends on its random parameters (False: every view is the base tile itself, as in
    un-augmented plain tiles, and the parameters need not be drawn or delivered)."""
    static = aug.jitter_p <= 0.0 and aug.grayscale_p <= 0.0 and aug.flip_p <= 0.0
    fixed = all(whole_tile(r, tile_px) and r.blur_p <= 0.0 and r.solarize_p <= 0.0 for r in crop_recipes(aug))
    return not (static and fixed)


class CropWindows:
    """torchvision's ``RandomResizedCrop.get_params`` for ``len(scales)`` crops of a ``height`` x ``width`` image at
    once, with what does not depend on the random draws computed once.

    Per crop, ``tries`` draws of (area uniform in its ``scales`` row, aspect log-uniform in ``ratio``); the first
    that fits is placed uniformly. When none fits, the whole image clamped to the ratio range, centred. All tries
    are drawn up front (vectorised): the first fitting one of i.i.d. tries has torchvision's distribution.
    """

    def __init__(self, height: int, width: int, scales: np.ndarray, ratio: tuple[float, float], tries: int) -> None:
        self.height, self.width, self.tries = height, width, tries
        self.area_low = height * width * scales[:, :1]
        self.area_span = height * width * (scales[:, 1:] - scales[:, :1])
        self.log_low, self.log_span = math.log(ratio[0]), math.log(ratio[1]) - math.log(ratio[0])
        in_ratio = width / height
        if in_ratio < min(ratio):
            fw, fh = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            fh, fw = height, int(round(height * max(ratio)))
        else:
            fw, fh = width, height
        self.fallback = ((height - fh) // 2, (width - fw) // 2, fh, fw)  # the whole image, clamped to the ratio
        self.rows = np.arange(len(scales))

    def place(self, tries: np.ndarray, position: np.ndarray) -> np.ndarray:
        """Windows from uniform draws: ``tries`` [n, tries, 2] (area, aspect), ``position`` [n, 2] (y, x)."""
        area = self.area_low + self.area_span * tries[..., 0]
        aspect = np.exp(self.log_low + self.log_span * tries[..., 1])
        w, h = np.rint(np.sqrt(area * aspect)), np.rint(np.sqrt(area / aspect))  # round half to even, as round()
        fits = (w > 0) & (w <= self.width) & (h > 0) & (h <= self.height)
        first = fits.argmax(axis=1)
        out = np.empty((len(self.rows), 4), np.int64)
        out[:, 2], out[:, 3] = h[self.rows, first], w[self.rows, first]
        out[:, 0] = np.floor(position[:, 0] * (self.height - out[:, 2] + 1))
        out[:, 1] = np.floor(position[:, 1] * (self.width - out[:, 3] + 1))
        missed = ~fits[self.rows, first]
        if missed.any():
            out[missed] = self.fallback
        return out


class ParamSampler:
    """``sampler(seed, g)``: the parameters of sample ``g``, ``[n_crops, N_PARAMS]`` float32 (see the module doc).

    Everything that depends only on the recipe is computed once here, so a loader worker drawing a sample's
    parameters pays for little more than its random numbers. Windows are drawn in integer pixels of the
    ``tile_px``² base tile, as torchvision does, and stored relative, so DALI's ``roi_relative`` window and the
    baseline's integer slice cover the same pixels. Every view draws the same number of values whatever its coins
    say, so one view's coins never shift another's window.
    """

    def __init__(self, aug: AugmentConfig, tile_px: int, tries: int = 10) -> None:
        recipes = crop_recipes(aug)
        self.n, self.tile_px, self.tries = len(recipes), int(tile_px), tries
        scales = np.array([r.scale for r in recipes], dtype=np.float64).reshape(-1, 2)
        self.windows = CropWindows(self.tile_px, self.tile_px, scales, CROP_RATIO, tries)
        # Per view and column: coin thresholds (flip, jitter, gray, blur, solarize), then jitter and sigma ranges.
        self.coins = np.array([[aug.flip_p, aug.jitter_p, aug.grayscale_p, r.blur_p, r.solarize_p] for r in recipes])
        low = [max(0.0, 1.0 - aug.brightness), max(0.0, 1.0 - aug.contrast), max(0.0, 1.0 - aug.saturation), -aug.hue]
        high = [1.0 + aug.brightness, 1.0 + aug.contrast, 1.0 + aug.saturation, aug.hue]
        self.low = np.array([*low, BLUR_SIGMA[0]])
        self.span = np.array([*high, BLUR_SIGMA[1]]) - self.low
        self.identity = np.array([1.0, 1.0, 1.0, 0.0])

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The parameters drawn from ``rng`` (windows first, then coins, jitter factors and sigma)."""
        n, tries = self.n, self.tries
        params = np.zeros((n, N_PARAMS), dtype=np.float32)
        if n == 0:
            return params
        u = rng.random(n * (2 * tries + 12))
        windows = self.windows.place(u[: 2 * n * tries].reshape(n, tries, 2),
                                     u[2 * n * tries : 2 * n * (tries + 1)].reshape(n, 2))  # fmt: skip
        params[:, Y0 : X0 + 1] = windows[:, :2] / self.tile_px  # (y0, x0), then (y1, x1)
        params[:, Y1 : X1 + 1] = (windows[:, :2] + windows[:, 2:]) / self.tile_px
        u = u[2 * n * (tries + 1) :].reshape(n, 10)  # 5 coins, 4 jitter factors, sigma
        hits = u[:, :5] < self.coins
        values = self.low + self.span * u[:, 5:]
        params[:, BRIGHTNESS : HUE + 1] = np.where(hits[:, 1:2], values[:, :4], self.identity)
        params[:, FLIP] = hits[:, 0]
        params[:, GRAY : BLUR + 1] = hits[:, 2:4]
        params[:, SOLARIZE] = hits[:, 4]
        params[:, SIGMA] = values[:, 4]
        return params

    def __call__(self, seed: int, g: int) -> np.ndarray:
        return self.draw(generator(seed, _STREAM_AUGMENT, g))


def sample_params(aug: AugmentConfig, seed: int, g: int, tile_px: int) -> np.ndarray:
    """The parameters of global sample ``g``, a pure function of ``(seed, g)``; loaders that draw many keep a
    :class:`ParamSampler`."""
    return ParamSampler(aug, tile_px)(seed, g)


def window_pixels(row: np.ndarray, tile_px: int) -> tuple[int, int, int, int]:
    """The integer (y, x, h, w) window of a parameter row, back from its relative coordinates."""
    y0, x0, y1, x1 = (int(round(float(row[c]) * tile_px)) for c in (Y0, X0, Y1, X1))
    return y0, x0, y1 - y0, x1 - x0
