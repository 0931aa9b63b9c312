"""Host reads of JPEG pyramids go to the reader that decodes each tile once, strictly; GPU reads keep cuCIM first.

The slides here are Aperio-like SVS files as scanners write them: abbreviated JPEG tiles whose tables are shared in
the JPEGTables tag, tiles encoded as RGB (PhotometricInterpretation RGB, no Adobe marker, component ids 1, 2, 3:
libjpeg alone would take them for YCbCr) or as YCbCr, level sizes that are no multiple of the tile (edge tiles)
nor of each other (downsamples that are not whole numbers). cuCIM, OpenSlide, tifffile's own decoder and gapless's
tifffile reader (and the batched reader of the GPU path, on its CPU backend) must return the same pixels, exactly,
at every level (OpenSlide for whole levels: where a level pixel starts between level-0 pixels it interpolates); the
tile source must make the same tile whichever reader opened the slide.
"""

from __future__ import annotations

import shutil

import cv2
import imagecodecs
import numpy as np
import pytest
import tifffile

from gapless.errors import SlideError
from gapless.pipeline.sampling import SamplingConfig, build_distribution
from gapless.pipeline.slides import SlideCache, open_slide
from gapless.pipeline.slides.formats import detect_format
from gapless.pipeline.slides.tiled_decode import RegionRequest, TiledJpegReader
from gapless.pipeline.slides.tissue import tissue_mask_for_slide
from gapless.pipeline.source import SlideEntry, TileSource
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide

TILE = 128


def _abbreviated(jpeg: bytes) -> tuple[bytes, bytes]:
    """(tables, tile) of a full JPEG as an Aperio scanner stores it: DQT/DHT in the shared tables, the rest in the
    tile, without JFIF or Adobe markers, the components numbered 1, 2, 3 in the frame and scan headers."""
    tables, rest, i = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        segment = bytearray(jpeg[i : i + 2 + length] if marker != 0xDA else jpeg[i:])
        if marker == 0xC0:  # frame header: id, sampling, table per component from byte 10
            segment[10::3] = bytes(range(1, segment[9] + 1))
        if marker == 0xDA:  # scan header: (id, tables) per component from byte 5
            segment[5 : 5 + 2 * segment[4] : 2] = bytes(range(1, segment[4] + 1))
            rest.append(bytes(segment))
            break
        if marker in (0xDB, 0xC4):
            tables.append(bytes(segment))
        elif marker not in (0xE0, 0xEE):  # JFIF and Adobe markers dropped
            rest.append(bytes(segment))
        i += 2 + length
    return b"".join(tables) + b"\xff\xd9", b"".join(rest)


def write_aperio(path, image: np.ndarray, rgb: bool, levels: int = 3) -> object:
    """An SVS pyramid (4x steps) of abbreviated JPEG tiles sharing one JPEGTables, RGB- or YCbCr-encoded."""
    with tifffile.TiffWriter(path) as tw:
        for index in range(levels):
            h, w = image.shape[:2]
            tiles = []
            for y in range(0, h, TILE):
                for x in range(0, w, TILE):
                    cell = np.zeros((TILE, TILE, 3), np.uint8)
                    part = image[y : y + TILE, x : x + TILE]
                    cell[: part.shape[0], : part.shape[1]] = part
                    full = imagecodecs.jpeg8_encode(cell, level=85, colorspace="RGB", outcolorspace="RGB" if rgb else "YCBCR",
                                                    subsampling="444" if rgb else "422")  # fmt: skip
                    tables, tile = _abbreviated(full)
                    tiles.append(tile)
            description = f"Aperio Image Library v12.0.15\r\n{w}x{h} ({TILE}x{TILE}) JPEG/RGB Q=85|MPP = 0.2527"
            tw.write(iter(tiles), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), compression=7,
                     photometric="ycbcr", subfiletype=int(index > 0), description=description if index == 0 else None,
                     extratags=[(347, 7, len(tables), tables, True)], metadata=None)  # fmt: skip
            image = cv2.resize(image, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    with tifffile.TiffFile(path, mode="r+b") as tif:  # the tag as Aperio writes it (tifffile writes YCbCr)
        for page in tif.pages:
            page.tags["PhotometricInterpretation"].overwrite(2 if rgb else 6)
    return path


@pytest.fixture(scope="module")
def aperio(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("aperio")
    rng = np.random.default_rng(5)
    image = cv2.GaussianBlur(rng.integers(0, 256, (1123, 1391, 3), dtype=np.uint8), (7, 7), 2)
    image[150:1000, 200:1250] = image[150:1000, 200:1250] * np.array([0.85, 0.45, 0.75])  # pink "tissue"
    return {
        "rgb": write_aperio(root / "rgb.svs", image, rgb=True),
        "ycbcr": write_aperio(root / "ycc.svs", image, False),
    }


@pytest.mark.parametrize("kind", ["rgb", "ycbcr"])
def test_every_reader_returns_the_same_pixels_of_shared_table_tiles(aperio, kind: str) -> None:
    path = aperio[kind]
    with tifffile.TiffFile(path) as tif:
        reference = [page.asarray() for page in tif.pages]  # tifffile's decoder follows the photometric tag
    for reader in ("tifffile", "cucim", "openslide"):
        with open_slide(path, backend=reader) as slide:
            assert slide.format == "aperio-svs" and len(slide.levels) == 3
            for level, expected in zip(slide.levels, reference):
                np.testing.assert_array_equal(slide.read_level(level.index), expected, err_msg=f"{reader} {level}")
                if reader == "openslide":  # it interpolates where a level pixel starts between level-0 pixels
                    continue
                edge = slide.read_region((round((level.width - 50) * level.downsample), 0), level.index, (50, 40))
                np.testing.assert_array_equal(edge, expected[:40, -50:], err_msg=f"{reader} edge {level}")
            levels = slide.levels
    # The batched reader (the CPU twin of the GPU one) decodes the same streams in one call.
    batched = TiledJpegReader("cpu")
    requests = [RegionRequest(str(path), (0, 0), lv.index, (lv.width, lv.height), lv.downsample, (lv.width, lv.height))
                for lv in levels]  # fmt: skip
    for region, expected in zip(batched.read(requests), reference):
        np.testing.assert_array_equal(np.asarray(region), expected)
    batched.close()


def test_host_reads_pick_the_strict_reader_and_gpu_reads_cucim(aperio, tmp_path) -> None:
    path = aperio["rgb"]
    assert detect_format(path).readers_for("cpu") == ("tifffile", "cucim", "openslide")
    assert detect_format(path).readers_for("cuda") == ("cucim", "openslide", "tifffile")
    with open_slide(path) as host, open_slide(path, device="cuda") as gpu:
        assert (host.backend_name, gpu.backend_name) == ("tifffile", "cucim")
    cache = SlideCache(4)
    assert cache.get(path).backend_name == "tifffile" and cache.get(path, device="cuda").backend_name == "cucim"
    assert cache.get(path) is cache.get(path) and len(cache) == 2
    cache.close()
    # A pyramid of another compression keeps the order of every device (cuCIM first, vetted).
    lzw = tmp_path / "lzw.tiff"
    with tifffile.TiffWriter(lzw) as tw:
        for i, side in enumerate((512, 128)):
            tw.write(np.full((side, side, 3), 200, np.uint8), tile=(64, 64), compression="lzw", photometric="rgb",
                     subfiletype=int(i > 0), resolution=(4e4 / 4**i, 4e4 / 4**i), resolutionunit="CENTIMETER",
                     metadata=None)  # fmt: skip
    assert detect_format(lzw).readers_for("cpu") == ("cucim", "openslide", "tifffile")
    with pytest.raises(ValueError, match="device: 'gpu'"):
        open_slide(lzw, device="gpu")


def test_a_damaged_tile_fails_the_host_read_that_decodes_it_once(aperio, tmp_path) -> None:
    """The damage only a strict decode notices (entropy-coded bytes changed, markers intact): the host reader
    raises naming the file and tile; the rest of the slide reads."""
    path = tmp_path / "damaged.svs"
    shutil.copy(aperio["rgb"], path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[13], page.databytecounts[13]
    data = bytearray(path.read_bytes())
    data[offset + count // 2 : offset + count // 2 + 48] = (
        np.random.default_rng(0).integers(0, 255, 48, np.uint8).tobytes()
    )
    path.write_bytes(bytes(data))
    columns = -(-1391 // TILE)
    col, row = 13 % columns, 13 // columns
    with open_slide(path) as slide:
        assert slide.backend_name == "tifffile"
        with pytest.raises(SlideError, match=rf"damaged.svs: damaged image data in tile \({col}, {row}\) of level 0"):
            slide.read_region((col * TILE + 5, row * TILE + 5), 0, (20, 20))
        assert slide.read_region((0, 0), 0, (64, 64)).shape == (64, 64, 3)


@pytest.mark.parametrize("fmt, indexed_by", [("svs", "cucim"), ("philips", "openslide")])
def test_the_tile_source_makes_the_same_tiles_whichever_reader_opened_the_slide(aperio, tmp_path, fmt, indexed_by):
    """Levels as an index holds them when another reader built it (cuCIM keeps downsamples in single precision;
    OpenSlide gives a Philips TIFF the whole-number downsamples of its metadata, 4 where the sizes say 4.0024), read
    with the host reader and with the indexing one: every tile the same, pixel for pixel."""
    path = aperio["ycbcr"]
    if fmt == "philips":
        path = write_slide(tmp_path / "p.tiff", SlideSpec(1013.0, 777.0, 0.2527, "regular", seed=7), fmt="philips",
                           exact_levels=False)  # fmt: skip
    with open_slide(path, backend=indexed_by) as slide:
        entry = SlideEntry(str(path), tuple(slide.levels), slide.mpp, tissue_mask_for_slide(slide))
    with open_slide(path) as host:
        assert host.backend_name == "tifffile" and entry.levels[1].downsample != host.levels[1].downsample
    distribution = build_distribution(SamplingConfig(strategy="cu", low=0.5, high=4.0))
    tiles = {}
    for backend in ("auto", indexed_by):
        source = TileSource([entry], distribution, seed=11, tile_px=64, tissue_threshold=0.1)
        source._cache = SlideCache(2, backend)
        tiles[backend] = [source.read(g) for g in range(24)]
        assert source.cache.get(str(path), entry.mpp).backend_name == ("tifffile" if backend == "auto" else indexed_by)
    assert any(tile.level > 0 for tile in tiles["auto"])
    for a, b in zip(tiles["auto"], tiles[indexed_by]):
        assert not a.skipped and a.spec == b.spec
        np.testing.assert_array_equal(a.region, b.region)
