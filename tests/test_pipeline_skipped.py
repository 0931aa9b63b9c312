"""Samples whose every attempt fails: each read path delivers the flat fill tile and counts it skipped."""

from __future__ import annotations

import dataclasses

import numpy as np

from gapless.pipeline.config import DataConfig
from gapless.pipeline.dali.tile_decode import DaliTileReader
from gapless.pipeline.loader import build_source
from gapless.pipeline.source import SampleCallback, Shard

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
