"""Synthetic slides: pyramid and metadata, physical scale (ruler), and classes that differ at different scales."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from gapless.cli import main
from gapless.pipeline.slides import open_slide, plan_region
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.scene import place_glands
from gapless.pipeline.synth.styles import CLASS_STYLES
from gapless.pipeline.synth.writer import pyramid_shape, write_slide


def test_pyramid_levels_metadata_and_tiles(synthetic_slides, tmp_path) -> None:
    with tifffile.TiffFile(synthetic_slides.paths[0]) as tif:
        pages = list(tif.pages)
        assert [p.shape[:2] for p in pages] == [(3200, 4000), (800, 1000), (200, 250)]
        assert all(p.is_tiled and p.tilewidth == 256 and p.compression == 7 for p in pages)  # JPEG tiles
        assert pages[1].tags["XResolution"].value == (10000, 1)  # 1.0 um/px in pixels per cm
    two = write_slide(tmp_path / "two.tiff", SlideSpec(600.0, 400.0, 0.25, "regular", 1), level_step=2)
    assert [lv.mpp for lv in open_slide(two).levels] == [0.25, 0.5, 1.0, 2.0, 4.0]
    svs = write_slide(tmp_path / "a.svs", SlideSpec(600.0, 400.0, 0.5, "atypia", 1), fmt="svs")
    with tifffile.TiffFile(svs) as tif:
        assert tif.pages[0].description.startswith("Aperio") and "|MPP = 0.5|" in tif.pages[0].description
    assert open_slide(svs).mpp == 0.5 and open_slide(svs, backend="openslide").mpp == 0.5
    assert pyramid_shape(4000, 3000, 4) == (3, 4000, 3008)


@pytest.mark.parametrize("target", [0.25, 0.75, 2.0])
def test_ruler_period_matches_physical_scale(ruler_slide, target: float) -> None:
    slide = open_slide(ruler_slide.path)
    plan = plan_region(slide.levels, target, 224, (2000, 2000))
    region = slide.read_region(plan.location, plan.level, (plan.read_size,) * 2)
    tile = cv2.resize(region, (224, 224), interpolation=cv2.INTER_AREA)
    profile = tile[..., 1].astype(float).mean(axis=0)
    dark = profile < profile.mean()
    rising = np.flatnonzero(dark[1:] & ~dark[:-1])  # light -> dark edges, one per period
    assert len(rising) >= 2
    period_px = np.diff(rising).mean()
    assert period_px == pytest.approx(ruler_slide.period_um / target, rel=0.05)


def _nucleus_areas_um2(path, mpp: float) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        level0 = tif.pages[0].asarray()
    dark = (level0[..., 0] < 110).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA] * mpp * mpp
    return areas[areas > 8.0]


def test_classes_differ_in_nuclei_at_high_magnification(tmp_path) -> None:
    spec = dict(width_um=700.0, height_um=600.0, base_mpp=0.25, seed=5)
    regular = write_slide(tmp_path / "r.tiff", SlideSpec(label="regular", **spec))
    atypia = write_slide(tmp_path / "a.tiff", SlideSpec(label="atypia", **spec))
    big_regular = np.percentile(_nucleus_areas_um2(regular, 0.25), 90)
    big_atypia = np.percentile(_nucleus_areas_um2(atypia, 0.25), 90)
    assert big_atypia > 1.5 * big_regular  # atypical nuclei: 9.5 um and pleomorphic vs 6 um


def test_lobular_class_differs_in_architecture() -> None:
    tissue = np.ones((500, 500), np.float32)  # 1 mm of tissue on a 2 um grid
    spreads = {}
    for label in ("regular", "lobular"):
        glands = place_glands(np.random.default_rng(0), CLASS_STYLES[label], tissue, 2.0)
        centres = glands[:, :2]
        d = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        spreads[label] = (len(glands), float(np.median(d.min(axis=1) / glands[:, 2])))
    assert spreads["lobular"][1] < spreads["regular"][1]  # glands crowd together into lobules


def test_synth_cli_writes_slides_labels_and_ruler(tmp_path) -> None:
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--slides", "3", "--size-mm", "0.5", "0.4", "--ruler", "20", "--he-texture"]
    assert main(args) == 0
    lines = (out / "labels.csv").read_text().splitlines()
    assert lines[0] == "slide,label,patient" and len(lines) == 4
    assert {line.split(",")[1] for line in lines[1:]} == {"regular", "atypia"}
    assert (out / "ruler.tiff").is_file() and open_slide(out / "slide_002.tiff").mpp == 0.25
    assert main(["synth", "--out", str(out), "--slides", "-1"]) == 2
