"""Many slides for the loader at scale: thousands of slide files with the tile counts of real ones, and a simulated
index of hundreds of thousands of slides.

``python -m gapless.benchmarks.manyslides --files 2000 --links 200000 --out DIR`` writes ``DIR/slides/`` (``--files``
SVS-like slides), indexes them with ``gapless index`` (``DIR/index-2000.h5``), and, with ``--links``, makes that many
distinct paths to them (symbolic links, ``DIR/links/``) and an index of one record per path
(``DIR/index-200000.h5``). Then ``gapless bench --index DIR/index-2000.h5 ...`` measures the loaders on them. A
set already written is reused.

Each slide has real pyramid geometry (by default 49,152 x 40,960 px at 0.25 mpp, 30,720 JPEG tiles of 256 px at
level 0, 1,920 at 1.0 mpp and 120 at 4.0 mpp, as a 12 x 10 mm scan at 40x has), so opening one parses as many
tile offsets as a real file, and tissue covers an ellipse of its own size and place. To keep thousands of such
files small, a file stores a pool of distinct JPEG tiles once (blocks of 4 x 4 level-0 and level-1 tiles and the
level-2 tiles of a rendered H&E slide, from a different place in it for each file, plus one blank tile) and its
tile offsets point into the pool: decoding costs what real tiles cost, while a file takes under a megabyte. The
levels repeat their pool rather than downsample each other (a throughput benchmark does not look at the pixels);
disk reads are served from the page cache, as the files are small.

The simulated index repeats each file's record under its link paths: the loader treats every path as its own
slide (its own handle, tissue mask and index row), which is what a 200,000-slide archive costs the loader, except
for the disk.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gapless.io import atomic_output, write_bytes

TILE = 256
_SHORT, _LONG, _ASCII, _RATIONAL = 3, 4, 2, 5


@dataclass(frozen=True)
class Pool:
    """Distinct JPEG tiles of one source level: ``tiles[row][col]`` (bytes), and the blank tile."""

    tiles: list[list[bytes]]
    blank: bytes


def source_pools(path: Path) -> list[Pool]:
    """The JPEG tiles of every level of a tiled, JPEG-compressed TIFF written by ``gapless synth`` (full JPEG
    streams, no shared tables), with the smallest tile of level 0 as the blank one."""
    import tifffile

    pools = []
    with tifffile.TiffFile(path) as tif, open(path, "rb") as f:
        for page in tif.pages:
            if not page.is_tiled or page.compression != 7 or page.jpegtables:
                raise ValueError(f"{path}: page {page.index} is not tiled JPEG with full streams")
            cols = math.ceil(page.imagewidth / page.tilewidth)
            data = []
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                f.seek(offset)
                data.append(f.read(count))
            rows = [data[r * cols : (r + 1) * cols] for r in range(len(data) // cols)]
            pools.append(Pool(rows, min(data, key=len)))
    return pools


def _tissue_block(source: Pool, n: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (row, col) of an ``n`` block of source tiles, drawn among the quarter of blocks with the most JPEG
    bytes (tissue, not glass)."""
    sizes = np.array([[len(t) for t in row] for row in source.tiles], np.float64)
    sums = np.lib.stride_tricks.sliding_window_view(sizes, n).sum(axis=(2, 3))
    candidates = np.argwhere(sums >= np.quantile(sums, 0.75))
    r0, c0 = candidates[int(rng.integers(len(candidates)))]
    return int(r0), int(c0)


def _entry(tag: int, kind: int, values: list[int] | bytes) -> tuple[int, int, int, bytes]:
    """(tag, type, count, payload) of one IFD entry."""
    if kind == _ASCII:
        return tag, kind, len(values), bytes(values)
    fmt = {_SHORT: "H", _LONG: "I", _RATIONAL: "II"}[kind]
    count = len(values) // 2 if kind == _RATIONAL else len(values)
    return tag, kind, count, struct.pack(f"<{len(values)}{fmt[0]}", *values)


def write_clone(path: Path, pools: list[Pool], shape: tuple[int, int], seed: int, block: int = 4, mpp: float = 0.25,
                levels: int = 3, step: int = 4) -> Path:  # fmt: skip
    """A classic little-endian TIFF, SVS-like, of level-0 size ``shape`` (width, height) whose tiles come from
    ``pools`` (see the module doc); ``seed`` places the tissue ellipse and picks the pool blocks."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0.4, 0.6, 2)
    ax, ay = rng.uniform(0.25, 0.45, 2)
    payload, pages = bytearray(), []
    for level in range(levels):
        source = pools[min(level, len(pools) - 1)]
        width, height = shape[0] // step**level, shape[1] // step**level
        cols, rows = math.ceil(width / TILE), math.ceil(height / TILE)
        n = min(block, len(source.tiles)), min(block, len(source.tiles[0]))
        r0, c0 = _tissue_block(source, n, rng)
        pool = [pools[0].blank] + [source.tiles[r0 + r][c0 + c] for r in range(n[0]) for c in range(n[1])]
        starts = []
        for tile in pool:
            starts.append(len(payload))
            payload += tile
        ty, tx = np.mgrid[0:rows, 0:cols]
        inside = ((tx + 0.5) / cols - cx) ** 2 / ax**2 + ((ty + 0.5) / rows - cy) ** 2 / ay**2 <= 1.0
        choice = np.where(inside, 1 + (ty % n[0]) * n[1] + tx % n[1], 0).ravel()
        pages.append((width, height, np.asarray(starts, np.int64)[choice], np.asarray([len(t) for t in pool])[choice]))
    header = 8
    out = bytearray(struct.pack("<2sHI", b"II", 42, 0)) + payload
    for level, (width, height, starts, counts) in enumerate(pages):
        entries = [
            _entry(254, _LONG, [int(level > 0)]),
            _entry(256, _LONG, [width]),
            _entry(257, _LONG, [height]),
            _entry(258, _SHORT, [8, 8, 8]),
            _entry(259, _SHORT, [7]),
            _entry(262, _SHORT, [6]),
        ]
        if level == 0:
            text = (
                f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) "
                f"JPEG/RGB Q=90|AppMag = {40 * 0.25 / mpp:g}|MPP = {mpp:g}|Generator = gapless manyslides\0"
            )
            entries.append(_entry(270, _ASCII, text.encode()))
        entries += [
            _entry(277, _SHORT, [3]),
            _entry(284, _SHORT, [1]),
            _entry(322, _LONG, [TILE]),
            _entry(323, _LONG, [TILE]),
            _entry(324, _LONG, [int(v) for v in starts + header]),
            _entry(325, _LONG, [int(v) for v in counts]),
            _entry(530, _SHORT, [2, 2]),
        ]
        out += _ifd(len(out), entries, last=level == len(pages) - 1)
    struct.pack_into("<I", out, 4, header + len(payload))  # the first IFD follows the tile data
    return write_bytes(out, path)


def _ifd(at: int, entries: list[tuple[int, int, int, bytes]], last: bool) -> bytes:
    """One IFD at file offset ``at`` followed by the values that do not fit in its entries; it points to the next
    IFD, which starts right after it (or to 0 when ``last``)."""
    table = 2 + 12 * len(entries) + 4
    extra = bytearray()
    body = bytearray(struct.pack("<H", len(entries)))
    for tag, kind, count, payload in sorted(entries):
        if len(payload) <= 4:
            body += struct.pack("<HHI", tag, kind, count) + payload.ljust(4, b"\0")
        else:
            if (at + table + len(extra)) % 2:
                extra += b"\0"  # values start on a word boundary
            body += struct.pack("<HHII", tag, kind, count, at + table + len(extra))
            extra += payload
    if len(extra) % 2:
        extra += b"\0"
    body += struct.pack("<I", 0 if last else at + table + len(extra))
    return bytes(body + extra)


def write_files(folder: Path, count: int, sources: list[Path], shape: tuple[int, int]) -> list[Path]:
    """``count`` slides in ``folder`` (those already there are kept), from the tile pools of ``sources`` in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    pools = [source_pools(p) for p in sources]
    paths = [folder / f"slide_{i:05d}.svs" for i in range(count)]
    for i, path in enumerate(paths):
        if not path.is_file():
            write_clone(path, pools[i % len(pools)], shape, seed=i)
    return paths


def link_index(index: Path, folder: Path, out: Path, links: int) -> Path:
    """An index of ``links`` slides: each record of ``index`` repeated under distinct link paths in ``folder``.

    Written column by column in the index file's format, the masks copied as compressed, checksummed chunks (their
    bytes as they are), so that an index of hundreds of thousands of slides takes minutes, not hours.
    """
    import h5py

    from gapless.pipeline.slides.index_file import FORMAT_VERSION, LEVELS, SCALARS, STRINGS, StringColumn, read_columns

    with h5py.File(index, "r") as f:
        if int(f.attrs.get("version", 1)) != FORMAT_VERSION:
            raise ValueError(
                f"{index}: written in index format {f.attrs.get('version')}; rebuild it with gapless index"
            )
        cols = {
            k: (v.tolist() if isinstance(v, StringColumn) else np.array(v)) for k, v in read_columns(f, index).items()
        }
        masks, attrs = f["masks"], dict(f.attrs)
        chunk = masks.chunks[0]
        ok = np.flatnonzero(cols["status"] == 0)  # status code 0: a usable slide
        copies = math.ceil(links / len(ok))
        block = math.ceil(int(cols["mask_start"][-1]) / chunk) * chunk  # one copy of the masks, in whole chunks
        raw = [masks.id.read_direct_chunk((k * chunk,)) for k in range(block // chunk)]
    rows = np.tile(ok, copies)[:links]
    copy = np.repeat(np.arange(copies), len(ok))[:links]
    paths = []
    for i, (row, k) in enumerate(zip(rows, copy)):
        target = Path(cols["path"][row])
        link = folder / f"{i // 1000:03d}" / f"{target.stem}_{k:03d}{target.suffix}"
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
        paths.append(str(link))
    starts, stops = cols["level_start"][rows], cols["level_start"][rows + 1]
    level_rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(attrs)
        for name in STRINGS:
            values = paths if name == "path" else [cols[name][r] for r in rows]
            column = StringColumn.from_strings(values)
            f[f"{name}_blob"], f[f"{name}_offsets"] = column.blob, column.offsets
        for key in (*SCALARS, "status", "mask_shape"):
            f[key] = cols[key][rows]
        for key in LEVELS:
            f[key] = cols[key][level_rows]
        f["level_start"] = np.concatenate([[0], np.cumsum(stops - starts)])
        f["mask_start"] = np.concatenate([cols["mask_start"][rows] + copy * block, [copies * block]])
        data = f.create_dataset("masks", shape=(copies * block,), dtype=np.uint8, chunks=(chunk,), compression="gzip",
                                fletcher32=True)  # fmt: skip
        for k in range(copies):
            for j, (mask, chunk_bytes) in enumerate(raw):
                data.id.write_direct_chunk((k * block + j * chunk,), chunk_bytes, mask)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gapless.benchmarks.manyslides", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the slides, links and indexes")
    parser.add_argument("--files", type=int, default=2000, help="slide files to write (default 2000)")
    parser.add_argument("--links", type=int, default=0, help="also an index of this many slides over the files")
    parser.add_argument("--size", type=int, nargs=2, default=(49152, 40960), metavar=("W", "H"),
                        help="level-0 size in pixels at 0.25 mpp (default 49152 40960)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="indexing processes")
    args = parser.parse_args(argv)
    if args.files < 1 or args.links < 0 or min(args.size) < 4 * 4 * TILE:
        parser.error("--files must be >= 1, --links >= 0 and each --size side >= 4096 px (three 4x levels of tiles)")
    from gapless.benchmarks.config import SlideSetConfig
    from gapless.benchmarks.slideset import prepare
    from gapless.pipeline.slides.indexer import build_index

    sources = sorted(prepare(SlideSetConfig()).index.parent.glob("*.svs"))
    paths = write_files(args.out / "slides", args.files, sources, tuple(args.size))
    index = args.out / f"index-{args.files}.h5"
    if not index.is_file():
        summary = build_index(paths, index, workers=args.workers)
        print(f"indexed {summary.usable} of {summary.total} slides into {index}")
    print(index)
    if args.links:
        linked = args.out / f"index-{args.links}.h5"
        if not linked.is_file():
            link_index(index, args.out / "links", linked, args.links)
        print(linked)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
