"""Level pixels and level-0 locations on pyramids whose downsamples are not whole numbers (as real scans have:
46001 px over 11500 px is 4.000087): the planner's regions, the edges included, are read by every reader at the
level pixel the planner chose, never refused and never shifted by one pixel."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from gapless.pipeline.slides import Level, open_slide, plan_region
from gapless.pipeline.slides.planning import level0_location, level_origin, region_origin
from gapless.pipeline.slides.tile_files import RegionRequest
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide

SIZES = [(4101, 2051), (1025, 512), (256, 128)]  # downsamples 4.0034 and 16.021 (mean of the two ratios)


@pytest.fixture(scope="module")
def uneven_slide(tmp_path_factory) -> object:
    spec = SlideSpec(4101 * 0.25, 2051 * 0.25, 0.25, "regular", seed=1)
    return write_slide(tmp_path_factory.mktemp("uneven") / "uneven.tiff", spec, exact_levels=False)


def _centres(width: int, height: int, n: int = 12) -> list[tuple[float, float]]:
    corners = [(0, 0), (width, 0), (0, height), (width, height), (width, height / 2), (width / 2, height)]
    rng = np.random.default_rng(0)
    return corners + [tuple(rng.uniform(0, 1, 2) * (width, height)) for _ in range(n)]


@pytest.mark.parametrize("backend", ["cucim", "openslide", "tifffile"])
def test_planned_regions_of_uneven_levels_are_read_where_planned(uneven_slide, backend: str) -> None:
    """Regions clamped to the right and bottom edges of levels with non-integer downsamples are read, not refused,
    and hold the level's pixels at the planned level origin (exactly; OpenSlide within a fraction of a pixel, as it
    interpolates where a level-0 location falls between level pixels)."""
    slide = open_slide(uneven_slide, backend=backend)
    assert [(lv.width, lv.height) for lv in slide.levels] == SIZES
    with tifffile.TiffFile(uneven_slide) as tif:
        pages = [page.asarray() for page in tif.pages]
    for target, out_px in ((0.25, 224), (1.0, 224), (2.0, 224), (4.0, 64)):
        for centre in _centres(*slide.dimensions):
            plan = plan_region(slide.levels, target, out_px, centre)
            lv, n = slide.levels[plan.level], plan.read_size
            lx, ly = level_origin(plan.location, lv.downsample)
            assert 0 <= lx <= lv.width - n and 0 <= ly <= lv.height - n
            region = slide.read_region(plan.location, plan.level, (n, n)).astype(int)
            expected = pages[plan.level][ly : ly + n, lx : lx + n].astype(int)
            assert region.shape == expected.shape == (n, n, 3)
            if backend == "openslide":  # nearer the planned pixels than the ones a pixel to any side
                page, error = pages[plan.level].astype(int), np.abs(region - expected).mean()
                for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    if 0 <= lx + dx <= lv.width - n and 0 <= ly + dy <= lv.height - n:
                        shifted = page[ly + dy : ly + dy + n, lx + dx : lx + dx + n]
                        assert error <= np.abs(region - shifted).mean(), (target, centre, dx, dy)
                assert error < 3 and np.abs(region[:, -1] - expected[:, -1]).mean() < 3, (target, centre)
            else:
                np.testing.assert_array_equal(region, expected, err_msg=f"{target} {centre}")


def test_a_read_outside_its_level_is_refused_and_the_tile_source_says_so(uneven_slide, caplog) -> None:
    """A region past the level's edge (here: an index that claims a larger level 0 than the file has) is refused,
    naming the file, and the tile source warns about it (a planning bug, not bad data) as it retries elsewhere."""
    import dataclasses
    import logging

    from gapless.pipeline.sampling.distributions import PointMasses
    from gapless.pipeline.slides import RegionOutsideError, TissueMask
    from gapless.pipeline.source import SlideEntry, TileSource

    slide = open_slide(uneven_slide)
    with pytest.raises(RegionOutsideError, match="uneven.tiff: region 224x224 .* outside level 1"):
        slide.read_region((4 * 900, 0), 1, (224, 224))
    wider = tuple(dataclasses.replace(lv, width=2 * lv.width) for lv in slide.levels)
    mask = TissueMask(np.ones((64, 256), bool), 8.0, 0.25)  # tissue everywhere, the claimed width included
    source = TileSource([SlideEntry(str(uneven_slide), wider, 0.25, mask)], PointMasses([0.25]), seed=0)
    with caplog.at_level(logging.WARNING, logger="gapless.pipeline.source"):
        tiles = [source.read(g) for g in range(8)]
    assert any(t.retries for t in tiles)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "outside level 0" in r.getMessage()]
    assert warned and "uneven.tiff" in warned[0].getMessage()


def _cucim_level_pixel(coord: int, downsample: float) -> int:
    """cuCIM's own conversion: its TIFF reader divides the level-0 location by the level's float32 downsample and
    truncates."""
    return int(np.float32(coord) / np.float32(downsample))


def _pyramid(rng: np.random.Generator) -> list[Level]:
    """Four levels, each 1.3 to 5 times smaller than the one above: sizes of any kind (46001 over 11500), or a ratio
    of small whole numbers (7/3), whose products with level pixels are often whole (or a rounding below)."""
    if rng.random() < 0.5:
        sizes = [tuple(int(v) for v in rng.integers(20_000, 200_000, 2))]
        for _ in range(3):
            sizes.append(tuple(max(1, int(v / rng.uniform(2, 5))) for v in sizes[-1]))
    else:  # level i is (k, m) * a**i * b**(3 - i): each level b / a times smaller, exactly
        a, b = int(rng.integers(3, 8)), int(rng.integers(9, 16))
        k, m = (int(v) for v in rng.integers(20, 100, 2))
        sizes = [(k * a**i * b ** (3 - i), m * a**i * b ** (3 - i)) for i in range(4)]
    downsamples = [(sizes[0][0] / w + sizes[0][1] / h) / 2 for w, h in sizes]
    if rng.random() < 0.5:  # as cuCIM reports them
        downsamples = [float(np.float32(d)) for d in downsamples]
    return [Level(i, w, h, d, 0.25 * d) for i, ((w, h), d) in enumerate(zip(sizes, downsamples))]


def test_every_path_finds_the_planned_level_pixel_for_random_plans() -> None:
    """For 40,000 random plans on pyramids with non-integer downsamples, the level pixel the planner chose is the
    one the host readers (:func:`level_origin`), the GPU-twin reads (``RegionRequest.level_origin``) and cuCIM
    (its own float32 division, when the plan was made with cuCIM's downsamples) start at."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        levels = _pyramid(rng)
        for _ in range(2000):
            target, out_px = float(rng.choice([0.25, 0.6, 1.1, 2.3, 4.2, 9.0])), int(rng.integers(16, 256))
            centre = tuple(rng.uniform(-0.1, 1.1, 2) * (levels[0].width, levels[0].height))
            plan = plan_region(levels, target, out_px, centre)
            lv, n = levels[plan.level], plan.read_size
            want = region_origin(centre, n, lv)
            assert 0 <= want[0] <= lv.width - n and 0 <= want[1] <= lv.height - n
            assert level_origin(plan.location, lv.downsample) == want, (lv, plan)
            request = RegionRequest("s.tiff", plan.location, plan.level, (n, n), lv.downsample, (lv.width, lv.height))
            assert request.level_origin == want, (lv, plan)
            if lv.downsample == float(np.float32(lv.downsample)):  # an index of cuCIM's downsamples
                assert level0_location(want, lv.downsample) == plan.location  # what Slide passes the reader
                assert tuple(_cucim_level_pixel(c, lv.downsample) for c in plan.location) == want, (lv, plan)
