"""Tissue detection on a low-resolution image, and fast sampling of tile centres on tissue.

The mask is computed at a fixed physical resolution (default 8 um/px): Otsu's threshold on HSV saturation (stained
tissue is coloured, glass is grey), with a floor so that a slide of bare glass does not split its noise in two,
then a morphological closing and opening and removal of specks. :class:`TissueMask` draws tile centres whose
footprint *at the tile's own mpp* is mostly tissue: a 2.0 mpp tile covers 64 times the area of a 0.25 mpp tile,
and both must land on tissue.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MASK_MPP = 8.0
MIN_SATURATION = 20  # of 255: below this nothing is tissue, whatever Otsu says
MIN_COMPONENT_UM2 = 200.0 * 200.0


class TissueMask:
    """A boolean tissue mask with ``mask_mpp`` um per mask pixel; ``base_mpp`` maps it to level-0 pixels."""

    def __init__(self, mask: np.ndarray, mask_mpp: float, base_mpp: float | None = None) -> None:
        self.mask = np.ascontiguousarray(mask, dtype=bool)
        self.mask_mpp = float(mask_mpp)
        self.base_mpp = base_mpp
        self._tissue_count: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"mask": np.packbits(self.mask), "shape": self.mask.shape, "mask_mpp": self.mask_mpp,
                "base_mpp": self.base_mpp}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        count = state["shape"][0] * state["shape"][1]
        mask = np.unpackbits(state["mask"], count=count).reshape(state["shape"]).astype(bool)
        self.__init__(mask, state["mask_mpp"], state["base_mpp"])

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    def sample_center(
        self,
        rng: np.random.Generator,
        side_um: float,
        threshold: float = 0.5,
        max_tries: int = 64,
        base_mpp: float | None = None,
    ) -> tuple[int, int] | None:
        """A level-0 (x, y) centre whose ``side_um`` square is at least ``threshold`` tissue, or None.

        Candidates are uniform over tissue pixels (uniform pixels of the mask, kept where it is tissue), each
        jittered inside its pixel; the first whose square passes is returned, its tissue counted on the mask itself
        (:meth:`box_fraction`). A mask that has just been loaded costs one count of its tissue pixels and a few
        candidates, not a table built over it: what a loader drawing from thousands of slides pays for every tile.
        """
        base = base_mpp or self.base_mpp
        if base is None:
            raise ValueError("sample_center needs base_mpp (the slide's level-0 mpp) to return level-0 pixels")
        if self._tissue_count is None:
            self._tissue_count = int(np.count_nonzero(self.mask))
        if self._tissue_count == 0:
            return None
        h, w = self.mask.shape
        flat = self.mask.ravel()
        half = max(side_um / self.mask_mpp / 2.0, 0.5)
        draws = min(4096, 2 * math.ceil(w * h / self._tissue_count))  # about two tissue pixels per round
        tries = rounds = 0
        while tries < max_tries and rounds < max_tries:
            rounds += 1
            pixels = rng.integers(0, w * h, draws)
            tissue = pixels[flat[pixels]]
            jitter = rng.random((2, len(tissue)))
            for pixel, jx, jy in zip(tissue.tolist(), *jitter.tolist()):
                cx, cy = pixel % w + jx, pixel // w + jy
                if self.box_fraction(cx, cy, half) >= threshold:
                    scale = self.mask_mpp / base
                    return int(cx * scale), int(cy * scale)
                tries += 1
                if tries >= max_tries:
                    break
        return None

    def box_fraction(self, cx: float, cy: float, half: float) -> float:
        """Tissue fraction of the square of half-side ``half`` centred at mask coordinates (cx, cy), its sides
        rounded out to whole mask pixels; outside the mask counts as glass."""
        h, w = self.mask.shape
        x0, x1, y0, y1 = math.floor(cx - half), math.ceil(cx + half), math.floor(cy - half), math.ceil(cy + half)
        inside = np.count_nonzero(self.mask[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)])
        return inside / max((x1 - x0) * (y1 - y0), 1)


def detect_tissue(rgb: np.ndarray, image_mpp: float, mask_mpp: float = MASK_MPP) -> np.ndarray:
    """Boolean tissue mask at ``mask_mpp`` from an RGB image of the whole slide at ``image_mpp``."""
    import cv2

    h, w = rgb.shape[:2]
    scale = image_mpp / mask_mpp
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb[..., :3]), size, interpolation=interp)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    saturation, value = hsv[..., 1], hsv[..., 2]
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (saturation > max(otsu, MIN_SATURATION)) & (value > 30)  # very dark: pen marks, scanner black
    radius = max(1, round(16.0 / mask_mpp))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    mask8 = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask8 = cv2.morphologyEx(mask8, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask8, connectivity=8)
    min_pixels = MIN_COMPONENT_UM2 / mask_mpp**2
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def tissue_mask_for_slide(slide: Any, mask_mpp: float = MASK_MPP, max_pixels: int = 64 << 20) -> TissueMask:
    """Tissue mask of an open slide, from the coarsest level no coarser than ``mask_mpp`` (within a pixel budget)."""
    levels = slide.levels
    fine_enough = [lv for lv in levels if lv.mpp <= mask_mpp * 1.001] or [levels[0]]
    level = fine_enough[-1]
    coarser = [lv for lv in levels if lv.mpp > level.mpp]
    if level.width * level.height > max_pixels and coarser:
        level = coarser[0]  # a huge level would cost more than the mask is worth: settle for a coarser mask
    effective_mpp = max(mask_mpp, level.mpp)
    rgb = slide.read_level(level.index)
    return TissueMask(detect_tissue(rgb, level.mpp, effective_mpp), effective_mpp, slide.mpp)
