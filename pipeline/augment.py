"""DINOv2 multi-crop augmentation on the CPU (NumPy/OpenCV) for the baseline loaders.

The same views as the DALI graph (:mod:`gapless.pipeline.dali.graph`) from the same parameters
(:func:`gapless.pipeline.augparams.sample_params`): the delivered crop window resized with an antialiased filter, the
colour twist DALI applies (one affine map in YIQ space: brightness, contrast about mid-grey, hue as a rotation and
saturation as a scaling of the IQ plane, grayscale as saturation 0), Gaussian blur, solarize, flip. Views stay
uint8 HWC: the loader hands them across processes as bytes and normalises whole batches on the output device
(:class:`gapless.pipeline.loader_base.ViewNormalizer`), as the DALI loader does. So the DALI loader and this one make
the same views of the same tile up to interpolation and rounding, which the tests measure.

Steps that are the identity for a view are skipped, not computed: a whole-tile window at the tile's own size (no
resize), colour factors that are all "off" (no twist).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from gapless.pipeline import augparams as P
from gapless.pipeline.augparams import crop_recipes, window_pixels
from gapless.pipeline.config import AugmentConfig
from gapless.pipeline.resize import resize_window

# RGB <-> YIQ (NTSC), the colour space of DALI's colour twist; the inverse is computed, as DALI's is.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def twist_matrix(brightness: float, contrast: float, saturation: float, hue_turns: float) -> tuple[np.ndarray, float]:
    """(3x3 matrix on RGB, offset) of the colour twist: ``out = M @ rgb + offset``, as DALI's ``color_twist``."""
    angle = 2.0 * math.pi * hue_turns
    rotate = np.array([[1, 0, 0], [0, math.cos(angle), math.sin(angle)], [0, -math.sin(angle), math.cos(angle)]])
    matrix = brightness * contrast * _YIQ2RGB @ rotate @ np.diag([1.0, saturation, saturation]) @ _RGB2YIQ
    return matrix, 128.0 * (1.0 - contrast) * brightness


def color_twist(image: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Colour jitter and grayscale of one parameter row, rounded and saturated to uint8 like DALI's: the twist and
    its offset as one OpenCV affine pass in float32, then one rounding, saturating conversion (OpenCV's uint8
    ``transform`` would round in fixed point, a grey level off DALI's for a few per cent of the pixels)."""
    saturation = float(row[P.SATURATION]) * (1.0 - float(row[P.GRAY]))
    brightness, contrast, hue = float(row[P.BRIGHTNESS]), float(row[P.CONTRAST]), float(row[P.HUE])
    if brightness == contrast == saturation == 1.0 and hue == 0.0:
        return image  # jitter off and colour kept: the parameters store exact identity factors
    matrix, offset = twist_matrix(brightness, contrast, saturation, hue)
    affine = np.hstack([matrix, np.full((3, 1), offset)]).astype(np.float32)
    return cv2.add(cv2.transform(image.astype(np.float32), affine), 0.0, dtype=cv2.CV_8U)


def solarize(image: np.ndarray) -> np.ndarray:
    return np.where(image >= 128, 255 - image, image)


class MultiCrop:
    """``MultiCrop(aug).apply(tile, params) -> (global crops, local crops)``, lists of uint8 HWC views.

    ``params``: the sample's [n_crops, N_PARAMS] array (:func:`gapless.pipeline.augparams.sample_params`).
    """

    def __init__(self, aug: AugmentConfig) -> None:
        self.aug = aug
        self.recipes = crop_recipes(aug)

    def view(self, tile: np.ndarray, row: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
        """One view, in the DALI graph's order: resized crop, colour, blur, solarize, then flip. With ``out`` (a
        contiguous uint8 ``size`` x ``size`` x 3 array, e.g. the view's place in a batch) the last step writes there."""
        window = window_pixels(row, tile.shape[0])
        if window == (0, 0, tile.shape[0], tile.shape[1]) and size == tile.shape[0]:
            crop = tile  # the whole tile at its own size: nothing to resize
        else:
            crop = resize_window(tile, window, size)
        crop = color_twist(crop, row)
        if row[P.BLUR] > 0.5:
            sigma = float(row[P.SIGMA])
            crop = cv2.GaussianBlur(crop, (0, 0), sigmaX=sigma, sigmaY=sigma)
        if row[P.SOLARIZE] > 0.5:
            crop = solarize(crop)
        if row[P.FLIP] > 0.5:
            return cv2.flip(crop, 1) if out is None else cv2.flip(crop, 1, dst=out)
        if out is None:
            return crop
        np.copyto(out, crop)
        return out

    def apply(
        self, tile: np.ndarray, params: np.ndarray, out: list[np.ndarray] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(global views, local views) of a base tile; ``out``: one destination per view, in the same order."""
        if tile.shape[0] != tile.shape[1] or len(params) != len(self.recipes):
            raise ValueError(f"a square tile and {len(self.recipes)} parameter rows expected, got {tile.shape}, "
                             f"{len(params)}")  # fmt: skip
        outs = out if out is not None else [None] * len(self.recipes)
        views = [self.view(tile, row, recipe.size, dst) for row, recipe, dst in zip(params, self.recipes, outs)]
        return views[: self.aug.global_crops], views[self.aug.global_crops :]
