"""Which format a slide is, which readers to try in which order, how many pyramid levels it has, and its mpp.

=============  ============================  ===============================  ======================================
format         recognised by                 readers, in order                mpp from
=============  ============================  ===============================  ======================================
aperio-svs     tifffile (ImageDescription)   cuCIM, OpenSlide, tifffile       ``MPP =`` in the ImageDescription
generic-tiff   a tiled TIFF pyramid          cuCIM, OpenSlide, tifffile       resolution tags (cm or inch)
philips-tiff   Software + XML description    cuCIM, OpenSlide, tifffile       ``DICOM_PIXEL_SPACING`` in the XML
ome-tiff       OME-XML                       tifffile, cuCIM, OpenSlide       ``PhysicalSizeX`` in the OME-XML
dicom          a folder of WSI instances     wsidicom, OpenSlide              ``PixelSpacing`` of the finest level
ndpi, scn ...  tifffile's vendor flags       OpenSlide, tifffile              OpenSlide's ``openslide.mpp-x``
others (mrxs)  not TIFF, not DICOM           OpenSlide                        OpenSlide's ``openslide.mpp-x``
=============  ============================  ===============================  ======================================

Where the pixels are decoded changes the order for JPEG pyramids: an SVS, generic or Philips TIFF whose every level
is JPEG-tiled (8-bit RGB or YCbCr) is read on the host by tifffile first (gapless decodes each tile once, strictly),
then cuCIM and OpenSlide (:meth:`SlideFormat.readers_for`). cuCIM and OpenSlide return the pixels of damaged JPEG
data without failing, so a host read of theirs decodes each tile a second time to check it (once per open slide);
cuCIM keeps its place first for reads decoded on the GPU, and for other compressions (JPEG 2000, LZW, ...).

A reader that cannot open the slide, or sees fewer pyramid levels than the file holds (cuCIM and OpenSlide do not
see an OME-TIFF pyramid kept in SubIFDs), gives way to the next. For the formats whose own metadata defines the
mpp (SVS, Philips, OME-TIFF, DICOM) nothing else is taken in its place: a missing value is reported, not guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gapless.errors import SlideError
from gapless.pipeline.slides.dicom import is_dicom_file, scan_dicom_folder
from gapless.pipeline.slides.mpp import (
    check_mpp,
    mpp_from_aperio_description,
    mpp_from_ome_xml,
    mpp_from_openslide_properties,
    mpp_from_philips_description,
    mpp_from_tiff_tags,
    no_mpp_error,
)
from gapless.pipeline.slides.tiff import PageLayout, inspect_tiff, is_tiff

_TIFF_READERS = ("cucim", "openslide", "tifffile")
_HOST_JPEG_READERS = ("tifffile", "cucim", "openslide")  # host reads of JPEG pyramids gapless decodes itself
_OWN_MPP = ("aperio-svs", "philips-tiff", "ome-tiff", "dicom")  # formats whose mpp only their metadata defines


@dataclass(frozen=True)
class SlideFormat:
    """What :func:`detect_format` found out about a slide before any reader opened it."""

    name: str
    readers: tuple[str, ...]
    levels: int | None  # pyramid levels the file holds; None where the reader is the authority
    mpp: float | None
    mpp_source: str  # where the mpp was found, or where it was looked for
    layout: list[PageLayout] | None = None  # TIFF tile layout (for checks before cuCIM decodes)
    host_readers: tuple[str, ...] | None = None  # the order for reads decoded on the host, where it differs
    jpeg_levels: list[PageLayout] | None = None  # per pyramid level, where every level is JPEG gapless decodes

    def readers_for(self, device: str) -> tuple[str, ...]:
        """The readers to try, in order, for regions decoded on ``device`` ("cpu": the host, "cuda": the GPU)."""
        return self.host_readers if device == "cpu" and self.host_readers else self.readers

    def resolve_mpp(self, path: Path, override: float | None, properties: Mapping[str, str] | None) -> float:
        """The level-0 mpp: the override, else the format's own metadata, else (other formats) OpenSlide's."""
        if override is not None:
            return check_mpp(override, path, "the override")
        mpp, source = self.mpp, self.mpp_source
        if mpp is None and self.name not in _OWN_MPP and properties:
            mpp, source = mpp_from_openslide_properties(properties), "the OpenSlide properties (openslide.mpp-x)"
        if mpp is None:
            raise no_mpp_error(path, self.mpp_source)
        return check_mpp(mpp, path, source)


def slide_target(path: Path) -> Path:
    """The slide a path names: a DICOM instance file stands for its folder."""
    return path.parent if path.is_file() and is_dicom_file(path) else path


def detect_format(path: Path) -> SlideFormat:
    """The format of ``path`` (a file, or a DICOM folder); raises :class:`SlideError` for a truncated TIFF or an
    incomplete DICOM folder."""
    if path.is_dir():
        dicom = scan_dicom_folder(path)
        source = "the DICOM PixelSpacing" if dicom.mpp else "no PixelSpacing in the DICOM instances"
        return SlideFormat("dicom", ("wsidicom", "openslide"), len(dicom.sizes), dicom.mpp, source)
    if is_tiff(path):
        return _tiff_format(path)
    return SlideFormat("other", ("openslide",), None, None, "no openslide.mpp-x property")


def _tiff_format(path: Path) -> SlideFormat:
    layout, pyramid = inspect_tiff(path)
    levels = pyramid.levels
    host, jpeg_levels = (_HOST_JPEG_READERS, pyramid.layouts) if pyramid.jpeg else (None, None)
    if not levels:
        raise SlideError(f"{path}: a TIFF without tiled pages (not a pyramidal whole-slide image)")
    if pyramid.kind == "svs":
        mpp = mpp_from_aperio_description(pyramid.description)
        return SlideFormat("aperio-svs", _TIFF_READERS, levels, mpp,
                           "the Aperio ImageDescription (MPP)" if mpp else "no MPP in the Aperio ImageDescription",
                           layout, host, jpeg_levels)  # fmt: skip
    if pyramid.kind == "ome":
        mpp = mpp_from_ome_xml(pyramid.ome_xml)
        return SlideFormat("ome-tiff", ("tifffile", "cucim", "openslide"), levels, mpp,
                           "the OME-XML PhysicalSizeX" if mpp else "no PhysicalSizeX in the OME-XML", layout)  # fmt: skip
    if pyramid.kind == "philips":
        mpp = mpp_from_philips_description(pyramid.description)
        return SlideFormat("philips-tiff", _TIFF_READERS, levels, mpp,
                           "the Philips DICOM_PIXEL_SPACING" if mpp else "no DICOM_PIXEL_SPACING in the Philips XML",
                           layout, host, jpeg_levels)  # fmt: skip
    if pyramid.kind != "generic":  # NDPI, SCN, BIF, QPTIFF: OpenSlide's vendor drivers know them best
        return SlideFormat(pyramid.kind, ("openslide", "tifffile"), None, None, "no openslide.mpp-x property", layout)
    mpp = mpp_from_tiff_tags(*pyramid.resolution) if pyramid.resolution else None
    source = "the TIFF resolution tags" if mpp else "no physical TIFF resolution tags"
    return SlideFormat("generic-tiff", _TIFF_READERS, levels, mpp, source, layout, host, jpeg_levels)
