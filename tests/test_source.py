"""The tile source: (seed, rank, i) -> tile is deterministic, rank-disjoint, resumable; failed reads retry and count."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from scipy import stats

from gapless.pipeline.augparams import N_PARAMS, sample_params
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.loader import build_source
from gapless.pipeline.sampling import SamplingConfig, build_distribution
from gapless.pipeline.source import SampleCallback, Shard, SlideEntry, TileSource


class _Info:
    """Stand-in for DALI's SampleInfo: the callback reads only ``idx_in_epoch``."""

    def __init__(self, idx: int) -> None:
        self.idx_in_epoch = idx


@pytest.fixture(scope="module")
def source(synthetic_slides) -> TileSource:
    cfg = DataConfig(index=str(synthetic_slides.index), seed=3)
    src, skipped = build_source(cfg)
    assert skipped == 0
    return src


def test_same_seed_same_tiles_and_other_seed_other_tiles(source: TileSource) -> None:
    twin = pickle.loads(pickle.dumps(source))  # what a spawned worker receives
    for g in range(6):
        a, b = source.read(g), twin.read(g)
        assert a.spec == b.spec and a.target_mpp == b.target_mpp
        assert np.array_equal(a.region, b.region)
    other = TileSource(source.slides, source.distribution, seed=source.seed + 1, index=source.index)
    assert [other.plan(g) for g in range(6)] != [source.plan(g) for g in range(6)]


def test_ranks_own_disjoint_samples_that_cover_the_stream() -> None:
    world = 4
    owned = [{Shard(r, world).global_index(i) for i in range(100)} for r in range(world)]
    assert sum(len(s) for s in owned) == 400 and set().union(*owned) == set(range(400))


def test_callback_is_resumable_and_rank_aware(source: TileSource) -> None:
    B, k = 4, 3
    run = SampleCallback(source, Shard(rank=1, world_size=2), B)
    resumed = SampleCallback(source, Shard(rank=1, world_size=2, start=k), B)
    for j in range(B):
        full, res = run(_Info(k * B + j)), resumed(_Info(j))
        assert all(np.array_equal(x, y) for x, y in zip(full, res))
    rank0 = SampleCallback(source, Shard(rank=0, world_size=2), B)
    assert not np.array_equal(rank0(_Info(0))[0], run(_Info(0))[0])


def test_callback_delivers_each_samples_augmentation_parameters(source: TileSource) -> None:
    aug = AugmentConfig(local_crops=2)
    run = SampleCallback(source, Shard(rank=1, world_size=2), 4, augment=aug)
    resumed = SampleCallback(source, Shard(rank=1, world_size=2, start=1), 4, augment=aug)
    assert run.num_outputs == 6 and SampleCallback(source, Shard(), 4).num_outputs == 5
    outputs = run(_Info(5))
    assert len(outputs) == 6 and outputs[5].shape == (4, N_PARAMS) and outputs[5].dtype == np.float32
    g = Shard(rank=1, world_size=2).global_index(5)
    assert np.array_equal(outputs[5], sample_params(aug, source.seed, g, source.tile_px))
    assert np.array_equal(resumed(_Info(1))[5], outputs[5])  # resumed: same sample, same views


def test_mpp_of_many_samples_follows_the_sampler(source: TileSource) -> None:
    dist = build_distribution(SamplingConfig(strategy="cu"))
    mpps = np.array([source.target_mpp(g) for g in range(3000)])
    assert stats.kstest(mpps, dist.cdf).pvalue > 1e-3
    # Retries never change a sample's mpp, so failures cannot bias the histogram.
    assert all(
        source.plan(g, a).plan.target_mpp == source.target_mpp(g)
        for g in range(5)
        for a in range(3)
        if source.plan(g, a) is not None
    )


def test_footprint_at_the_sampled_mpp_is_read_from_the_right_level(source: TileSource) -> None:
    for g in range(20):
        tile = source.read(g)
        plan = tile.spec.plan
        assert plan.level_mpp <= plan.target_mpp * 1.001  # never upsampled from a coarser level
        expected = round(source.tile_px * plan.target_mpp / plan.level_mpp)
        assert tile.region.shape == (expected, expected, 3) and tile.region.dtype == np.uint8


def test_vanished_slide_is_retried_elsewhere_and_counted(source: TileSource, tmp_path) -> None:
    good = source.slides[0]
    doomed = tmp_path / "doomed.tiff"
    shutil.copy(good.path, doomed)
    mask = source.tissue(good)
    entries = [SlideEntry(good.path, good.levels, good.mpp, mask), SlideEntry(str(doomed), good.levels, good.mpp, mask)]
    src = TileSource(entries, source.distribution, seed=0, max_retries=16)
    doomed.unlink()
    tiles = [src.read(g) for g in range(12)]
    assert all(not t.skipped and t.spec.slide == 0 for t in tiles)
    assert sum(t.retries for t in tiles) > 0  # some samples drew the vanished slide first


def test_a_sample_with_no_readable_slide_is_skipped_not_fatal(source: TileSource, tmp_path) -> None:
    good = source.slides[0]
    entries = [SlideEntry(str(tmp_path / "gone.tiff"), good.levels, good.mpp, source.tissue(good))]
    src = TileSource(entries, source.distribution, seed=0, max_retries=3, fill=(0.5, 0.5, 0.5))
    tile = src.read(0)
    assert tile.skipped and tile.retries == 4 and tile.level == -1
    assert tile.region.shape == (src.tile_px, src.tile_px, 3) and np.all(tile.region == 128)


def test_tiles_per_slide_groups_consecutive_samples_of_a_rank_on_one_slide(source: TileSource) -> None:
    K, W = 4, 2
    grouped = TileSource(source.slides, source.distribution, seed=source.seed, index=source.index, tiles_per_slide=K,
                         world_size=W)  # fmt: skip
    shards = [Shard(rank, W) for rank in range(W)]
    first = {r: [grouped.plan(shards[r].global_index(i)).slide for i in range(4 * K)] for r in range(W)}
    for r in range(W):  # i // K equal -> one slide; each rank has its own groups
        assert all(len(set(first[r][k * K : (k + 1) * K])) == 1 for k in range(4))
    assert [grouped.slide_group(shards[r].global_index(i)) for r in range(W) for i in (0, K - 1, K)] == [
        0,
        0,
        2,
        1,
        1,
        3,
    ]
    # Each sample's slide is still uniform over the slides, its mpp still its own draw, retries still elsewhere.
    counts = np.bincount([grouped.plan(g * K).slide for g in range(400)], minlength=len(source.slides))
    assert stats.chisquare(counts).pvalue > 1e-3
    assert [grouped.target_mpp(g) for g in range(8)] == [source.target_mpp(g) for g in range(8)]
    assert len({grouped.plan(0, attempt).slide for attempt in range(1, 12)}) > 1
    # A pure function of (seed, g): another process (a pickled copy) makes the same plans.
    twin = pickle.loads(pickle.dumps(grouped))
    assert [twin.plan(g) for g in range(2 * K)] == [grouped.plan(g) for g in range(2 * K)]


def test_the_slides_of_an_index_source_are_a_table_not_a_list(source: TileSource) -> None:
    from gapless.pipeline.slide_table import SlideTable

    assert isinstance(source.slides, SlideTable) and len(source.slides) == len(source.index.records)
    for k, record in enumerate(source.index.records):
        entry = source.slides[k]
        assert (entry.path, entry.levels, entry.mpp, entry.row) == (record.path, record.levels, record.mpp, record.row)
    # Pickled (into every worker), the table is the index's path and one integer per slide.
    as_list = [source.slides[k] for k in range(len(source.slides))]
    assert len(pickle.dumps(source.slides)) < len(pickle.dumps(as_list))
    copy = pickle.loads(pickle.dumps(source.slides))
    copy[0] = SlideEntry("elsewhere.tiff", as_list[0].levels, as_list[0].mpp, None, as_list[0].row)
    assert copy[0].path == "elsewhere.tiff" and copy[1] == as_list[1] and source.slides[0] == as_list[0]
