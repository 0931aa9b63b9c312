"""Batched tile decoding (pipeline.slides.tiled_decode): the same pixels as the slide backends, errors per region.

The CPU twin (nvImageCodec's CPU backend) runs everywhere; the GPU decode is checked against it under the gpu mark.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import tifffile

from gapless.errors import SlideError
from gapless.pipeline.batch_read import PlanPrefetcher, PlanVetter, first_plans, read_many
from gapless.pipeline.config import DataConfig
from gapless.pipeline.loader import build_source
from gapless.pipeline.slides import open_slide
from gapless.pipeline.slides.tiff import PageLayout
from gapless.pipeline.slides.tile_files import TileFiles
from gapless.pipeline.slides.tiled import jpeg_stream
from gapless.pipeline.slides.tiled_decode import RegionRequest, TiledJpegReader


def damaged_copy(path, out, page: int = 0, tile: int = 0):
    """A copy of slide ``path`` at ``out`` whose tile ``tile`` of TIFF page ``page`` has 64 bytes in the middle of
    its entropy-coded data overwritten: markers intact, as a bad sector or a broken transfer leaves it."""
    shutil.copy(path, out)
    with tifffile.TiffFile(out) as tif:
        offset, count = tif.pages[page].dataoffsets[tile], tif.pages[page].databytecounts[tile]
    with open(out, "r+b") as f:
        f.seek(offset)
        data = f.read(count)
        scan = data.index(b"\xff\xda")  # start of scan; the entropy-coded data follows its header
        middle = scan + (count - scan) // 2
        f.seek(offset + middle)
        f.write(bytes(range(7, 7 + 64)))
    return out


def _requests(path, n: int, seed: int = 0) -> list[RegionRequest]:
    slide = open_slide(path)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        level = slide.levels[k % min(2, len(slide.levels))]
        size = int(rng.integers(40, min(level.width, level.height, 600)))
        lx, ly = int(rng.integers(0, level.width - size + 1)), int(rng.integers(0, level.height - size + 1))
        location = (int(lx * level.downsample), int(ly * level.downsample))
        out.append(RegionRequest(str(path), location, level.index, (size, size), level.downsample,
                                 (level.width, level.height)))  # fmt: skip
    return out


def test_batched_reads_equal_the_backend_reads(synthetic_slides) -> None:
    reader = TiledJpegReader("cpu")
    requests = [r for path in synthetic_slides.paths[:2] for r in _requests(path, 12)]
    regions = reader.read(requests)
    for request, region in zip(requests, regions):
        expected = open_slide(request.path).read_region(request.location, request.level, request.size)
        assert region.shape == expected.shape and np.array_equal(region, expected)  # same libjpeg-turbo: exact
    # Tiles shared by regions are decoded once.
    assert reader.tiles_decoded < sum(
        len(np.arange(*_span(r, 0))) * len(np.arange(*_span(r, 1))) for r in requests
    )  # fmt: skip
    reader.close()


def _span(r: RegionRequest, axis: int) -> tuple[int, int]:
    start = int(r.location[axis] / r.downsample)
    return start // 256, (start + r.size[axis] - 1) // 256 + 1


def test_a_corrupt_tile_fails_only_its_region(synthetic_slides, tmp_path) -> None:
    bad = tmp_path / "bad.tiff"
    shutil.copy(synthetic_slides.paths[0], bad)
    with tifffile.TiffFile(bad) as tif:
        offset = tif.pages[0].dataoffsets[0]  # tile (0, 0) of level 0
    with open(bad, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * 64)
    level = open_slide(bad).levels[0]
    hit = RegionRequest(str(bad), (10, 10), 0, (100, 100), 1.0, (level.width, level.height))
    miss = dataclasses.replace(hit, location=(600, 600))
    regions = TiledJpegReader("cpu").read([hit, miss])
    assert isinstance(regions[0], Exception) and "bad.tiff" in str(regions[0])
    assert regions[1].shape == (100, 100, 3) and regions[1].mean() > 50


def test_abbreviated_tiles_get_the_shared_tables() -> None:
    """SVS tiles carry no tables of their own (JPEGTables tag): the stream decoded is tables + tile segments."""
    import imagecodecs

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    full = imagecodecs.jpeg8_encode(image, level=90)
    tables, tile = _split_tables(full)
    page = PageLayout(64, 64, 64, 64, True, np.zeros(1, np.int64), np.ones(1, np.int64), tables)
    assert np.array_equal(imagecodecs.jpeg8_decode(jpeg_stream(page, tile)), imagecodecs.jpeg8_decode(full))
    with pytest.raises(ValueError, match="start-of-image"):
        jpeg_stream(page, b"\x00\x00" + tile)


def _split_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """(SOI + DQT/DHT segments + EOI, SOI + every other segment): a full JPEG split the way TIFF stores it."""
    tables, rest, i = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while i < len(jpeg):
        marker = jpeg[i + 1]
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to the end
            rest.append(jpeg[i:])
            break
        length = int.from_bytes(jpeg[i + 2 : i + 4], "big")
        (tables if marker in (0xDB, 0xC4) else rest).append(jpeg[i : i + 2 + length])
        i += 2 + length
    return b"".join(tables) + b"\xff\xd9", b"".join(rest)


def test_read_many_is_read_sample_by_sample(synthetic_slides) -> None:
    """The batched path makes the tiles the per-sample path makes."""
    cfg = DataConfig(index=str(synthetic_slides.index), batch_size=8, seed=3, tile_px=64)
    source, _ = build_source(cfg)
    gs = list(range(40))
    expected = [source.read(g) for g in gs]
    tiles = read_many(source, gs, TiledJpegReader("cpu"), device="cpu")
    for a, b in zip(tiles, expected):
        assert a.spec == b.spec and a.retries == b.retries and a.skipped == b.skipped
        assert np.array_equal(a.region, b.region)


def test_read_many_retries_where_reads_fail(synthetic_slides, tmp_path) -> None:
    cfg = DataConfig(index=str(synthetic_slides.index), batch_size=8, seed=3, tile_px=64)
    source, _ = build_source(cfg)
    # A copy of slide 0 whose every tile is garbage: each read of it fails and is retried elsewhere.
    entry = source.slides[0]
    broken = tmp_path / "broken.tiff"
    shutil.copy(entry.path, broken)
    with tifffile.TiffFile(broken) as tif:
        spans = [(o, c) for page in tif.pages for o, c in zip(page.dataoffsets, page.databytecounts)]
    with open(broken, "r+b") as f:
        for offset, count in spans:
            f.seek(offset)
            f.write(b"\x00" * min(16, count))
    source.slides[0] = dataclasses.replace(entry, path=str(broken))
    gs = list(range(60))
    tiles = read_many(source, gs, TiledJpegReader("cpu"), device="cpu")
    assert [t.spec.path if t.spec else None for t in tiles].count(str(broken)) == 0
    assert any(t.retries > 0 for t in tiles)
    expected = [source.read(g) for g in gs]
    assert [(t.spec, t.retries) for t in tiles] == [(t.spec, t.retries) for t in expected]


def damaged_source(synthetic_slides, tmp_path, **cfg):
    """A tile source whose slide 0 is a copy with the central tile (1, 1) of level 1 damaged in the middle of its
    data; returns (source, the damaged file, a predicate: does a tile's region touch the damaged tile?)."""
    source, _ = build_source(DataConfig(index=str(synthetic_slides.index), **{"batch_size": 8, "tile_px": 64, **cfg}))
    entry = source.slides[0]
    level = entry.levels[1]
    with tifffile.TiffFile(entry.path) as tif:
        page = next(p.index for p in tif.pages if (p.imagewidth, p.imagelength) == (level.width, level.height))
        cols = -(-level.width // tif.pages[page].tilewidth)
    bad = damaged_copy(entry.path, tmp_path / "damaged.tiff", page=page, tile=cols + 1)
    source.slides[0] = dataclasses.replace(entry, path=str(bad))

    def touches(tile) -> bool:
        if tile.spec is None or tile.spec.path != str(bad) or tile.spec.plan.level != 1:
            return False
        x, y = (int(v / level.downsample) for v in tile.spec.plan.location)
        size = tile.spec.plan.read_size
        return x < 512 and x + size > 256 and y < 512 and y + size > 256

    return source, bad, touches


def test_a_tile_damaged_in_its_data_fails_its_region(synthetic_slides, tmp_path) -> None:
    """Markers intact, data damaged: the decoder alone returns noise; vetted, the region fails with the tile named."""
    bad = damaged_copy(synthetic_slides.paths[0], tmp_path / "bad.tiff")
    level = open_slide(bad).levels[0]
    hit = RegionRequest(str(bad), (10, 150), 0, (100, 100), 1.0, (level.width, level.height))  # tile (0, 0)
    miss = dataclasses.replace(hit, location=(600, 600))
    intact = TiledJpegReader("cpu").read([dataclasses.replace(hit, path=str(synthetic_slides.paths[0]))])[0]
    silent = TiledJpegReader("cpu").read([hit])[0]
    assert not isinstance(silent, Exception) and np.abs(silent.astype(int) - intact).mean() > 10  # real damage
    regions = TiledJpegReader("cpu").read([hit, miss], vet=True)
    assert isinstance(regions[0], Exception) and "bad.tiff" in str(regions[0]) and "(0, 0)" in str(regions[0])
    assert "Corrupt JPEG data" in str(regions[0])
    assert regions[1].shape == (100, 100, 3)
    files = TileFiles()
    files.vet(miss)
    files.vet(miss)
    assert files.tiles_vetted == 1  # each tile is checked once per process
    with pytest.raises(SlideError, match="bad.tiff: damaged image data in tile \\(0, 0\\) of level 0"):
        files.vet(hit)


def test_read_many_retries_and_counts_regions_on_a_damaged_tile(synthetic_slides, tmp_path, monkeypatch) -> None:
    source, bad, touches = damaged_source(synthetic_slides, tmp_path, seed=11)
    gs = list(range(96))
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "0")
    unchecked = [source.read(g) for g in gs]  # the host reader with its own check off delivers the damage
    source.close()
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "1")
    assert sum(touches(t) for t in unchecked) >= 2
    expected = [source.read(g) for g in gs]  # the host reader, checking
    tiles = read_many(source, gs, TiledJpegReader("cpu"), device="cpu", vet=PlanVetter())
    assert not any(touches(t) for t in tiles)
    for a, b, c in zip(tiles, expected, unchecked):
        assert a.spec == b.spec and a.retries == b.retries and np.array_equal(a.region, b.region)
        if touches(c):  # retried elsewhere and counted
            assert a.retries > c.retries and a.spec != c.spec


def test_plans_made_ahead_in_other_processes_are_the_plans_made_here(synthetic_slides) -> None:
    cfg = DataConfig(index=str(synthetic_slides.index), batch_size=8, seed=4, tile_px=64)
    source, _ = build_source(cfg)
    batches = [list(range(k * 16, (k + 1) * 16)) for k in range(3)]
    prefetcher = PlanPrefetcher(source, workers=1, vet=PlanVetter())
    try:
        for key, gs in enumerate(batches):
            prefetcher.ahead(key, gs)
        made_ahead = [prefetcher.plans(key, gs) for key, gs in enumerate(batches)]
        assert prefetcher.plans(7, batches[0]) == made_ahead[0]  # never queued: planned here
    finally:
        prefetcher.close()
    assert made_ahead == [first_plans(source, gs, vet=PlanVetter()) for gs in batches]
    tiles = read_many(source, batches[1], TiledJpegReader("cpu"), device="cpu", plans=made_ahead[1])
    assert [t.spec for t in tiles] == [source.read(g).spec for g in batches[1]]


@pytest.mark.gpu
def test_gpu_decode_matches_the_cpu_twin(synthetic_slides) -> None:
    requests = _requests(synthetic_slides.paths[0], 16)
    gpu = TiledJpegReader("cuda").read(requests)
    cpu = TiledJpegReader("cpu").read(requests)
    for a, b in zip(gpu, cpu):
        # nvJPEG and libjpeg-turbo differ in IDCT and chroma upsampling rounding: a few grey levels.
        mse = float(np.mean((a.get().astype(np.float64) - b) ** 2))
        assert 10 * np.log10(255.0**2 / max(mse, 1e-9)) > 30.0
