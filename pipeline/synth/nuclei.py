"""Nuclei of synthetic tissue: stamp templates (size, shape, chromatin texture) and their placement.

Epithelial nuclei line every gland's epithelium; their size, shape variation and chromatin differ by class.
Stromal nuclei (elongated fibroblasts) and lymphocytes (small, round, dark) are the same in every class.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gapless.pipeline.synth.styles import ClassStyle, Template

STROMA_NUCLEI_PER_UM2 = 1.0 / 900.0
LYMPHOCYTE_SHARE = 0.15


def _ellipse_template(
    rng: np.random.Generator, mpp: float, diameter_um: float, aspect: float, vesicular: bool, darkness: float
) -> Template:
    """A filled ellipse of haematoxylin; vesicular nuclei have a dark rim, pale interior and a nucleolus."""
    a = diameter_um / 2.0 * math.sqrt(aspect) / mpp  # semi-axes in pixels, area-preserving elongation
    b = diameter_um / 2.0 / math.sqrt(aspect) / mpp
    radius = int(math.ceil(a)) + 1
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    angle = rng.uniform(0, np.pi)
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    inside = rho <= 1.0
    grain = rng.normal(0, 0.18, rho.shape)
    if vesicular:
        value = np.where(rho > 0.72, darkness, 0.55 + grain)
        ny, nx = rng.uniform(-0.3, 0.3, 2) * b
        nucleolus = np.hypot(dy - ny, dx - nx) <= max(0.9 / mpp, 1.0)
        value = np.where(nucleolus, darkness + 0.3, value)
    else:
        value = darkness + grain
    return Template(radius, dy[inside].astype(np.int32), dx[inside].astype(np.int32), value[inside].astype(np.float32))


def make_templates(
    rng: np.random.Generator, style: ClassStyle, mpp: float
) -> tuple[list[Template], dict[str, np.ndarray]]:
    """Templates for stroma, lymphocyte and (class-specific) epithelial nuclei, and their indices by kind."""
    templates = [
        _ellipse_template(rng, mpp, rng.uniform(4.5, 5.5), rng.uniform(3.0, 4.5), False, 1.3) for _ in range(6)
    ]
    templates += [_ellipse_template(rng, mpp, rng.uniform(5.5, 6.5), 1.05, False, 2.0) for _ in range(3)]
    for _ in range(10):
        diameter = style.nucleus_um * float(np.clip(rng.normal(1.0, style.pleomorphism), 0.6, 1.6))
        aspect = 1.0 + abs(rng.normal(0.15, 2 * style.pleomorphism))
        templates.append(_ellipse_template(rng, mpp, diameter, aspect, style.vesicular, 1.55))
    kinds = {"stroma": np.arange(0, 6), "lymphocyte": np.arange(6, 9), "epithelial": np.arange(9, 19)}
    return templates, kinds


def place_nuclei(
    rng: np.random.Generator,
    glands: np.ndarray,
    stroma: np.ndarray,
    cell: float,
    style: ClassStyle,
    kinds: dict[str, np.ndarray],
    epithelium_um: float,
    mpp: float,
) -> tuple[Any, Any, Any]:
    """Nucleus centres (y, x) in level-0 pixels and their template indices."""
    ys, xs, ks = [], [], []
    # Epithelium: one ring of nuclei per gland, spaced by their size (larger nuclei, fewer of them).
    spacing = style.nucleus_um * 1.45
    for cx, cy, r in glands:
        mid = r - epithelium_um / 2.0
        n = max(3, int(2 * math.pi * mid / spacing))
        theta = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
        theta += rng.normal(0, 0.15 * spacing / mid, n)
        rad = mid + rng.normal(0, 1.5, n)
        ys.append(cy + rad * np.sin(theta))
        xs.append(cx + rad * np.cos(theta))
        ks.append(rng.choice(kinds["epithelial"], n))
    # Stroma: Poisson-scattered, kept where the coarse map is mostly stroma.
    h, w = stroma.shape
    count = rng.poisson(h * w * cell * cell * STROMA_NUCLEI_PER_UM2)
    py, px = rng.uniform(0, h * cell, count), rng.uniform(0, w * cell, count)
    keep = stroma[(py / cell).astype(int), (px / cell).astype(int)] > 0.6
    py, px = py[keep], px[keep]
    lymph = rng.random(len(py)) < LYMPHOCYTE_SHARE
    kind = np.where(lymph, rng.choice(kinds["lymphocyte"], len(py)), rng.choice(kinds["stroma"], len(py)))
    ys.append(py)
    xs.append(px)
    ks.append(kind)
    y = np.round(np.concatenate(ys) / mpp).astype(np.int64)
    x = np.round(np.concatenate(xs) / mpp).astype(np.int64)
    return y, x, np.concatenate(ks).astype(np.int32)
