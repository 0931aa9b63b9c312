"""Graph-building functions over DALI DataNodes: crop-and-resize and DINOv2 multi-crop augmentation.

These functions only describe operations; they are called inside a ``pipeline_def`` (see
:mod:`pipeline.dali.pipelines`) and know nothing about where the regions come from. DALI places an operator on the
device of its input, so the same code builds a GPU graph (regions moved with ``.gpu()``, or read by cuCIM on the
GPU) and a CPU graph (``device_id=None``). Random parameters (crop windows, jitter factors, coin flips) are CPU
argument inputs, drawn per sample.

Per-crop probabilities follow DINOv2: the first global crop is always blurred, the second rarely blurred and
sometimes solarized, local crops blurred half the time. Blur and solarize are gated with DALI conditionals (the
pipeline is built with ``enable_conditionals=True``), colour jitter and grayscale with per-sample factors that are 1
(identity) when their coin flip says no.
"""

from __future__ import annotations

from typing import Any

from nvidia.dali import fn, types

from pipeline.config import AugmentConfig

# 255 - x for x >= 128, identity below: torchvision's solarize with threshold 128, as a lookup table (CPU and GPU).
_SOLARIZE_KEYS = list(range(256))
_SOLARIZE_VALUES = [k if k < 128 else 255 - k for k in range(256)]
BLUR_SIGMA = (0.1, 2.0)  # DINOv2's GaussianBlur radius range


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


def _coin(p: float) -> Any:
    """A per-sample boolean that is true with probability ``p``."""
    return fn.random.coin_flip(probability=float(p), dtype=types.BOOL)


def _gated_factor(gate: Any, spread: float) -> Any:
    """1 + gate·(u - 1), u ~ U[1 - spread, 1 + spread]: a jitter factor that is exactly 1 when the gate is off."""
    u = fn.random.uniform(range=[max(0.0, 1.0 - spread), 1.0 + spread])
    return 1.0 + gate * (u - 1.0)


def color_jitter(crop: Any, aug: AugmentConfig) -> Any:
    """Colour jitter with probability ``jitter_p`` and grayscale with probability ``grayscale_p``.

    Brightness, contrast and saturation factors are drawn from [1 - s, 1 + s] and hue from [-h, h] (turns of the
    colour wheel, as torchvision; DALI takes degrees). Grayscale sets saturation to 0, which is luminance
    replicated on three channels, as torchvision's ``RandomGrayscale``.
    """
    jitter = fn.cast(fn.random.coin_flip(probability=float(aug.jitter_p)), dtype=types.FLOAT)
    keep_colour = 1.0 - fn.cast(fn.random.coin_flip(probability=float(aug.grayscale_p)), dtype=types.FLOAT)
    hue_deg = 360.0 * float(aug.hue)
    return fn.color_twist(
        crop,
        brightness=_gated_factor(jitter, aug.brightness),
        contrast=_gated_factor(jitter, aug.contrast),
        saturation=_gated_factor(jitter, aug.saturation) * keep_colour,
        hue=jitter * fn.random.uniform(range=[-hue_deg, hue_deg]),
        dtype=types.UINT8,
    )


def blur(crop: Any, p: float) -> Any:
    """Gaussian blur with probability ``p``, sigma ~ U[0.1, 2.0]."""
    if p <= 0.0:
        return crop
    if p >= 1.0:
        return fn.gaussian_blur(crop, sigma=fn.random.uniform(range=list(BLUR_SIGMA)), dtype=types.UINT8)
    if _coin(p):
        crop = fn.gaussian_blur(crop, sigma=fn.random.uniform(range=list(BLUR_SIGMA)), dtype=types.UINT8)
    return crop


def solarize(crop: Any, p: float) -> Any:
    """Solarize (invert pixels >= 128) with probability ``p``."""
    if p <= 0.0:
        return crop
    if _coin(p):
        crop = fn.lookup_table(crop, keys=_SOLARIZE_KEYS, values=_SOLARIZE_VALUES, dtype=types.UINT8)
    return crop


def normalize(images: Any, aug: AugmentConfig, mirror: Any = None) -> Any:
    """uint8 HWC -> float32 CHW, (x/255 - mean)/std, optionally mirrored (per-sample flag)."""
    kwargs = {} if mirror is None else {"mirror": mirror}
    return fn.crop_mirror_normalize(
        images,
        dtype=types.FLOAT,
        output_layout="CHW",
        mean=[255.0 * m for m in aug.mean],
        std=[255.0 * s for s in aug.std],
        **kwargs,
    )


def augmented_crop(
    tile: Any, size: int, scale: tuple[float, float], blur_p: float, solarize_p: float, aug: AugmentConfig
) -> Any:
    """One DINOv2 view: random resized crop, jitter/grayscale, blur, solarize, flip, normalise."""
    crop = fn.random_resized_crop(
        tile,
        size=[size, size],
        random_area=[float(scale[0]), float(scale[1])],
        random_aspect_ratio=[3.0 / 4.0, 4.0 / 3.0],
        antialias=True,
        dtype=types.UINT8,
    )
    crop = color_jitter(crop, aug)
    crop = blur(crop, blur_p)
    crop = solarize(crop, solarize_p)
    return normalize(crop, aug, mirror=fn.random.coin_flip(probability=float(aug.flip_p)))


def multicrop(tiles: Any, aug: AugmentConfig) -> tuple[list[Any], list[Any]]:
    """DINOv2 multi-crop of the base tiles: (global crops, local crops), each a list of [B, 3, S, S] nodes."""
    global_crops = []
    for k in range(aug.global_crops):
        # Global crop 1 is always blurred; crop 2 (and any further) follows DINOv2's second-view recipe.
        first = k == 0
        global_crops.append(
            augmented_crop(
                tiles,
                aug.global_size,
                aug.global_scale,
                blur_p=aug.blur_p_global1 if first else aug.blur_p_global2,
                solarize_p=0.0 if first else aug.solarize_p_global2,
                aug=aug,
            )
        )
    local_crops = [
        augmented_crop(tiles, aug.local_size, aug.local_scale, aug.blur_p_local, 0.0, aug)
        for _ in range(aug.local_crops)
    ]
    return global_crops, local_crops
