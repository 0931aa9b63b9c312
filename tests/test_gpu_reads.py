"""The GPU read paths that decode with cuCIM's cuslide2 plugin and with DALI's decoder, through their CPU twins.

Each path must deliver what the host reader delivers for the same samples (the same attempts, regions within a few
grey levels: JPEG decoders may round differently), under DU and CU, at every pyramid level of a 4x TIFF and a 2x SVS
pyramid, regions on the slide border included; must fail a region that touches a tile damaged in its data, so that
the sample is retried elsewhere and counted; and must feed the DALI graph the regions the host path feeds it.
cuCIM picks its plugin once per process, so the cuslide2 checks run in a fresh process. GPU-marked tests compare
the device paths with their CPU twins.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from test_tiled_decode import damaged_source

from gapless.pipeline.batch_read import PlanVetter, read_many
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.dali.gpu_source import GpuBatchReader
from gapless.pipeline.dali.tile_decode import DaliTileReader
from gapless.pipeline.loader import build_loader, build_source
from gapless.pipeline.sampling.config import SamplingConfig
from gapless.pipeline.slides.tiled_decode import TiledJpegReader
from gapless.pipeline.source import SampleCallback, Shard, TileSource

B = 8
GREY_LEVELS = 3  # largest difference allowed between two JPEG decoders' pixels


class _Info:
    """Stand-in for DALI's SampleInfo: the callback reads only ``idx_in_epoch``."""

    def __init__(self, idx: int) -> None:
        self.idx_in_epoch = idx


@pytest.fixture(scope="module")
def svs_slides(tmp_path_factory):
    """Two small Aperio-like SVS slides with a 2x pyramid (5 levels), indexed."""
    from gapless.pipeline.slides.indexer import build_index
    from gapless.pipeline.synth.writer import make_dataset

    root = tmp_path_factory.mktemp("svs2x")
    result = make_dataset(root, slides=2, size_mm=(0.6, 0.5), fmt="svs", level_step=2, seed=1)
    build_index([root], root / "index.h5", result.labels_csv, workers=1)
    return root / "index.h5"


def _cases(index) -> list[DataConfig]:
    """DU, CU and a coarse fixed mpp: together they read every level of the index's slides."""
    base = DataConfig(index=str(index), batch_size=B, tile_px=64, seed=7, augment=AugmentConfig(local_crops=2))
    return [
        dataclasses.replace(base, sampling=SamplingConfig(strategy=strategy, fixed_mpp=4.0))
        for strategy in ("du", "cu", "fixed")
    ]


def _expected(source: TileSource, shard: Shard, iterations: int, augment=None):
    """What the host path delivers: per iteration, the per-sample callback's columns, and the host tiles."""
    callback = SampleCallback(source, shard, B, augment)
    columns = [[callback(_Info(it * B + b)) for b in range(B)] for it in range(iterations)]
    tiles = [source.read(g) for it in range(iterations) for g in shard.batch(shard.start + it, B)]
    return columns, tiles


def assert_same_columns(got: tuple, expected: list[tuple]) -> None:
    """A reader's batch columns against the host callback's per-sample outputs."""
    for b, want in enumerate(expected):
        for column, w in zip(got, want, strict=True):
            g = np.asarray(column[b])
            assert g.dtype == w.dtype and g.shape == w.shape
            if g.ndim == 3:  # a region
                assert np.abs(g.astype(np.int64) - w).max() <= GREY_LEVELS
            else:
                assert np.array_equal(g, w)


def _coverage(source: TileSource, tiles) -> tuple[set[int], int]:
    """(levels read, regions touching their level's border) of host tiles."""
    edges = 0
    for t in tiles:
        level = source.slides[t.spec.slide].levels[t.level]
        x, y = (int(v / level.downsample) for v in t.spec.plan.location)
        size = t.spec.plan.read_size
        edges += x == 0 or y == 0 or x + size == level.width or y + size == level.height
    return {t.level for t in tiles}, edges


def _check_paths_match_the_host_reader(index, columns_of) -> tuple[set[int], set[int], int]:
    """Every case of ``_cases(index)``: ``columns_of(case number, shard, iterations)`` (a reader's columns, per
    iteration) against the host path; returns (levels read, levels of the slides, regions on a border)."""
    levels, edges = set(), 0
    shard = Shard(rank=1, world_size=2, start=1)
    for k, cfg in enumerate(_cases(index)):
        source, _ = build_source(cfg)
        expected, tiles = _expected(source, shard, 2, cfg.augment)
        for got, want in zip(columns_of(k, shard, 2), expected, strict=True):
            assert_same_columns(got, want)
        read, on_border = _coverage(source, tiles)
        levels |= read
        edges += on_border
    return levels, {lv.index for lv in source.slides[0].levels}, edges


def _reader_columns(index: str, path: str, k: int, shard: Shard, iterations: int) -> list[tuple]:
    """Case ``k``'s columns from read path ``path`` ("dali" or "cuslide2", CPU twins), as host arrays."""
    if path == "cuslide2":  # as build_loader does: before the source's index check opens the slides
        from gapless.pipeline.slides.cuslide2 import enable_cuslide2

        enable_cuslide2()
    cfg = _cases(index)[k]
    source, _ = build_source(cfg)
    if path == "dali":
        reader = DaliTileReader(source, B, shard, workers=0, device="cpu", augment=cfg.augment)
        return [(*reader(it), reader.params(it)) for it in range(iterations)]
    from gapless.pipeline.dali.gpu_source import BatchParams

    reader = GpuBatchReader(source, B, shard, decode="cuslide2", device="cpu")
    params = BatchParams(reader, cfg.augment)
    columns = [(*reader(it), params(it)) for it in range(iterations)]
    from gapless.pipeline.slides.cuslide2 import cuslide2_loaded

    assert cuslide2_loaded() is True
    return columns


@pytest.mark.parametrize("slides", ["tiff4x", "svs2x"])
def test_dali_decoder_path_delivers_what_the_host_reader_delivers(slides, synthetic_slides, svs_slides) -> None:
    index = str(synthetic_slides.index if slides == "tiff4x" else svs_slides)
    levels, all_levels, edges = _check_paths_match_the_host_reader(
        index, lambda k, shard, n: _reader_columns(index, "dali", k, shard, n)
    )
    assert levels == all_levels and edges > 0


@pytest.mark.parametrize("slides", ["tiff4x", "svs2x"])
def test_cuslide2_path_delivers_what_the_host_reader_delivers(slides, synthetic_slides, svs_slides) -> None:
    index = str(synthetic_slides.index if slides == "tiff4x" else svs_slides)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        levels, all_levels, edges = _check_paths_match_the_host_reader(
            index, lambda k, shard, n: fresh.submit(_reader_columns, index, "cuslide2", k, shard, n).result()
        )
    assert levels == all_levels and edges > 0


def _cuslide2_tiles(source: TileSource, gs: list[int]) -> list[tuple]:
    """In a fresh process: the tiles of ``gs`` read through cuslide2 batched reads, vetted."""
    from gapless.pipeline.slides.cuslide2 import Cuslide2Reader, enable_cuslide2

    enable_cuslide2()
    tiles = read_many(source, gs, Cuslide2Reader("cpu"), device="cpu", vet=PlanVetter())
    return [(t.spec, t.retries, t.region) for t in tiles]


def test_new_paths_fail_regions_on_a_damaged_tile_and_retry_them(synthetic_slides, tmp_path, monkeypatch) -> None:
    source, _, touches = damaged_source(synthetic_slides, tmp_path, seed=11)
    gs = Shard().batch(0, 96)
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "0")  # the host reader with its own check off delivers the damage
    host = [source.read(g) for g in gs]
    source.close()
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "1")
    assert sum(touches(t) for t in host) >= 2
    batched = read_many(source, gs, TiledJpegReader("cpu"), device="cpu", vet=PlanVetter())
    assert not any(touches(t) for t in batched) and any(touches(t) for t in host)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:
        cuslide2 = fresh.submit(_cuslide2_tiles, source, gs).result()
    for (spec, retries, region), want in zip(cuslide2, batched, strict=True):
        assert spec == want.spec and retries == want.retries
        assert np.abs(region.astype(int) - want.region).max() <= GREY_LEVELS
    reader = DaliTileReader(source, 96, Shard(), workers=0, device="cpu")
    regions, mpp, level, retries, skipped = reader(0)
    for b, want in enumerate(batched):
        assert int(retries[b][0]) == want.retries and int(level[b][0]) == want.level
        assert np.abs(regions[b].astype(int) - want.region).max() <= GREY_LEVELS


def test_cucim_path_vets_the_tiles_of_its_plans(synthetic_slides, tmp_path, monkeypatch) -> None:
    """cuCIM's GPU decode reports no damage: the ``cucim`` path vets every plan's tiles before it reads. Its CPU twin
    runs with the host reader's own check off (as on the GPU) and must still retry what the checking host reader
    retries, and deliver the same regions."""
    source, _, touches = damaged_source(synthetic_slides, tmp_path, seed=11)
    gs = Shard().batch(0, 96)
    expected = [source.read(g) for g in gs]  # the host reader, checking
    source.close()
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "0")
    unchecked = [source.read(g) for g in gs]
    assert sum(touches(t) for t in unchecked) >= 2
    reader = GpuBatchReader(source, 96, Shard(), decode="cucim", device="cpu", verify=True)
    regions, _, level, retries, skipped = reader(0)
    reader.close()
    for b, want in enumerate(expected):
        assert (int(retries[b][0]), int(level[b][0]), int(skipped[b][0])) == (want.retries, want.level, 0)
        assert np.array_equal(regions[b], want.region)
    assert any(int(retries[b][0]) > t.retries for b, t in enumerate(unchecked) if touches(t))


def test_dali_decoder_path_reads_on_the_host_what_does_not_fit_its_batch(synthetic_slides) -> None:
    """One tile stream per region of room: regions needing more are read on the host, with the same pixels."""
    cfg = _cases(synthetic_slides.index)[1]
    source, _ = build_source(cfg)
    expected, _ = _expected(source, Shard(), 1)
    reader = DaliTileReader(source, B, Shard(), workers=0, device="cpu", tiles_per_region=1)
    assert_same_columns(reader(0), expected[0])
    assert reader.callback.host_reads > 0


def test_dali_graph_fed_by_the_dali_decoder_matches_the_host_fed_graph(synthetic_slides) -> None:
    """The training graph on CPU operators: fed by the tile-decode pipeline (parallel workers) or by the host
    per-sample callback, the same views."""
    from gapless.pipeline.dali import pipelines

    cfg = dataclasses.replace(_cases(synthetic_slides.index)[1], workers=1)
    source, _ = build_source(cfg)
    shard = Shard(rank=0, world_size=1, start=3)
    reader = DaliTileReader(source, B, shard, workers=1, prefetch=2, device="cpu", augment=cfg.augment)
    common = dict(batch_size=B, num_threads=1, device_id=None, seed=0, prefetch_queue_depth=1)
    fed = pipelines.train_pipeline(pipelines.RegionReads(reader, True, False, 1, reader.params, batch_device="cpu"),
                                   "cpu", cfg.tile_px, cfg.augment, **common)  # fmt: skip
    host = pipelines.train_pipeline(
        pipelines.RegionReads(SampleCallback(source, shard, B, cfg.augment), False, False, 1),
        "cpu", cfg.tile_px, cfg.augment, **common,
    )  # fmt: skip
    fed.build()
    host.build()
    for _ in range(2):
        for a, b in zip(fed.run(), host.run(), strict=True):
            a, b = np.asarray(a.as_tensor()), np.asarray(b.as_tensor())
            assert a.shape == b.shape and np.allclose(a, b, atol=GREY_LEVELS / 255 / 0.2)


def _first_batch(cfg: DataConfig) -> dict[str, np.ndarray]:
    """The first training batch of a loader, on the host (``on_gpu``: whether its crops came on the GPU)."""
    with build_loader(cfg) as loader:
        batch = loader.next_batch()
        return {"on_gpu": np.array(batch["global_crops"].is_cuda), **{k: v.cpu().numpy() for k, v in batch.items()}}


@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["dali", "cuslide2"])
def test_device_paths_match_their_cpu_twins(decode, synthetic_slides) -> None:
    cfg = dataclasses.replace(_cases(synthetic_slides.index)[1], device="gpu", read_device="cuda", gpu_decode=decode,
                              batch_size=4, iterations_per_epoch=2, workers=1)  # fmt: skip
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as fresh:  # cuCIM's plugin choice
        a = fresh.submit(_first_batch, cfg).result()
    b = _first_batch(dataclasses.replace(cfg, device="cpu", read_device="cpu"))
    assert a["on_gpu"] and a["global_crops"].dtype == np.float32
    assert np.array_equal(a["mpp"], b["mpp"]) and np.array_equal(a["level"], b["level"])
    for key in ("global_crops", "local_crops"):
        err = (a[key] - b[key]) * 255.0 * np.array(cfg.augment.std)[:, None, None]
        assert 10 * np.log10(255.0**2 / max(float(np.mean(err**2)), 1e-9)) > 30.0  # nvJPEG vs libjpeg-turbo


@pytest.mark.gpu
def test_dali_decoder_on_the_gpu_matches_its_cpu_twin(synthetic_slides) -> None:
    cfg = _cases(synthetic_slides.index)[1]
    source, _ = build_source(cfg)
    gpu = DaliTileReader(source, B, Shard(), workers=0, device="cuda")(0)
    cpu = DaliTileReader(source, B, Shard(), workers=0, device="cpu")(0)
    for column_gpu, column_cpu in zip(gpu[1:], cpu[1:], strict=True):
        assert all(np.array_equal(x.get(), y) for x, y in zip(column_gpu, column_cpu, strict=True))
    for x, y in zip(gpu[0], cpu[0], strict=True):
        mse = float(np.mean((x.get().astype(np.float64) - y) ** 2))
        assert 10 * np.log10(255.0**2 / max(mse, 1e-9)) > 30.0
