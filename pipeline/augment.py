"""DINOv2 multi-crop augmentation on the CPU (NumPy/OpenCV) for the baseline loaders.

The same views as the DALI graph (:mod:`pipeline.dali.graph`), with the same per-crop probabilities: random resized
crop (torchvision's sampling of area and aspect ratio), horizontal flip, colour jitter (brightness, contrast,
saturation, hue) with probability 0.8, grayscale 0.2, Gaussian blur (sigma 0.1–2) with probability 1.0 / 0.1 / 0.5
for global crop 1 / global crop 2 / local crops, solarize 0.2 on global crop 2, normalisation to float CHW. Every
random choice comes from the generator passed in, so a sample's views are a pure function of that generator's seed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.config import AugmentConfig

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def random_resized_crop(
    image: np.ndarray,
    size: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """torchvision's RandomResizedCrop: 10 tries of (area, log-uniform aspect), else the centre crop."""
    h, w = image.shape[:2]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target_area * aspect)))
        ch = int(round(math.sqrt(target_area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y = int(rng.integers(0, h - ch + 1))
            x = int(rng.integers(0, w - cw + 1))
            break
    else:
        cw = ch = min(h, w)
        y, x = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(image[y : y + ch, x : x + cw])
    interp = cv2.INTER_AREA if min(cw, ch) > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def color_jitter(image: np.ndarray, aug: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation, hue (in that order), each a factor drawn as torchvision draws it."""
    b = rng.uniform(max(0.0, 1 - aug.brightness), 1 + aug.brightness)
    c = rng.uniform(max(0.0, 1 - aug.contrast), 1 + aug.contrast)
    s = rng.uniform(max(0.0, 1 - aug.saturation), 1 + aug.saturation)
    h = rng.uniform(-aug.hue, aug.hue)
    x = image.astype(np.float32) * b
    np.clip(x, 0, 255, out=x)
    mean = float((x @ _LUMA).mean())
    x = (x - mean) * c + mean
    np.clip(x, 0, 255, out=x)
    gray = (x @ _LUMA)[..., None]
    x = gray + (x - gray) * s
    out = np.clip(x, 0, 255).astype(np.uint8)
    if h != 0.0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # OpenCV hue is in [0, 180)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(round(h * 180))) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def grayscale(image: np.ndarray) -> np.ndarray:
    gray = np.clip(image.astype(np.float32) @ _LUMA, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(0.1, 2.0)
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def solarize(image: np.ndarray) -> np.ndarray:
    return np.where(image >= 128, 255 - image, image)


class Normalizer:
    """uint8 HWC -> float32 CHW, (x/255 - mean)/std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32)))[:, None, None]
        self.shift = (np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32))[:, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image.transpose(2, 0, 1).astype(np.float32) * self.scale - self.shift


class MultiCrop:
    """``MultiCrop(aug)(tile, rng) -> (global crops, local crops)``, lists of float32 CHW arrays."""

    def __init__(self, aug: AugmentConfig) -> None:
        self.aug = aug
        self.normalize = Normalizer(aug.mean, aug.std)

    def view(
        self,
        tile: np.ndarray,
        size: int,
        scale: tuple[float, float],
        blur_p: float,
        solarize_p: float,
        rng: np.random.Generator,
    ) -> np.ndarray:
        aug = self.aug
        crop = random_resized_crop(tile, size, scale, rng)
        if rng.random() < aug.flip_p:
            crop = crop[:, ::-1]
        if rng.random() < aug.jitter_p:
            crop = color_jitter(crop, aug, rng)
        if rng.random() < aug.grayscale_p:
            crop = grayscale(crop)
        if rng.random() < blur_p:
            crop = gaussian_blur(np.ascontiguousarray(crop), rng)
        if rng.random() < solarize_p:
            crop = solarize(crop)
        return self.normalize(np.ascontiguousarray(crop))

    def __call__(self, tile: np.ndarray, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
        aug = self.aug
        global_crops = [
            self.view(
                tile,
                aug.global_size,
                aug.global_scale,
                aug.blur_p_global1 if k == 0 else aug.blur_p_global2,
                0.0 if k == 0 else aug.solarize_p_global2,
                rng,
            )
            for k in range(aug.global_crops)
        ]
        local_crops = [
            self.view(tile, aug.local_size, aug.local_scale, aug.blur_p_local, 0.0, rng) for _ in range(aug.local_crops)
        ]
        return global_crops, local_crops
