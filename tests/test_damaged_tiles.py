"""Damaged tiles never become pixels: every host reader fails the reads that touch a damaged or empty tile, naming
the file, and the tile source retries such reads elsewhere and counts them.

The damage is real, in real files: a tile's JPEG header zeroed, or bytes in the middle of its entropy-coded data
replaced with the markers intact (cuCIM then decodes garbage and only prints a report; OpenSlide notices nothing
when libjpeg finds the damage at the end of the data), or a tile whose byte count is zero.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile

from gapless.errors import SlideError
from gapless.pipeline.slides import open_slide
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> object:
    path = tmp_path_factory.mktemp("damaged") / "small.tiff"
    return write_slide(path, SlideSpec(600.0, 500.0, 0.25, "regular", seed=3))


def _richest_tile(path) -> tuple[int, int]:
    """(col, row) of the level-0 tile with the most JPEG data: tissue, and bytes that occur once in the file."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        index, columns = int(np.argmax(page.databytecounts)), -(-page.imagewidth // page.tilewidth)
    return index % columns, index // columns


def _damage_tile(src, dst, tile: tuple[int, int], how: str) -> bytes:
    """Copy ``src`` to ``dst`` with tile (col, row) of level 0 damaged: its JPEG header zeroed ("header") or 48
    bytes in the middle of its entropy-coded data replaced, markers intact ("middle"; with this seed libjpeg notices
    only at the end of the data, which OpenSlide never reads). Returns the damaged bytes."""
    shutil.copy(src, dst)
    with tifffile.TiffFile(dst) as tif:
        page = tif.pages[0]
        index = tile[1] * -(-page.imagewidth // page.tilewidth) + tile[0]
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    data = bytearray(dst.read_bytes())
    if how == "header":
        data[offset : offset + 64] = bytes(64)
    else:
        middle = offset + count // 2
        data[middle : middle + 48] = np.random.default_rng(0).integers(0, 255, 48, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return bytes(data[offset : offset + count])


@pytest.mark.parametrize("how", ["header", "middle"])
@pytest.mark.parametrize("backend", ["cucim", "openslide", "tifffile"])
def test_damaged_tile_inside_a_good_slide_fails_its_reads(small_slide, tmp_path, backend: str, how: str) -> None:
    """A damaged JPEG tile (header destroyed, or data corrupted with the markers intact: cuCIM then decodes
    garbage and only prints a report) fails every read that touches it, naming the file; the rest still reads."""
    bad = tmp_path / "bad_tile.tiff"
    col, row = _richest_tile(small_slide)
    _damage_tile(small_slide, bad, (col, row), how)
    slide = open_slide(bad, backend=backend)
    with pytest.raises(SlideError, match="bad_tile.tiff: .*(damaged|decode|Corrupt|JPEG)"):
        slide.read_region((col * 256 + 100, row * 256 + 100), 0, (224, 224))
    with pytest.raises(SlideError, match="bad_tile.tiff"):
        slide.read_region((col * 256 + 50, row * 256 + 50), 0, (224, 224))  # every time, not only the first
    ok = slide.read_region((0, 0), 0, (200, 200))  # the rest of the slide still reads
    assert ok.mean() > 100
    assert slide.read_region((0, 0), 1, (100, 100)).shape == (100, 100, 3)


def test_damaged_frame_of_a_dicom_slide_fails_its_reads(small_slide, tmp_path) -> None:
    tile = _richest_tile(small_slide)
    with tifffile.TiffFile(small_slide) as tif:
        page = tif.pages[0]
        index = tile[1] * -(-page.imagewidth // page.tilewidth) + tile[0]
        tif.filehandle.seek(page.dataoffsets[index])
        original = tif.filehandle.read(page.databytecounts[index])
    damaged = _damage_tile(small_slide, tmp_path / "damaged.tiff", tile, "middle")
    folder = write_slide(tmp_path / "dicom", SlideSpec(600.0, 500.0, 0.25, "regular", seed=3), fmt="dicom")
    replaced = 0
    for instance in folder.iterdir():  # the DICOM frames are the TIFF's tiles: damage the same one
        data = instance.read_bytes()
        replaced += data.count(original)
        instance.write_bytes(data.replace(original, damaged))
    assert replaced == 1
    x, y = tile[0] * 256 + 16, tile[1] * 256 + 16
    slide = open_slide(folder)
    assert slide.backend_name == "wsidicom"
    with pytest.raises(SlideError, match="dicom: damaged image data in frame"):
        slide.read_region((x, y), 0, (200, 200))
    far = ((tile[0] + 3) % 9 * 256, tile[1] * 256)  # another tile of the same row
    assert slide.read_region(far, 0, (200, 200)).shape == (200, 200, 3)


def test_tile_check_can_be_switched_off_to_measure_it(small_slide, tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad_tile.tiff"
    col, row = _richest_tile(small_slide)
    _damage_tile(small_slide, bad, (col, row), "middle")
    monkeypatch.setenv("GAPLESS_TILE_CHECK", "0")
    for backend in ("cucim", "openslide", "tifffile"):  # unchecked, each returns the decoder's guess
        region = open_slide(bad, backend=backend).read_region((col * 256, row * 256), 0, (224, 224))
        assert region.shape == (224, 224, 3)


def test_the_tile_source_retries_damaged_tiles_elsewhere_and_counts_them(small_slide, tmp_path) -> None:
    from gapless.pipeline.sampling.distributions import PointMasses
    from gapless.pipeline.slides import TissueMask
    from gapless.pipeline.source import SlideEntry, TileSource

    bad = tmp_path / "bad_tile.tiff"
    col, row = _richest_tile(small_slide)
    _damage_tile(small_slide, bad, (col, row), "middle")
    levels = tuple(open_slide(bad).levels)
    mask = np.zeros((63, 75), bool)
    mask[row * 8 - 2 : row * 8 + 10, col * 8 - 2 : col * 8 + 10] = True  # around the damaged tile (8 px per tile)
    mask[44:56, 56:68] = True  # and a healthy island of the same size far from it
    source = TileSource([SlideEntry(str(bad), levels, 0.25, TissueMask(mask, 8.0, 0.25))], PointMasses([0.25]), seed=0,
                        max_retries=16)  # fmt: skip
    tiles = [source.read(g) for g in range(40)]
    assert sum(not t.skipped for t in tiles) >= 30
    assert sum(t.retries for t in tiles) > 0  # reads that touched the damaged tile were retried and counted
    for tile in (t for t in tiles if not t.skipped):
        lx, ly = tile.spec.plan.location
        x0, y0 = col * 256, row * 256
        assert not (lx < x0 + 256 and lx + 224 > x0 and ly < y0 + 256 and ly + 224 > y0)  # none delivered from it


@pytest.mark.parametrize("backend", ["cucim", "openslide", "tifffile"])
def test_a_tile_without_data_fails_the_reads_that_touch_it(small_slide, tmp_path, backend: str) -> None:
    """A tile whose byte count is zero (a sparse or damaged page) is refused, not read as whatever fills it."""
    sparse = tmp_path / "sparse.tiff"
    shutil.copy(small_slide, sparse)
    with tifffile.TiffFile(sparse) as tif:
        tag = tif.pages[0].tags["TileByteCounts"]
        columns = -(-tif.pages[0].imagewidth // tif.pages[0].tilewidth)
        width = {3: 2, 4: 4, 16: 8}[int(tag.dtype)]  # SHORT, LONG or LONG8 entries
        entry = tag.valueoffset + (columns + 1) * width  # tile (1, 1)
    with open(sparse, "r+b") as f:
        f.seek(entry)
        f.write(bytes(width))
    slide = open_slide(sparse, backend=backend)
    with pytest.raises(SlideError, match="sparse.tiff: tile \\(1, 1\\) of level 0 has no image data"):
        slide.read_region((300, 300), 0, (100, 100))
    assert slide.read_region((0, 0), 0, (200, 200)).shape == (200, 200, 3)


def test_another_threads_output_does_not_fail_a_clean_read(small_slide) -> None:
    """What other threads print while cuCIM reads ("transient error" on stderr) is not taken for a decoder's report:
    clean reads stay clean."""
    import os
    import threading
    import time

    slide = open_slide(small_slide, backend="cucim")
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            os.write(2, b"transient error: jpeg server busy\n")
            time.sleep(0.001)

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        for k in range(60):
            assert slide.read_region((k % 6 * 64, k // 6 * 32), 0, (128, 128)).shape == (128, 128, 3)
    finally:
        stop.set()
        thread.join()
