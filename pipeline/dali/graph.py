"""Graph-building functions over DALI DataNodes: crop-and-resize and DINOv2 multi-crop augmentation.

These functions only describe operations; they are called inside a ``pipeline_def`` (see
:mod:`gapless.pipeline.dali.pipelines`) and know nothing about where the regions come from. DALI places an operator
on the device of its input, so the same code builds a GPU graph (regions moved with ``.gpu()``, or read by cuCIM on the
GPU) and a CPU graph (``device_id=None``).

The graph draws no random numbers. Every random parameter of a sample's views arrives with the sample as a CPU
array ``[n_crops, N_PARAMS]`` drawn on the host by :func:`gapless.pipeline.augparams.sample_params` (a pure function of
(seed, sample)), and is consumed here as per-sample argument inputs (argument inputs live on the CPU also in a GPU
graph). So views resume exactly from any iteration, do not depend on thread or worker layout, and match the
baseline loader's, which applies the same parameters with OpenCV. Blur and solarize are gated with DALI
conditionals on the delivered flags (the pipeline is built with ``enable_conditionals=True``); colour jitter and
grayscale are factors that are the identity when their coin said no.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, types

from gapless.pipeline import augparams as P
from gapless.pipeline.augparams import CropRecipe, crop_recipes, whole_tile
from gapless.pipeline.config import AugmentConfig

# 255 - x for x >= 128, identity below: torchvision's solarize with threshold 128, as a lookup table (CPU and GPU).
_SOLARIZE_KEYS = list(range(256))
_SOLARIZE_VALUES = [k if k < 128 else 255 - k for k in range(256)]


def crop_resize(regions: Any, tile_px: int) -> Any:
    """Resize every region (square, read_size² level pixels, a different size per sample) to ``tile_px``².

    ``antialias=True`` makes the downscale a proper area-weighted filter, so a region read at 13x the output
    resolution does not alias; that is what keeps a tile at 0.9 mpp read from the 0.25 mpp level faithful.
    """
    return fn.resize(
        regions,
        size=[tile_px, tile_px],
        antialias=True,
        interp_type=types.INTERP_LINEAR,
        dtype=types.UINT8,
    )


def resized_crop(tile: Any, params: Any, size: int) -> Any:
    """The delivered window (relative (y0, x0)–(y1, x1) of the tile) resized to ``size``², bicubic as DINOv2's
    random resized crop (DALI's cubic filter, on CPU and GPU alike), antialiased where it shrinks."""
    return fn.resize(
        tile,
        roi_start=params[P.Y0 : P.X0 + 1],
        roi_end=params[P.Y1 : P.X1 + 1],
        roi_relative=True,
        size=[size, size],
        antialias=True,
        interp_type=types.INTERP_CUBIC,
        dtype=types.UINT8,
    )


def color_jitter(crop: Any, params: Any) -> Any:
    """Brightness, contrast, saturation, hue and grayscale in one colour twist with the delivered factors.

    DALI's colour twist is one affine map in YIQ space (contrast about mid-grey, hue a rotation of the IQ plane,
    saturation a scaling of it); grayscale is saturation 0, luminance on three channels. Hue is delivered in
    turns of the colour wheel (torchvision's unit); DALI takes degrees.
    """
    return fn.color_twist(
        crop,
        brightness=params[P.BRIGHTNESS],
        contrast=params[P.CONTRAST],
        saturation=params[P.SATURATION] * (1.0 - params[P.GRAY]),
        hue=params[P.HUE] * 360.0,
        dtype=types.UINT8,
    )


def blur(crop: Any, params: Any, p: float) -> Any:
    """Gaussian blur with the delivered sigma where the delivered flag is set (``p``: its static probability)."""
    if p <= 0.0:  # the flag is never set: leave the operator out of the graph
        return crop
    if p >= 1.0:  # always set: no conditional needed
        return fn.gaussian_blur(crop, sigma=params[P.SIGMA], dtype=types.UINT8)
    if params[P.BLUR] > 0.5:
        crop = fn.gaussian_blur(crop, sigma=params[P.SIGMA], dtype=types.UINT8)
    return crop


def solarize(crop: Any, params: Any, p: float) -> Any:
    """Solarize (invert pixels >= 128) where the delivered flag is set."""
    if p <= 0.0:
        return crop
    if params[P.SOLARIZE] > 0.5:
        crop = fn.lookup_table(crop, keys=_SOLARIZE_KEYS, values=_SOLARIZE_VALUES, dtype=types.UINT8)
    return crop


def normalize(images: Any, aug: AugmentConfig) -> Any:
    """uint8 HWC -> float32 CHW, (x/255 - mean)/std."""
    mean, std = [255.0 * m for m in aug.mean], [255.0 * s for s in aug.std]
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std)


def flip(crop: Any, params: Any) -> Any:
    """Mirror horizontally where the delivered flag is set."""
    return fn.flip(crop, horizontal=fn.cast(params[P.FLIP], dtype=types.INT32), vertical=0)


def augmented_crop(tile: Any, params: Any, recipe: CropRecipe, aug: AugmentConfig, tile_px: int = 0) -> Any:
    """One DINOv2 view from its parameter row, uint8 HWC: resized crop, jitter/grayscale, blur, solarize, flip.

    The flip comes last: every step before it is pointwise or a symmetric filter, so flipping last gives the view
    flipping first would. Steps that are the identity for every sample are left out of the graph: the crop when
    the recipe's window is always the whole tile (scale (1, 1)) at the tile's own size ``tile_px``, colour when
    jitter and grayscale are off, the flip when its probability is 0. Normalisation happens in the loader, on the
    device the batch goes to.
    """
    crop = tile if whole_tile(recipe, tile_px) else resized_crop(tile, params, recipe.size)
    if aug.jitter_p > 0.0 or aug.grayscale_p > 0.0:
        crop = color_jitter(crop, params)
    crop = blur(crop, params, recipe.blur_p)
    crop = solarize(crop, params, recipe.solarize_p)
    return flip(crop, params) if aug.flip_p > 0.0 else crop


def multicrop(tiles: Any, params: Any, aug: AugmentConfig, tile_px: int = 0) -> tuple[list[Any], list[Any]]:
    """DINOv2 multi-crop of the base tiles (``tile_px``²) with per-sample ``params`` ([n_crops, N_PARAMS] CPU
    DataNode; None when no view reads them, :func:`gapless.pipeline.augparams.views_vary`).

    Returns (global crops, local crops), each a list of [B, S, S, 3] uint8 nodes; row ``k`` of ``params`` drives
    view ``k`` (global crops first).
    """
    views = [augmented_crop(tiles, None if params is None else params[k], recipe, aug, tile_px)
             for k, recipe in enumerate(crop_recipes(aug))]  # fmt: skip
    return views[: aug.global_crops], views[aug.global_crops :]
