"""What distinguishes the synthetic classes, and the nucleus stamp format shared by the scene and the nuclei.

Classes differ at different scales, so that the magnification a model sees decides what it can tell apart:
``regular`` and ``atypia`` share their architecture and differ only in nuclei (size, shape variation and
open chromatin with nucleoli: visible at high magnification only); ``lobular`` has regular nuclei but its glands
crowd into lobules separated by stroma and fat (visible at low magnification only). ``glass`` has no tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassStyle:
    nucleus_um: float  # mean diameter of epithelial nuclei
    pleomorphism: float  # relative spread of size and elongation
    vesicular: bool  # open chromatin with a rim and a nucleolus
    layout: str  # "scattered" glands, "lobular" clusters, or "none" (no tissue)


CLASS_STYLES = {
    "regular": ClassStyle(6.0, 0.08, False, "scattered"),
    "atypia": ClassStyle(9.5, 0.25, True, "scattered"),
    "lobular": ClassStyle(6.0, 0.08, False, "lobular"),
    "glass": ClassStyle(6.0, 0.08, False, "none"),
}
EPITHELIUM_UM = 18.0
GLAND_RADIUS_UM = (45.0, 110.0)
GLAND_FRACTION = 0.22  # share of tissue area covered by glands


@dataclass(frozen=True)
class Template:
    radius: int
    dy: np.ndarray
    dx: np.ndarray
    value: np.ndarray
