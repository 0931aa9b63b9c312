"""Physical scale: tiles of a ruler slide (stripes of a known period in microns) show period/mpp pixels at every
target mpp, whichever pyramid level serves it; measured on the DALI tiles and the baseline's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gapless.pipeline.config import DataConfig
from gapless.pipeline.resize import resize_square
from gapless.pipeline.sampling import PointMasses
from gapless.pipeline.slides import TissueMask, open_slide
from gapless.pipeline.source import SlideEntry, TileSource
from gapless.pipeline.tiles import EvalTiles

# (target mpp, level that must serve it): levels are 0.25 / 1 / 4 mpp; periods of 67 down to 5 pixels.
CASES = [(0.3, 0), (0.8, 0), (1.0, 1), (1.7, 1), (4.0, 2)]


def stripe_period_px(tile: np.ndarray) -> float:
    """Period of vertical stripes: the peak of the zero-padded spectrum of the column means."""
    profile = tile.astype(np.float64).mean(axis=(0, 2))
    profile -= profile.mean()
    n = 1 << 16
    spectrum = np.abs(np.fft.rfft(profile, n))
    spectrum[: n // profile.size] = 0  # below one cycle per tile: the mean and leakage, not stripes
    return n / float(np.argmax(spectrum))


@pytest.fixture(scope="module")
def ruler_source(ruler_slide):
    with open_slide(ruler_slide.path) as slide:
        levels, mpp = tuple(slide.levels), slide.mpp
        w, h = slide.dimensions
    everywhere = TissueMask(np.ones((h // 32, w // 32), bool), mask_mpp=mpp * 32, base_mpp=mpp)
    entry = SlideEntry(str(ruler_slide.path), levels, mpp, everywhere)
    return lambda target: TileSource([entry], PointMasses([target]), seed=1, tissue_threshold=0.0)


@pytest.mark.parametrize("target_mpp,level", CASES)
def test_ruler_period_in_tiles_matches_the_target_mpp(ruler_slide, ruler_source, target_mpp, level) -> None:
    source = ruler_source(target_mpp)
    cfg = dataclasses.replace(DataConfig(), batch_size=2, workers=0)
    tiles, meta = EvalTiles(cfg, source, host_resize=False).next_batch()  # DALI's resize, not the host's
    expected = ruler_slide.period_um / target_mpp
    assert np.all(meta["level"] == level) and np.allclose(meta["mpp"], target_mpp)
    for b in range(cfg.batch_size):
        assert stripe_period_px(tiles[b]) == pytest.approx(expected, rel=0.02)
        region = source.read(int(meta["index"][b])).region  # the baseline's crop-and-resize
        assert stripe_period_px(resize_square(region, cfg.tile_px)) == pytest.approx(expected, rel=0.02)
