"""Failed attempts on every read path: a planning bug (a region outside its level) is warned about wherever it
happens, and a sample whose every attempt fails is delivered as the flat fill tile and counted skipped."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from gapless.pipeline.batch_read import read_many
from gapless.pipeline.config import DataConfig
from gapless.pipeline.dali.tile_batches import TileBatchCallback
from gapless.pipeline.dali.tile_decode import DaliTileReader
from gapless.pipeline.loader import build_source
from gapless.pipeline.sampling.distributions import PointMasses
from gapless.pipeline.slides import TissueMask, open_slide
from gapless.pipeline.source import SampleCallback, Shard, SlideEntry, TileSource
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide

B = 8


class _Info:
    """Stand-in for DALI's SampleInfo: the callback reads only ``idx_in_epoch``."""

    def __init__(self, idx: int) -> None:
        self.idx_in_epoch = idx


def test_dali_decoder_path_delivers_always_failing_samples_as_the_fill_tile(synthetic_slides, tmp_path) -> None:
    """Every other slide's file is gone and each sample has one attempt: the samples that draw a missing slide are
    skipped. The DALI-decoder path's CPU twin delivers what the host callback delivers, skipped samples included."""
    cfg = DataConfig(index=str(synthetic_slides.index), batch_size=B, workers=0, seed=3, max_read_retries=0)
    source, _ = build_source(cfg)
    missing = str(tmp_path / "gone.tiff")
    source.slides = [dataclasses.replace(e, path=missing) if k % 2 else e for k, e in enumerate(source.slides)]
    callback = SampleCallback(source, Shard(), B)
    reader = DaliTileReader(source, B, Shard(), workers=0, device="cpu", verify=False)
    try:
        regions, mpp, level, retries, skipped = reader(0)
    finally:
        reader.close()
    assert 0 < sum(int(s[0]) for s in skipped) < B  # both kinds in the batch
    for b in range(B):
        want = callback(_Info(b))
        got = (regions[b], mpp[b], level[b], retries[b], skipped[b])
        for column, (a, w) in enumerate(zip(got, want)):
            assert a.shape == w.shape, (b, column)
            if column == 0 and not want[4][0]:
                assert np.abs(a.astype(int) - w).max() <= 3  # two JPEG decoders
            else:
                assert np.array_equal(a, w), (b, column)
        if want[4][0]:
            assert int(retries[b][0]) == 1 and int(level[b][0]) == -1
            assert np.array_equal(regions[b], np.broadcast_to(source.fill, regions[b].shape))


@pytest.fixture(scope="module")
def misplanned(tmp_path_factory) -> TileSource:
    """A source whose index claims a level 0 twice as wide as the file's: some regions are planned outside it."""
    path = tmp_path_factory.mktemp("misplanned") / "narrow.tiff"
    write_slide(path, SlideSpec(1024 * 0.25, 512 * 0.25, 0.25, "regular", seed=1))
    wider = tuple(dataclasses.replace(lv, width=2 * lv.width) for lv in open_slide(path).levels)
    mask = TissueMask(np.ones((16, 64), bool), 8.0, 0.25)  # tissue everywhere, the claimed width included
    return TileSource([SlideEntry(str(path), wider, 0.25, mask)], PointMasses([0.25]), seed=0)


@pytest.mark.parametrize("path", ["read", "read_many", "dali_decoder"])
def test_every_read_path_warns_about_a_region_planned_outside_its_level(misplanned, path: str, caplog) -> None:
    gs = list(range(B))
    expected = [misplanned.read(g).retries for g in gs]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gapless.pipeline.source"):
        if path == "read":
            retries = [misplanned.read(g).retries for g in gs]
        elif path == "read_many":
            retries = [tile.retries for tile in read_many(misplanned, gs, None, device="cpu")]
        else:
            callback = TileBatchCallback(misplanned, Shard(), B, 4 * B, verify=False)
            retries = [int(r[0]) for r in callback(0)[8][:B]]
            callback.close()
    assert retries == expected and sum(retries) > 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == sum(retries) and all("narrow.tiff" in m and "outside level 0" in m for m in warned)
