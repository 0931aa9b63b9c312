"""The slide formats ``gapless synth`` writes, and what each puts in its TIFF pages.

Every TIFF-based format holds the same JPEG tiles; they differ in where the pyramid lives and where the mpp is:

- ``tiff``: generic tiled TIFF, levels as top-level pages, mpp in the resolution tags (centimetre units, per level);
- ``svs``: Aperio-like, mpp only in the ImageDescription (``|MPP = 0.25|``), no physical resolution tags;
- ``ome-tiff``: OME-TIFF, the reduced levels in SubIFDs of the first page, mpp as ``PhysicalSizeX`` in the OME-XML;
- ``philips``: Philips-like TIFF, ``Software`` starting with "Philips" and an XML ImageDescription holding
  ``DICOM_PIXEL_SPACING`` (millimetres) for the image and for every level;
- ``dicom``: a folder of DICOM VL Whole Slide Microscopy instances, one per level, converted from the generic TIFF
  with ``wsidicom`` (:mod:`gapless.pipeline.synth.dicom`).

Hamamatsu NDPI and 3DHISTECH MRXS are proprietary formats that no library here can write; they are read through
OpenSlide only.
"""

from __future__ import annotations

from typing import Any

FORMATS = ("tiff", "svs", "ome-tiff", "philips", "dicom")
UNWRITABLE = {"ndpi": "Hamamatsu NDPI", "mrxs": "3DHISTECH MRXS"}
SUFFIXES = {"tiff": ".tiff", "svs": ".svs", "ome-tiff": ".ome.tiff", "philips": ".tiff", "dicom": ""}
PHILIPS_SOFTWARE = "Philips DP v1.0 (gapless synth)"


def check_format(fmt: str) -> str:
    """``fmt`` if gapless can write it; otherwise a ValueError that says which formats it can write."""
    if fmt in UNWRITABLE:
        raise ValueError(
            f"format: {UNWRITABLE[fmt]} ({fmt}) cannot be written offline (a proprietary format); gapless reads it "
            f"through OpenSlide. Writable: {', '.join(FORMATS)}"
        )
    if fmt not in FORMATS:
        raise ValueError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    return fmt


def _philips_spacing(mpp: float) -> str:
    mm = f"{mpp / 1000:.9g}"
    return f'"{mm}" "{mm}"'  # rows then columns, in millimetres, quoted as Philips writes them


def philips_description(level_mpps: list[float]) -> str:
    """The XML ImageDescription of a Philips TIFF: one WSI scanned image with one pixel spacing per level."""

    def attribute(name: str, group: str, element: str, kind: str, value: str) -> str:
        return f'<Attribute Name="{name}" Group="{group}" Element="{element}" PMSVR="{kind}">{value}</Attribute>'

    representations = "".join(
        '<DataObject ObjectType="PixelDataRepresentation">'
        + attribute("PIIM_PIXEL_DATA_REPRESENTATION_NUMBER", "0x101D", "0x1008", "IUInt16", str(i))
        + attribute("DICOM_PIXEL_SPACING", "0x0028", "0x0030", "IDoubleArray", _philips_spacing(mpp))
        + "</DataObject>"
        for i, mpp in enumerate(level_mpps)
    )
    image = (
        '<DataObject ObjectType="DPScannedImage">'
        + attribute("DICOM_PIXEL_SPACING", "0x0028", "0x0030", "IDoubleArray", _philips_spacing(level_mpps[0]))
        + attribute("PIM_DP_IMAGE_TYPE", "0x301D", "0x1004", "IString", "WSI")
        + attribute(
            "PIIM_PIXEL_DATA_REPRESENTATION_SEQUENCE",
            "0x1001",
            "0x8B01",
            "IDataObjectArray",
            f"<Array>{representations}</Array>",
        )
        + "</DataObject>"
    )
    scanned = attribute("PIM_DP_SCANNED_IMAGES", "0x301D", "0x1003", "IDataObjectArray", f"<Array>{image}</Array>")
    return f'<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">{scanned}</DataObject>'


def aperio_description(width: int, height: int, tile: int, quality: int, mpp: float | None) -> str:
    """An Aperio ImageDescription; ``mpp=None`` leaves out the MPP and AppMag fields."""
    fields = f"|AppMag = {40 * 0.25 / mpp:g}|MPP = {mpp:g}" if mpp else ""
    return (
        f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB "
        f"Q={quality}{fields}|Generator = gapless synth"
    )


def page_options(
    fmt: str, index: int, n_levels: int, mpp: float, level_mpps: list[float], size: tuple[int, int], tile: int,
    quality: int, with_mpp: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """tifffile ``write`` keywords of pyramid level ``index`` (of ``n_levels``) of a ``fmt`` slide at ``mpp``.

    ``with_mpp=False`` leaves the physical pixel size out (for testing how a file without it is reported)."""
    kw: dict[str, Any] = {"subfiletype": 1 if index else 0, "metadata": None}
    if fmt in ("tiff", "dicom"):
        if with_mpp:
            kw.update(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    elif fmt == "svs":
        if index == 0:
            kw["description"] = aperio_description(*size, tile, quality, mpp if with_mpp else None)
    elif fmt == "philips":
        kw["software"] = PHILIPS_SOFTWARE
        if index == 0:
            description = philips_description(level_mpps)
            kw["description"] = description if with_mpp else description.replace("DICOM_PIXEL_SPACING", "NO_SPACING")
    elif fmt == "ome-tiff" and index == 0:
        metadata: dict[str, Any] = {"axes": "YXS"}
        if with_mpp:
            metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
        kw.update(metadata=metadata, subifds=n_levels - 1)
    return kw
