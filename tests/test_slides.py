"""Slide reading, mpp metadata, region planning and bad input, on real pyramidal TIFFs written with tifffile."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import tifffile

from gapless.errors import MppError, RegionTooLargeError, SlideError
from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.pipeline.slides import (
    SlideCache,
    choose_level,
    open_slide,
    plan_region,
)
from gapless.pipeline.slides.planning import level_origin
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide


def test_choose_level_picks_coarsest_not_coarser_than_target_with_tolerance() -> None:
    mpps = [0.25, 1.0, 4.0]
    assert [choose_level(mpps, t) for t in EVAL_MPPS] == [0, 0, 0, 0, 1, 1, 1]
    assert choose_level(mpps, 0.2501) == 0
    assert choose_level(mpps, 0.9995) == 1  # a scanner's rounding must not send the read to a 16x larger level
    assert choose_level(mpps, 0.99) == 0
    assert choose_level(mpps, 0.1) == 0  # finer than every level: the finest (upsampled later)
    assert choose_level([0.25, 0.5, 1.0, 2.0], 1.5) == 2


def test_plan_read_size_and_footprint_across_levels(synthetic_slides) -> None:
    slide = open_slide(synthetic_slides.paths[0])
    for t in EVAL_MPPS:
        plan = plan_region(slide.levels, t, 224, (2000, 1600))
        assert plan.read_size == round(224 * t / plan.level_mpp)
        assert plan.level_mpp <= t
        # The region read covers the footprint of a 224 px tile at t, to within one level pixel.
        covered = plan.read_size * slide.levels[plan.level].downsample
        assert abs(covered - 224 * t / slide.mpp) <= slide.levels[plan.level].downsample  # footprint in level-0 px
    assert plan_region(slide.levels, 2.0, 224, (0, 0)).read_size == 448
    assert plan_region(slide.levels, 0.375, 224, (0, 0)).read_size == 336


@pytest.mark.parametrize("target", EVAL_MPPS)
def test_planned_reads_match_tifffile_pixels_exactly(synthetic_slides, target: float) -> None:
    """The planned region read through cuCIM is the same pixels as a crop of the level's page read by tifffile."""
    path = synthetic_slides.paths[1]
    slide = open_slide(path)
    with tifffile.TiffFile(path) as tif:
        pages = [tif.pages[i].asarray() for i in range(len(slide.levels))]
    rng = np.random.default_rng(0)
    width, height = slide.dimensions
    centres = [(0, 0), (width, height), (width - 1, 0)] + [tuple(rng.uniform(0, 1, 2) * (width, height))
                                                            for _ in range(3)]  # fmt: skip
    for centre in centres:
        plan = plan_region(slide.levels, target, 224, centre)
        lv = slide.levels[plan.level]
        region = slide.read_region(plan.location, plan.level, (plan.read_size, plan.read_size))
        lx, ly = level_origin(plan.location, lv.downsample)
        assert lx * lv.downsample == plan.location[0] and ly * lv.downsample == plan.location[1]
        assert 0 <= lx and lx + plan.read_size <= lv.width and 0 <= ly and ly + plan.read_size <= lv.height
        expected = pages[plan.level][ly : ly + plan.read_size, lx : lx + plan.read_size]
        assert region.shape == (plan.read_size, plan.read_size, 3) and region.dtype == np.uint8
        np.testing.assert_array_equal(region, expected)


def test_region_is_centred_when_it_fits(synthetic_slides) -> None:
    slide = open_slide(synthetic_slides.paths[0])
    plan = plan_region(slide.levels, 1.0, 224, (2000.0, 1600.0))
    ds = slide.levels[plan.level].downsample
    centre = (plan.location[0] + plan.read_size * ds / 2, plan.location[1] + plan.read_size * ds / 2)
    assert abs(centre[0] - 2000) <= ds and abs(centre[1] - 1600) <= ds


def test_openslide_backend_reads_the_same_pixels(synthetic_slides) -> None:
    path = synthetic_slides.paths[0]
    cu, osl = open_slide(path, backend="cucim"), open_slide(path, backend="openslide")
    assert cu.backend_name == "cucim" and osl.backend_name == "openslide"
    assert [lv.mpp for lv in cu.levels] == [lv.mpp for lv in osl.levels] == [0.25, 1.0, 4.0]
    for level in (0, 1):
        a = cu.read_region((512, 256), level, (200, 150))
        b = osl.read_region((512, 256), level, (200, 150))
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_reads_outside_the_slide_raise(synthetic_slides) -> None:
    slide = open_slide(synthetic_slides.paths[0])
    w, h = slide.dimensions
    with pytest.raises(ValueError, match="outside"):
        slide.read_region((w - 100, 0), 0, (224, 224))
    with pytest.raises(ValueError, match="level 7"):
        slide.read_region((0, 0), 7, (10, 10))


def test_a_slide_refuses_to_be_pickled(synthetic_slides) -> None:
    slide = open_slide(synthetic_slides.paths[0])
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(slide)
    slide.close()


def test_slide_cache_is_bounded_lru_and_picklable(synthetic_slides) -> None:
    cache = SlideCache(max_open=2)
    a, b, c = synthetic_slides.paths[:3]
    first = cache.get(a)
    assert cache.get(a) is first and cache.opened == 1
    cache.get(b)
    cache.get(a)  # a is now the most recent: b goes first
    cache.get(c)
    assert len(cache) == 2 and a in cache and c in cache and b not in cache
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.max_open == 2 and len(clone) == 0
    assert clone.get(a).levels == first.levels
    cache.close()
    assert len(cache) == 0


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> object:
    path = tmp_path_factory.mktemp("bad") / "small.tiff"
    return write_slide(path, SlideSpec(600.0, 500.0, 0.25, "regular", seed=3))


def test_missing_file_and_non_image_name_the_file(tmp_path) -> None:
    with pytest.raises(SlideError, match="nope.svs: no such slide file"):
        open_slide(tmp_path / "nope.svs")
    text = tmp_path / "notes.tiff"
    text.write_text("this is not an image\n")
    with pytest.raises(SlideError, match="notes.tiff: not a readable whole-slide image"):
        open_slide(text)
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideError, match="empty.svs: the file is empty"):
        open_slide(empty)


def test_truncated_file_is_reported(small_slide, tmp_path) -> None:
    data = small_slide.read_bytes()
    cut = tmp_path / "cut.tiff"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="cut.tiff: truncated or corrupt"):
        open_slide(cut)


def test_single_level_image_is_readable(tmp_path) -> None:
    path = write_slide(tmp_path / "flat.tiff", SlideSpec(500.0, 500.0, 0.25, "regular", seed=1), levels=1)
    slide = open_slide(path)
    assert len(slide.levels) == 1
    plan = plan_region(slide.levels, 2.0, 224, (1000, 1000))
    assert plan.level == 0 and plan.read_size == 1792  # every mpp reads level 0: correct, only slower
    assert slide.read_region(plan.location, 0, (plan.read_size,) * 2).shape == (1792, 1792, 3)


def _plain_tiff(path, **resolution) -> None:
    image = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", metadata=None, **resolution)


def test_missing_mpp_is_an_error_unless_overridden(tmp_path) -> None:
    path = tmp_path / "nompp.tiff"
    _plain_tiff(path)
    with pytest.raises(MppError, match="nompp.tiff: no mpp"):
        open_slide(path)
    assert open_slide(path, mpp=0.5).mpp == 0.5


@pytest.mark.parametrize("bad", [0.0, -0.25, 1e6, float("nan")])
def test_nonsense_mpp_override_is_rejected(small_slide, bad: float) -> None:
    with pytest.raises(MppError, match="small.tiff: mpp .* not a plausible"):
        open_slide(small_slide, mpp=bad)


def test_nonsense_mpp_in_the_file_is_rejected(tmp_path) -> None:
    path = tmp_path / "dpi72.tiff"
    _plain_tiff(path, resolution=(72, 72), resolutionunit="INCH")  # a screen default: 353 um/px
    with pytest.raises(MppError, match="dpi72.tiff: mpp 352.7.* from the TIFF resolution tags"):
        open_slide(path)


def test_aperio_mpp_is_read_from_the_description(tmp_path) -> None:
    path = write_slide(tmp_path / "a.svs", SlideSpec(400.0, 300.0, 0.2527, "regular", seed=2), fmt="svs")
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.2527)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].tags["ResolutionUnit"].value == 1  # like real SVS: the description is the only source
    assert choose_level([lv.mpp for lv in slide.levels], 0.25) == 0  # 0.2527 > 0.25: level 0, read at 0.99x


def test_slide_smaller_than_a_tile_at_2mpp(tmp_path) -> None:
    path = write_slide(tmp_path / "tiny.tiff", SlideSpec(300.0, 300.0, 0.25, "regular", seed=4))
    slide = open_slide(path)
    assert plan_region(slide.levels, 0.25, 224, (600, 600)).read_size == 224
    with pytest.raises(RegionTooLargeError, match="448 um square"):
        plan_region(slide.levels, 2.0, 224, (600, 600))
