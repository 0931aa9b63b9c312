"""Microns per pixel (mpp) of a slide, read from each format's own metadata.

Scanners store the physical pixel size in different places, and libraries report it differently: cuCIM's
``spacing()`` says 1.0 for an Aperio SVS whose real mpp lives in the ImageDescription. So each format is read
explicitly:

- Aperio SVS: ``MPP = 0.2520`` in the ImageDescription;
- OME-TIFF: ``PhysicalSizeX`` (and its unit, micrometres by default) of the first image's ``Pixels`` in the OME-XML;
  an OME-TIFF without it has no mpp (its resolution tags are not trusted in its place);
- Philips TIFF: ``DICOM_PIXEL_SPACING`` (millimetres, rows then columns) in the XML ImageDescription;
- DICOM WSI: ``PixelSpacing`` (millimetres) of the finest level (:mod:`gapless.pipeline.slides.dicom`);
- generic TIFF: the resolution tags in centimetre or inch units;
- other formats (NDPI, MRXS, ...): OpenSlide's normalised ``openslide.mpp-x`` property.

A user override comes first. A value outside :data:`MPP_RANGE` is an error naming the file and where it came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from xml.etree import ElementTree

from gapless.errors import MppError

# Whole-slide images are scanned between roughly 0.1 and 10 um/px; outside this range a value is a unit mix-up
# (a 72 dpi default, a value in metres) rather than a magnification.
MPP_RANGE = (0.02, 50.0)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 = inch, 3 = centimetre
_UM_PER_OME_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4,
                    "pm": 1e-6}  # fmt: skip


def check_mpp(mpp: float, path: str | Path, source: str) -> float:
    """Return ``mpp`` if it is a plausible slide resolution, else raise :class:`MppError` naming the source."""
    low, high = MPP_RANGE
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and low <= mpp <= high):
        raise MppError(
            f"{path}: mpp {mpp!r} from {source} is not a plausible slide resolution "
            f"(expected {low}-{high} um/px); pass the right value with an mpp override"
        )
    return float(mpp)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def mpp_from_aperio_description(description: str) -> float | None:
    """The ``MPP = x`` field of an Aperio ImageDescription, or None when absent or unparsable."""
    if not description.startswith("Aperio"):
        return None
    match = _APERIO_MPP.search(description)
    return _float(match.group(1)) if match else None


def mpp_from_tiff_tags(x_resolution: float | None, resolution_unit: int | None) -> float | None:
    """mpp from XResolution (pixels per unit) and ResolutionUnit; None when the unit is not physical."""
    if not x_resolution or resolution_unit not in _UM_PER_UNIT:
        return None
    return _UM_PER_UNIT[resolution_unit] / float(x_resolution)


def mpp_from_ome_xml(xml: str) -> float | None:
    """``PhysicalSizeX`` of the first image's ``Pixels`` in micrometres, or None when absent or unparsable."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return None
    size = _float(pixels.get("PhysicalSizeX"))
    scale = _UM_PER_OME_UNIT.get(pixels.get("PhysicalSizeXUnit", "µm"))
    return size * scale if size is not None and scale is not None else None


def mpp_from_philips_description(description: str) -> float | None:
    """The WSI's ``DICOM_PIXEL_SPACING`` (mm) in a Philips XML description, in micrometres; else the first
    level's; None when there is none."""
    if "DPUfsImport" not in description:
        return None
    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError:
        return None
    for obj in root.iter("DataObject"):
        attributes = {a.get("Name"): a for a in obj.findall("Attribute")}
        image_type = attributes.get("PIM_DP_IMAGE_TYPE")
        if image_type is None or (image_type.text or "").strip() != "WSI":
            continue
        spacing = attributes.get("DICOM_PIXEL_SPACING")
        if spacing is None:  # the first level's pixel data representation
            spacing = next((a for a in obj.iter("Attribute") if a.get("Name") == "DICOM_PIXEL_SPACING"), None)
        if spacing is None or not spacing.text:
            return None
        values = [_float(v.strip().strip('"')) for v in spacing.text.split()]
        return values[-1] * 1000.0 if values and values[-1] is not None else None
    return None


def mpp_from_openslide_properties(properties: Mapping[str, str]) -> float | None:
    """OpenSlide's normalised ``openslide.mpp-x`` property, or None."""
    return _float(properties.get("openslide.mpp-x"))


def no_mpp_error(path: str | Path, where: str) -> MppError:
    return MppError(f"{path}: no mpp in the file's metadata ({where}); pass it with an mpp override (e.g. --mpp 0.25)")
