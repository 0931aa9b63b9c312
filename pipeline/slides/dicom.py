"""DICOM whole-slide images: a folder of VL Whole Slide Microscopy instances is one slide.

:func:`scan_dicom_folder` reads the instances' headers (not their pixels) with pydicom, and reports a slide that is
not whole instead of guessing: a concatenation with parts missing, or a TILED_FULL level with fewer frames than its
tile grid needs, is a :class:`~gapless.errors.SlideError` naming the folder and what is missing. It also gives the
mpp (``PixelSpacing`` of the finest level, in millimetres). OpenSlide reads such folders; :class:`WsidicomBackend`
reads them with ``wsidicom`` (the field's DICOM WSI library) when OpenSlide cannot, decoding JPEG frames strictly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import SlideError
from gapless.pipeline.slides.decoding import decode_jpeg, tile_check_enabled
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.slides.tiled import assemble_region, level_downsamples, to_device

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
_HEADER_TAGS = ("SOPClassUID", "SeriesInstanceUID", "ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows",
                "Columns", "Rows", "NumberOfFrames", "DimensionOrganizationType", "ConcatenationUID",
                "InConcatenationNumber", "InConcatenationTotalNumber", "TotalPixelMatrixFocalPlanes",
                "NumberOfOpticalPaths", "SharedFunctionalGroupsSequence")  # fmt: skip


@dataclass(frozen=True)
class DicomSlide:
    """The pyramid of a DICOM slide folder: level sizes (largest first), the level-0 mpp, the instance files."""

    folder: Path
    sizes: list[tuple[int, int]]
    mpp: float | None
    files: list[Path]


def is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly inside ``folder`` (by their ``DICM`` preamble, whatever their names)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p))


def _headers(folder: Path) -> list[tuple[Path, Any]]:
    import pydicom

    volumes = []
    for path in dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
        except Exception as exc:
            raise SlideError(f"{folder}: unreadable DICOM file {path.name} ({exc})") from exc
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        if str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS and "VOLUME" in image_type[2:3]:
            volumes.append((path, ds))
    return volumes


def _level_problems(size: tuple[int, int], instances: list[Any]) -> list[str]:
    problems, first = [], instances[0]
    name = f"level {size[0]}x{size[1]}"
    parts = defaultdict(set)
    for ds in instances:
        if "ConcatenationUID" in ds:
            parts[str(ds.ConcatenationUID)].add(int(ds.get("InConcatenationNumber", 0)))
    for uid, numbers in parts.items():
        total = int(next(ds.get("InConcatenationTotalNumber", 0) for ds in instances
                         if str(ds.get("ConcatenationUID", "")) == uid))  # fmt: skip
        missing = sorted(set(range(1, total + 1)) - numbers)
        if missing:
            problems.append(
                f"{name}: instance(s) {', '.join(map(str, missing))} of {total} of its concatenation missing"
            )
    if not problems and str(first.get("DimensionOrganizationType", "")) == "TILED_FULL":
        tiles = -(-size[0] // int(first.Columns)) * -(-size[1] // int(first.Rows))
        planes = int(first.get("TotalPixelMatrixFocalPlanes", 1) or 1) * int(first.get("NumberOfOpticalPaths", 1) or 1)
        frames = sum(int(ds.get("NumberOfFrames", 1)) for ds in instances)
        if frames < tiles * planes:
            problems.append(f"{name}: {frames} of its {tiles * planes} frames present (an instance is missing)")
    return problems


def _pixel_spacing_um(ds: Any) -> float | None:
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return float(spacing[1]) * 1000.0
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None


def scan_dicom_folder(folder: Path) -> DicomSlide:
    """The checked pyramid of a DICOM slide folder; raises :class:`SlideError` naming what is wrong or missing."""
    volumes = _headers(folder)
    if not volumes:
        raise SlideError(f"{folder}: no DICOM whole-slide image (VOLUME) instances in the folder")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in volumes}
    if len(series) > 1:
        raise SlideError(f"{folder}: holds {len(series)} slides (DICOM series); give each slide its own folder")
    levels: dict[tuple[int, int], list[Any]] = defaultdict(list)
    for _, ds in volumes:
        levels[(int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows))].append(ds)
    sizes = sorted(levels, key=lambda s: -s[0] * s[1])
    problems = [p for size in sizes for p in _level_problems(size, levels[size])]
    if problems:
        raise SlideError(f"{folder}: incomplete DICOM slide ({'; '.join(problems)})")
    return DicomSlide(folder, sizes, _pixel_spacing_um(levels[sizes[0]][0]), [p for p, _ in volumes])


class WsidicomBackend:
    """A DICOM slide folder read with ``wsidicom``: JPEG baseline frames decoded strictly here, others by wsidicom."""

    name = "wsidicom"

    def __init__(self, path: Path) -> None:
        from wsidicom import WsiDicom

        if not path.is_dir():
            raise SlideError(f"{path}: wsidicom reads a folder of DICOM instances")
        self._wsi = WsiDicom.open(path)
        self._levels = sorted(self._wsi.levels, key=lambda lv: -lv.size.width)
        self._jpeg = [str(lv.default_instance.image_data.transfer_syntax) == "1.2.840.10008.1.2.4.50"
                      for lv in self._levels]  # fmt: skip
        self.dimensions = [(lv.size.width, lv.size.height) for lv in self._levels]
        self.downsamples = level_downsamples(self.dimensions)

    def properties(self) -> None:
        return None  # mpp comes from the instances' headers (scan_dicom_folder)

    def read(self, path: Path, location: tuple[int, int], level: int, size: tuple[int, int], device: str) -> Any:
        lv, strict = self._levels[level], tile_check_enabled()

        def decode(col: int, row: int) -> np.ndarray:
            try:
                if self._jpeg[level]:
                    data = self._wsi.read_encoded_tile(lv.level, (col, row), crop_to_image_boundary=False)
                    return decode_jpeg(data, strict)
                return np.asarray(self._wsi.read_tile(lv.level, (col, row)))
            except Exception as exc:
                raise SlideError(
                    f"{path}: damaged image data in frame ({col}, {row}) of level {level} ({exc})"
                ) from exc

        origin = level_origin(location, self.downsamples[level])
        tile = (lv.tile_size.width, lv.tile_size.height)
        return to_device(assemble_region(origin, size, tile, decode), device)

    def close(self) -> None:
        if self._wsi is not None:
            self._wsi.close()
            self._wsi = None
