"""The slide index file: flat columns in one HDF5 file, written once, memory-mapped when read.

Every per-slide value is a column with one row per slide (strings as one UTF-8 blob plus offsets; statuses as small
codes), level tables are flat with a start offset per slide, and the tissue masks are bit-packed into one
compressed, checksummed (Fletcher-32) dataset. Columns are stored contiguously, so a reader maps them straight
from the file: loading an index of 200,000 slides reads a few hundred bytes of metadata, and the pages of the
columns a process touches are shared with every other process reading the same index.

``write_index`` writes entries (dicts, as :func:`gapless.pipeline.slides.indexer.index_slide` makes them) to a
temporary name and renames it (:func:`gapless.io.atomic_output`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from gapless.io import atomic_output

FORMAT = "gapless-slide-index"
FORMAT_VERSION = 2
STATUSES = ("ok", "no_tissue", "failed")
MASK_CHUNK_RANGE = (1 << 12, 1 << 16)  # bytes per compressed chunk of masks: a few masks each, decoded quickly
STRINGS = ("path", "reason", "label", "patient", "format")
SCALARS = ("size", "mtime", "mpp", "tissue_fraction", "mask_mpp", "mpp_override", "mask_mpp_setting")
LEVELS = ("level_width", "level_height", "level_downsample", "level_mpp")
OFFSETS = ("level_start", "mask_start")
REQUIRED = (*[f"{s}_blob" for s in STRINGS], *[f"{s}_offsets" for s in STRINGS], *SCALARS, *LEVELS, *OFFSETS,
            "status", "mask_shape", "masks")  # fmt: skip


class StringColumn:
    """A column of strings kept as one UTF-8 blob and n + 1 offsets; ``column[i]`` decodes one on demand."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob, self.offsets = blob, offsets

    @classmethod
    def from_strings(cls, values: list[str]) -> StringColumn:
        encoded = [v.encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, row: int) -> str:
        return self.blob[int(self.offsets[row]) : int(self.offsets[row + 1])].tobytes().decode()

    def tolist(self) -> list[str]:
        data = self.blob.tobytes()
        offsets = self.offsets.tolist()
        return [data[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:])]


def _mapped(dataset: Any, path: Path) -> np.ndarray:
    """A contiguous dataset mapped from the file (read normally when it cannot be: empty, chunked)."""
    offset = dataset.id.get_offset()
    if offset is None or dataset.chunks is not None or dataset.size == 0:
        return dataset[()]
    return np.asarray(np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape))


def read_columns(f: Any, path: Path) -> dict[str, Any]:
    """Every column of an open version-2 index file (masks excepted): arrays mapped, strings as StringColumn."""
    columns: dict[str, Any] = {k: _mapped(f[k], path) for k in (*SCALARS, *LEVELS, *OFFSETS, "status", "mask_shape")}
    for name in STRINGS:
        columns[name] = StringColumn(_mapped(f[f"{name}_blob"], path), _mapped(f[f"{name}_offsets"], path))
    return columns


def read_version1_columns(f: Any) -> dict[str, Any]:
    """The columns of a version-1 index (strings as HDF5 strings, no settings per slide), in version-2 form."""
    columns: dict[str, Any] = {k: f[k][()] for k in ("size", "mtime", "mpp", "tissue_fraction", "mask_mpp", *LEVELS,
                                                      *OFFSETS, "mask_shape")}  # fmt: skip
    n = len(columns["size"])
    strings = {k: [s.decode() if isinstance(s, bytes) else str(s) for s in f[k][()]] for k in ("path", "reason",
               "label", "patient", "status")}  # fmt: skip
    for name in STRINGS:
        columns[name] = StringColumn.from_strings(strings.get(name, [""] * n))
    columns["status"] = np.array([STATUSES.index(s) if s in STATUSES else 2 for s in strings["status"]], np.uint8)
    columns["mpp_override"] = np.full(n, np.nan)
    columns["mask_mpp_setting"] = np.full(n, float(f.attrs.get("mask_mpp", 8.0)))
    return columns


@contextmanager
def _plain_os_errors() -> Iterator[None]:
    """HDF5 write failures with their system error alone (HDF5's own text spans lines and names buffers)."""
    try:
        yield
    except OSError as exc:
        if exc.errno:
            raise OSError(exc.errno, os.strerror(exc.errno)) from exc
        raise


def write_index(
    path: str | Path,
    entries: list[dict[str, Any]],
    settings: dict[str, Any],
    mask_of: Callable[[dict[str, Any]], np.ndarray] | None = None,
) -> Path:
    """Write index entries and the run's ``settings`` (JSON-able) to ``path`` (write-then-rename).

    Each entry's packed mask is its ``mask`` or, when ``mask_of`` is given, ``mask_of(entry)``: masks are
    streamed into the file in blocks, never all held at once."""
    import h5py

    path = Path(path)
    n = len(entries)
    level_start = np.zeros(n + 1, np.int64)
    np.cumsum([len(e.get("levels", ())) for e in entries], out=level_start[1:])
    levels = [lv for e in entries for lv in e.get("levels", ())]
    mask_of = mask_of or (lambda e: np.asarray(e.get("mask", ()), np.uint8))
    with atomic_output(path) as tmp, _plain_os_errors(), h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT, version=FORMAT_VERSION, settings=json.dumps(settings, sort_keys=True))
        for name in STRINGS:
            column = StringColumn.from_strings([str(e.get(name, "") or "") for e in entries])
            f[f"{name}_blob"], f[f"{name}_offsets"] = column.blob, column.offsets
        for key in SCALARS:
            f[key] = np.array([float(e.get(key, np.nan if key == "mpp_override" else 0.0)) for e in entries])
        f["status"] = np.array([STATUSES.index(e.get("status", "failed")) for e in entries], np.uint8)
        f["level_start"] = level_start
        f["mask_shape"] = np.array([e.get("mask_shape", (0, 0)) for e in entries], np.int64).reshape(n, 2)
        for i, key in enumerate(LEVELS):
            f[key] = np.array([lv[i] for lv in levels], np.float64 if i >= 2 else np.int64)
        f["mask_start"] = _stream_masks(f, entries, mask_of)
    return path


def _chunk_bytes(entries: list[dict[str, Any]]) -> int:
    """Chunk size for the masks: about four typical masks (a reader decodes one chunk per mask), within bounds."""
    shapes = [e.get("mask_shape", (0, 0)) for e in entries[:1000]]
    typical = float(np.median([-(-int(h) * int(w) // 8) for h, w in shapes])) if shapes else 0.0
    low, high = MASK_CHUNK_RANGE
    return int(min(high, max(low, 2 ** np.ceil(np.log2(max(4 * typical, 1))))))


def _stream_masks(f: Any, entries: list[dict[str, Any]], mask_of: Callable) -> np.ndarray:
    """Append every entry's mask to a chunked, compressed, checksummed dataset; return the n + 1 start offsets."""
    masks = f.create_dataset("masks", shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_chunk_bytes(entries),),
                             compression="gzip", fletcher32=True)  # fmt: skip
    starts = np.zeros(len(entries) + 1, np.int64)
    block: list[np.ndarray] = []
    pending = 0

    def flush() -> None:
        nonlocal block, pending
        if block:
            data = np.concatenate(block)
            masks.resize((masks.shape[0] + len(data),))
            masks[-len(data) :] = data
            block, pending = [], 0

    for i, entry in enumerate(entries):
        mask = np.asarray(mask_of(entry), np.uint8)
        starts[i + 1] = starts[i] + len(mask)
        block.append(mask)
        pending += len(mask)
        if pending >= 4 << 20:
            flush()
    flush()
    return starts
