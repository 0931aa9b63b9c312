"""DICOM whole-slide images from a synthetic tiled TIFF, written with ``wsidicom``.

Each pyramid level of the TIFF becomes one DICOM VL Whole Slide Microscopy instance (TILED_FULL) whose frames are
the TIFF's JPEG tiles, copied without re-encoding, so a DICOM slide and the TIFF it came from hold the same
pixels. The pixel spacing of every level is written in millimetres, as DICOM defines it. ``concatenation_frames``
splits each level into a concatenation of instances of at most that many frames (how scanners split large
levels; it lets tests remove one part).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np


def _image_data_class() -> type:
    """An ``wsidicom`` ImageData over one tiled JPEG TIFF page (defined lazily: wsidicom is imported on use)."""
    import simplejpeg
    import tifffile
    from pydicom.uid import JPEGBaseline8Bit
    from wsidicom.codec import Encoder
    from wsidicom.geometry import Size, SizeMm
    from wsidicom.instance import ImageData

    class TiffPageImageData(ImageData):
        def __init__(self, path: Path, page: int, mpp: float) -> None:
            self._tif = tifffile.TiffFile(path)
            self._page = self._tif.pages[page]
            self._mpp = mpp
            self._columns = -(-self._page.imagewidth // self._page.tilewidth)
            super().__init__(Encoder.create(JPEGBaseline8Bit, 8, "YBR_FULL_422"))

        transfer_syntax = property(lambda self: JPEGBaseline8Bit)
        image_size = property(lambda self: Size(self._page.imagewidth, self._page.imagelength))
        tile_size = property(lambda self: Size(self._page.tilewidth, self._page.tilelength))
        pixel_spacing = property(lambda self: SizeMm(self._mpp / 1000, self._mpp / 1000))
        imaged_size = property(lambda self: None)
        samples_per_pixel = property(lambda self: 3)
        photometric_interpretation = property(lambda self: "YBR_FULL_422")
        bits = property(lambda self: 8)
        image_coordinate_system = property(lambda self: None)
        thread_safe = property(lambda self: False)
        lossy_compression = property(lambda self: [])
        transcoder = property(lambda self: None)

        def get_encoded_tile(self, tile: Any, z: float, path: str) -> bytes:
            index = tile.y * self._columns + tile.x
            handle = self._tif.filehandle
            handle.seek(self._page.dataoffsets[index])
            return handle.read(self._page.databytecounts[index])

        def get_decoded_tile(self, tile: Any, z: float, path: str, cache: bool = True) -> np.ndarray:
            return simplejpeg.decode_jpeg(self.get_encoded_tile(tile, z, path), strict=True)

        def close(self) -> None:
            self._tif.close()

    return TiffPageImageData


def _metadata(mpp: float) -> Any:
    from pydicom.uid import generate_uid
    from wsidicom.geometry import SizeMm
    from wsidicom.metadata import (
        Equipment,
        Image,
        Label,
        OpticalPath,
        Patient,
        Pyramid,
        Series,
        Slide,
        SlideSample,
        Study,
        WsiMetadata,
    )

    return WsiMetadata(
        study=Study(uid=generate_uid()),
        series=Series(uid=generate_uid(), number=1),
        patient=Patient(),
        equipment=Equipment(manufacturer="gapless synth"),
        slide=Slide(identifier="synthetic", samples=[SlideSample(identifier="sample", uid=generate_uid())]),
        pyramid=Pyramid(
            uid=generate_uid(), image=Image(pixel_spacing=SizeMm(mpp / 1000, mpp / 1000)), optical_paths=[OpticalPath()]
        ),
        label=Label(),
        frame_of_reference_uid=generate_uid(),
        dimension_organization_uids=[generate_uid()],
    )


def tiff_to_dicom(tiff: Path, out: Path, level_mpps: list[float], concatenation_frames: int | None = None) -> Path:
    """Write the pyramid of the JPEG-tiled ``tiff`` (levels at ``level_mpps``) as a DICOM WSI folder ``out``."""
    from wsidicom import WsiDicom, WsiInstance
    from wsidicom.instance.dataset import ImageType
    from wsidicom.metadata.schema.dicom.wsi import WsiMetadataDicomSchema
    from wsidicom.options import ConcatenationByFrames
    from wsidicom.source import Source

    image_data = _image_data_class()
    base = WsiMetadataDicomSchema().dump(_metadata(level_mpps[0]), ImageType.VOLUME)
    levels = [image_data(tiff, i, mpp) for i, mpp in enumerate(level_mpps)]

    class TiffSource(Source):
        base_dataset = property(lambda self: base)
        level_instances = property(lambda self: instances)
        label_instances = overview_instances = thumbnail_instances = annotation_instances = property(lambda s: [])

        def close(self) -> None:
            for level in levels:
                level.close()

    instances = [WsiInstance.create_instance(data, copy.deepcopy(base), ImageType.VOLUME, 0) for data in levels]
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    concatenation = ConcatenationByFrames(concatenation_frames) if concatenation_frames else None
    try:
        with WsiDicom(TiffSource()) as wsi:
            wsi.save(tmp, include_labels=False, include_overviews=False, include_thumbnails=False,
                     concatenation=concatenation)  # fmt: skip
        for i, instance in enumerate(sorted(tmp.iterdir())):
            instance.rename(tmp / f"instance_{i:03d}.dcm")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
