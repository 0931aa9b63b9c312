"""The layout of a synthetic slide in microns: tissue islands, glands, fat, stroma and nuclei.

What each class looks like is in :mod:`gapless.pipeline.synth.styles`; the nuclei are placed by
:mod:`gapless.pipeline.synth.nuclei`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gapless.pipeline.synth.nuclei import make_templates, place_nuclei
from gapless.pipeline.synth.styles import (
    CLASS_STYLES,
    EPITHELIUM_UM,
    GLAND_FRACTION,
    GLAND_RADIUS_UM,
    ClassStyle,
    Template,
)


@dataclass
class Scene:
    coarse_maps: tuple[np.ndarray, ...]  # eosin, haematoxylin, tissue, stroma (padded coarse grids)
    nuclei_y: np.ndarray  # level-0 pixels, sorted by y
    nuclei_x: np.ndarray
    nuclei_kind: np.ndarray  # index into templates
    templates: list[Template]


def _pad(a: np.ndarray) -> np.ndarray:
    return np.pad(a.astype(np.float32), ((1, 2), (1, 2)), mode="edge")


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float, sigma_um: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with structures of about ``sigma_um``, on a grid of ``cell`` um."""
    step = max(sigma_um / 3.0, cell)
    small = (max(2, math.ceil(shape[0] * cell / step)), max(2, math.ceil(shape[1] * cell / step)))
    noise = cv2.GaussianBlur(rng.standard_normal(small).astype(np.float32), (0, 0), 3.0)
    noise = cv2.resize(noise, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def tissue_islands(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    envelope = np.zeros(shape, np.float32)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.3, 0.7) * w
        ay, ax = rng.uniform(0.3, 0.45) * h, rng.uniform(0.25, 0.4) * w
        envelope = np.maximum(envelope, 1.0 - ((yy - cy) / ay) ** 2 - ((xx - cx) / ax) ** 2)
    field = envelope + 0.25 * smooth_noise(rng, shape, cell, 150.0)
    return np.clip((field - 0.15) / 0.05, 0.0, 1.0)


def place_glands(rng: np.random.Generator, style: ClassStyle, tissue: np.ndarray, cell: float) -> np.ndarray:
    """Non-overlapping glands (cx, cy, radius) in um, scattered over tissue or crowded into lobules."""
    h, w = tissue.shape
    target_area = GLAND_FRACTION * float((tissue > 0.5).sum()) * cell**2
    lobules = np.empty((0, 2))
    if style.layout == "lobular":
        n_lobules = max(1, round(target_area / (math.pi * 260.0**2 * 0.6)))
        on_tissue = np.argwhere(tissue > 0.9)
        if len(on_tissue):
            lobules = (on_tissue[rng.integers(0, len(on_tissue), n_lobules)][:, ::-1] + 0.5) * cell
    glands: list[tuple[float, float, float]] = []
    area, gap = 0.0, 6.0 if style.layout == "lobular" else 25.0
    for _ in range(60):
        if area >= target_area:
            break
        if len(lobules):
            centres = lobules[rng.integers(0, len(lobules), 64)] + rng.normal(0, 150.0, (64, 2))
        else:
            centres = rng.uniform(0, 1, (64, 2)) * (w * cell, h * cell)
        radii = rng.uniform(*GLAND_RADIUS_UM, 64)
        for (cx, cy), r in zip(centres, radii):
            iy, ix = int(cy / cell), int(cx / cell)
            if not (0 <= iy < h and 0 <= ix < w) or tissue[iy, ix] < 0.9 or area >= target_area:
                continue
            if glands:
                g = np.asarray(glands)
                if np.any(np.hypot(g[:, 0] - cx, g[:, 1] - cy) < g[:, 2] + r + gap):
                    continue
            glands.append((cx, cy, r))
            area += math.pi * r * r
    return np.asarray(glands, np.float64).reshape(-1, 3)


def rasterise_glands(
    rng: np.random.Generator, glands: np.ndarray, shape: tuple[int, int], cell: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft lumen and epithelium maps; gland outlines wobble so they are not perfect circles."""
    lumen, epithelium = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for cx, cy, r in glands:
        x0, x1 = max(int((cx - r * 1.2) / cell), 0), min(int((cx + r * 1.2) / cell) + 1, shape[1])
        y0, y1 = max(int((cy - r * 1.2) / cell), 0), min(int((cy + r * 1.2) / cell) + 1, shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = (yy + 0.5) * cell - cy, (xx + 0.5) * cell - cx
        theta = np.arctan2(dy, dx)
        phases = rng.uniform(0, 2 * np.pi, 2)
        wobble = 1.0 + 0.07 * np.sin(3 * theta + phases[0]) + 0.04 * np.sin(5 * theta + phases[1])
        d = np.hypot(dy, dx) / wobble
        outer = np.clip((r - d) / cell + 0.5, 0, 1)
        inner = np.clip((r - EPITHELIUM_UM - d) / cell + 0.5, 0, 1)
        lumen[y0:y1, x0:x1] = np.maximum(lumen[y0:y1, x0:x1], inner)
        epithelium[y0:y1, x0:x1] = np.maximum(epithelium[y0:y1, x0:x1], outer - inner)
    return lumen, epithelium


def adipocyte_membranes(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Thin membranes between fat cells of about 60 um: a jittered-grid Voronoi diagram's edges."""
    size = 60.0
    gh, gw = math.ceil(shape[0] * cell / size) + 2, math.ceil(shape[1] * cell / size) + 2
    seeds = (np.stack(np.mgrid[0:gh, 0:gw], -1) - 1 + rng.uniform(0.1, 0.9, (gh, gw, 2))) * size
    yy, xx = ((np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5) * cell).astype(np.float32)
    iy, ix = (yy // size).astype(np.int32) + 1, (xx // size).astype(np.int32) + 1
    dists = []
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            s = seeds[np.clip(iy + oy, 0, gh - 1), np.clip(ix + ox, 0, gw - 1)]
            dists.append(np.hypot(s[..., 0] - yy, s[..., 1] - xx))
    d = np.sort(np.stack(dists), axis=0)
    return np.clip(1.0 - (d[1] - d[0]) / 3.0, 0, 1).astype(np.float32)


def build_scene(spec: Any, width: int, height: int, coarse: int, rng: np.random.Generator) -> Scene:
    style = CLASS_STYLES[spec.label]
    cell = coarse * spec.base_mpp
    shape = (math.ceil(height / coarse), math.ceil(width / coarse))
    tissue = tissue_islands(rng, shape, cell) if style.layout != "none" else np.zeros(shape, np.float32)
    glands = place_glands(rng, style, tissue, cell)
    lumen, epithelium = rasterise_glands(rng, glands, shape, cell)
    near_glands = cv2.dilate((lumen + epithelium > 0.1).astype(np.uint8), np.ones((15, 15), np.uint8))
    fat = (smooth_noise(rng, shape, cell, 120.0) > 0.9) & (near_glands == 0)
    fat = cv2.GaussianBlur(fat.astype(np.float32), (0, 0), 1.0) * tissue
    stroma = tissue * np.clip(1.0 - lumen - epithelium - fat, 0, 1)
    membranes = adipocyte_membranes(rng, shape, cell) * fat
    eosin = stroma * 0.55 + epithelium * 0.38 + lumen * tissue * 0.05 + membranes * 0.6
    haem = stroma * 0.08 + epithelium * 0.2
    templates, kinds = make_templates(rng, style, spec.base_mpp)
    ny, nx, nk = place_nuclei(rng, glands, stroma, cell, style, kinds, EPITHELIUM_UM, spec.base_mpp)
    order = np.argsort(ny, kind="stable")
    return Scene((_pad(eosin), _pad(haem), _pad(tissue), _pad(stroma)), ny[order], nx[order], nk[order], templates)
