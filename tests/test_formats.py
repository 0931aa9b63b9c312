"""Slide formats as labs have them: every format gapless can write, read by every reader that reads it.

One small synthetic slide is written as generic TIFF, Aperio SVS, Philips TIFF, OME-TIFF (pyramid in SubIFDs) and a
DICOM WSI folder; every reader that opens a format must return the pixels of the generic TIFF's pages (decoded by
tifffile's own decoder) at every level, and the mpp of the format's own metadata. Hamamatsu NDPI and 3DHISTECH
MRXS cannot be written offline: they are read through OpenSlide, whose mpp property is covered here.
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import tifffile

from gapless.cli import main
from gapless.errors import MppError, SlideError
from gapless.pipeline.slides import open_slide
from gapless.pipeline.slides.formats import SlideFormat
from gapless.pipeline.slides.inputs import find_slides
from gapless.pipeline.synth.formats import check_format
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide

MPP = 0.2527  # not a round number: each format must carry it exactly
SPEC = SlideSpec(400.0, 300.0, MPP, "regular", seed=7)
NAMES = {"tiff": "g.tiff", "svs": "a.svs", "philips": "p.tiff", "ome-tiff": "o.ome.tiff", "dicom": "d"}
READERS = {  # format: (format name, the readers that must read it, the one auto picks for host reads)
    "tiff": ("generic-tiff", ("cucim", "openslide", "tifffile"), "tifffile"),
    "svs": ("aperio-svs", ("cucim", "openslide", "tifffile"), "tifffile"),
    "philips": ("philips-tiff", ("cucim", "openslide", "tifffile"), "tifffile"),
    "ome-tiff": ("ome-tiff", ("tifffile",), "tifffile"),
    "dicom": ("dicom", ("wsidicom", "openslide"), "wsidicom"),
}
JPEG_TOLERANCE = 2  # grey levels between JPEG decoders


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("formats")
    paths = {fmt: write_slide(root / name, SPEC, fmt=fmt) for fmt, name in NAMES.items()}
    with tifffile.TiffFile(paths["tiff"]) as tif:
        reference = [page.asarray() for page in tif.pages]
    return {"paths": paths, "reference": reference, "root": root}


def _regions(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) boxes of a level: an interior one across tile seams, and ones touching the far edges."""
    return [(200 % width, 100 % height, min(300, width - 200 % width), min(260, height - 100 % height)),
            (width - 37, height - 21, 37, 21), (0, height - 64, 64, 64)]  # fmt: skip


@pytest.mark.parametrize("fmt, reader", [(f, r) for f, (_, readers, _) in READERS.items() for r in readers])
def test_every_reader_returns_the_same_pixels_at_every_level(slides, fmt: str, reader: str) -> None:
    slide = open_slide(slides["paths"][fmt], backend=reader)
    assert slide.format == READERS[fmt][0] and slide.backend_name == reader
    assert len(slide.levels) == len(slides["reference"]) == 3
    for level, expected in zip(slide.levels, slides["reference"]):
        assert (level.height, level.width) == expected.shape[:2]
        assert level.mpp == pytest.approx(MPP * level.downsample)
        for x, y, w, h in _regions(level.width, level.height):
            region = slide.read_region((round(x * level.downsample), round(y * level.downsample)), level.index, (w, h))
            diff = np.abs(region.astype(int) - expected[y : y + h, x : x + w].astype(int))
            assert region.shape == (h, w, 3) and diff.max() <= JPEG_TOLERANCE, (fmt, reader, level.index)
    slide.close()


@pytest.mark.parametrize("fmt", list(NAMES))
def test_the_format_is_recognised_with_its_mpp_and_read_by_its_first_reader(slides, fmt: str) -> None:
    slide = open_slide(slides["paths"][fmt])
    name, _, first = READERS[fmt]
    assert (slide.format, slide.backend_name) == (name, first)
    assert slide.mpp == pytest.approx(MPP, abs=1e-6)


def test_ome_pyramid_in_subifds_is_missed_by_cucim_and_openslide_and_read_by_tifffile(slides) -> None:
    for reader in ("cucim", "openslide"):
        with pytest.raises(SlideError, match=f"o.ome.tiff: .*{reader}: sees 1 of the file's 3 pyramid levels"):
            open_slide(slides["paths"]["ome-tiff"], backend=reader)


def test_a_reader_that_cannot_decode_gives_way_to_the_next(tmp_path) -> None:
    """cuCIM opens a zstd-tiled TIFF but cannot decode it: OpenSlide reads it. JPEG 2000 tiles: only tifffile."""
    image = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    picked = {}
    for compression in ("zstd", "jpeg2000"):
        path = tmp_path / f"{compression}.tiff"
        with tifffile.TiffWriter(path) as tw:
            for i, level in enumerate((image, image[::4, ::4].copy())):
                tw.write(level, tile=(256, 256), compression=compression, photometric="rgb", subfiletype=int(i > 0),
                         resolution=(4e4 / 4**i, 4e4 / 4**i), resolutionunit="CENTIMETER", metadata=None)  # fmt: skip
        slide = open_slide(path)
        picked[compression] = slide.backend_name
        np.testing.assert_array_equal(slide.read_region((100, 50), 0, (200, 100)), image[50:150, 100:300])
    assert picked == {"zstd": "openslide", "jpeg2000": "tifffile"}


def test_a_slide_no_reader_opens_lists_every_reason(tmp_path) -> None:
    path = tmp_path / "stripped.tiff"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb")  # no tiles: not a slide
    with pytest.raises(SlideError, match="stripped.tiff: a TIFF without tiled pages"):
        open_slide(path)
    (tmp_path / "x.ndpi").write_bytes(b"\x00" * 512)
    with pytest.raises(SlideError, match=r"x.ndpi: not a readable whole-slide image \(other; openslide: .*"):
        open_slide(tmp_path / "x.ndpi")


@pytest.mark.parametrize(
    "fmt, where",
    [("tiff", "no physical TIFF resolution tags"), ("svs", "no MPP in the Aperio ImageDescription"),
     ("philips", "no DICOM_PIXEL_SPACING in the Philips XML"), ("ome-tiff", "no PhysicalSizeX in the OME-XML")],
)  # fmt: skip
def test_missing_mpp_is_reported_per_format_never_guessed(tmp_path, fmt: str, where: str) -> None:
    path = write_slide(tmp_path / ("x" + NAMES[fmt]), SlideSpec(300.0, 300.0, 0.5, "regular", 1), fmt=fmt,
                       with_mpp=False)  # fmt: skip
    with pytest.raises(MppError, match=f"{path.name}: no mpp in the file's metadata \\({where}\\)"):
        open_slide(path)
    assert open_slide(path, mpp=0.5).mpp == 0.5


def test_dicom_without_pixel_spacing_is_reported(slides, tmp_path) -> None:
    folder = shutil.copytree(slides["paths"]["dicom"], tmp_path / "nospacing")
    for instance in folder.iterdir():
        ds = pydicom.dcmread(instance)
        del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
        ds.save_as(instance)
    with pytest.raises(MppError, match="nospacing: no mpp .*no PixelSpacing in the DICOM instances"):
        open_slide(folder)


def test_dicom_folder_with_a_missing_instance_is_reported_not_guessed(tmp_path) -> None:
    folder = write_slide(tmp_path / "split", SPEC, fmt="dicom", dicom_concatenation=6)
    assert open_slide(folder).levels[0].width == 1584  # whole: it opens
    level0 = [p for p in folder.iterdir() if int(pydicom.dcmread(p, stop_before_pixels=True).TotalPixelMatrixColumns)
              == 1584]  # fmt: skip
    assert len(level0) > 2
    second = next(p for p in level0 if int(pydicom.dcmread(p, stop_before_pixels=True).InConcatenationNumber) == 2)
    second.unlink()
    with pytest.raises(SlideError, match=r"split: incomplete DICOM slide \(level 1584x1184: instance\(s\) 2 of "):
        open_slide(folder)


def test_dicom_folders_are_found_as_one_slide_each(slides, tmp_path) -> None:
    root = tmp_path / "archive"
    shutil.copytree(slides["paths"]["dicom"], root / "case1" / "slide_a")
    shutil.copy(slides["paths"]["svs"], root / "case1" / "b.svs")
    (root / "case1" / "notes.txt").write_text("x")
    assert find_slides([root]) == [(root / "case1" / "b.svs").resolve(), (root / "case1" / "slide_a").resolve()]
    instance = next((root / "case1" / "slide_a").iterdir())
    assert find_slides([instance]) == [(root / "case1" / "slide_a").resolve()]
    assert open_slide(instance).path == root / "case1" / "slide_a"


def test_openslide_only_formats_take_the_mpp_openslide_reports(tmp_path) -> None:
    """NDPI and MRXS cannot be written offline; their mpp is OpenSlide's normalised property."""
    ndpi = SlideFormat("ndpi", ("openslide", "tifffile"), None, None, "no openslide.mpp-x property")
    assert ndpi.resolve_mpp(tmp_path / "a.ndpi", None, {"openslide.mpp-x": "0.2265", "hamamatsu.XResolution": "1"}) \
        == pytest.approx(0.2265)  # fmt: skip
    mrxs = SlideFormat("other", ("openslide",), None, None, "no openslide.mpp-x property")
    with pytest.raises(MppError, match="a.mrxs: no mpp in the file's metadata \\(no openslide.mpp-x property\\)"):
        mrxs.resolve_mpp(tmp_path / "a.mrxs", None, {"mirax.GENERAL.SLIDE_VERSION": "01.02"})
    with pytest.raises(MppError, match="a.mrxs: mpp 352.7.* not a plausible"):
        mrxs.resolve_mpp(tmp_path / "a.mrxs", None, {"openslide.mpp-x": "352.7"})
    own = SlideFormat("ome-tiff", ("tifffile",), 3, None, "no PhysicalSizeX in the OME-XML")
    with pytest.raises(MppError, match="no PhysicalSizeX"):  # OpenSlide's value is never taken in its place
        own.resolve_mpp(tmp_path / "a.ome.tiff", None, {"openslide.mpp-x": "0.25"})


def test_synth_writes_each_format_and_says_which_it_cannot(tmp_path, capsys) -> None:
    for fmt in ("ome-tiff", "philips", "dicom"):
        out = tmp_path / fmt
        assert main(["synth", "--out", str(out), "--slides", "1", "--size-mm", "0.3", "0.3", "--format", fmt]) == 0
        slides = find_slides([out])
        assert len(slides) == 1 and open_slide(slides[0]).format == READERS[fmt][0]
    assert main(["synth", "--out", str(tmp_path / "n"), "--format", "ndpi"]) == 2
    assert "Hamamatsu NDPI (ndpi) cannot be written offline" in capsys.readouterr().err
    with pytest.raises(ValueError, match="MRXS"):
        check_format("mrxs")
