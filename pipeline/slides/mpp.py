"""Microns per pixel (mpp) of a slide, read explicitly per format.

Scanners store the physical pixel size in different places, and libraries report it differently: cuCIM's
``spacing()`` says 1.0 for an Aperio SVS whose real mpp lives in the ImageDescription. So each source is read
explicitly, in order of trust: a user override, the Aperio ImageDescription (``MPP = 0.2520``), TIFF resolution
tags in centimetre or inch units, and OpenSlide's ``openslide.mpp-x`` property for formats that are not TIFF.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from gapless.errors import MppError

# Whole-slide images are scanned between roughly 0.1 and 10 um/px; outside this range a value is a unit mix-up
# (a 72 dpi default, a value in metres) rather than a magnification.
MPP_RANGE = (0.02, 50.0)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre


def check_mpp(mpp: float, path: str | Path, source: str) -> float:
    """Return ``mpp`` if it is a plausible slide resolution, else raise :class:`MppError` naming the source."""
    low, high = MPP_RANGE
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and low <= mpp <= high):
        raise MppError(
            f"{path}: mpp {mpp!r} from {source} is not a plausible slide resolution "
            f"(expected {low}-{high} um/px); pass the right value with an mpp override"
        )
    return float(mpp)


def mpp_from_aperio_description(description: str) -> float | None:
    """The ``MPP = x`` field of an Aperio ImageDescription, or None when absent or unparsable."""
    if not description.startswith("Aperio"):
        return None
    match = _APERIO_MPP.search(description)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def mpp_from_tiff_tags(x_resolution: float | None, resolution_unit: int | None) -> float | None:
    """mpp from XResolution (pixels per unit) and ResolutionUnit; None when the unit is not physical."""
    if not x_resolution or resolution_unit not in _UM_PER_UNIT:
        return None
    return _UM_PER_UNIT[resolution_unit] / float(x_resolution)


def mpp_from_openslide_properties(properties: Mapping[str, str]) -> float | None:
    """OpenSlide's normalised ``openslide.mpp-x`` property, or None."""
    value = properties.get("openslide.mpp-x")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def read_tiff_mpp(path: str | Path) -> tuple[float | None, str]:
    """(mpp, source) from the first page of a TIFF: Aperio description first, then resolution tags."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        description = page.description or ""
        aperio = mpp_from_aperio_description(description)
        if aperio is not None:
            return aperio, "the Aperio ImageDescription (MPP)"
        tags = page.tags
        x_res = tags.get("XResolution")
        unit = tags.get("ResolutionUnit")
        if x_res is not None and unit is not None:
            num, den = x_res.value if isinstance(x_res.value, tuple) else (x_res.value, 1)
            value = mpp_from_tiff_tags(num / den if den else None, int(unit.value))
            if value is not None:
                return value, "the TIFF resolution tags"
    return None, "no mpp metadata"


def resolve_mpp(
    path: str | Path,
    override: float | None = None,
    openslide_properties: Mapping[str, str] | None = None,
) -> float:
    """The level-0 mpp of ``path``: the override when given, else the file's metadata; raises :class:`MppError`."""
    if override is not None:
        return check_mpp(override, path, "the override")
    mpp, source = None, "no mpp metadata"
    if Path(path).suffix.lower() in (".tif", ".tiff", ".svs", ".btf", ".tf8", ".qptiff"):
        try:
            mpp, source = read_tiff_mpp(path)
        except Exception:  # an unusual TIFF layout: fall back to OpenSlide's reading below
            mpp = None
    if mpp is None and openslide_properties is not None:
        mpp = mpp_from_openslide_properties(openslide_properties)
        source = "the OpenSlide properties (openslide.mpp-x)"
    if mpp is None:
        raise MppError(f"{path}: no mpp in the file's metadata; pass it with an mpp override (e.g. --mpp 0.25)")
    return check_mpp(mpp, path, source)
