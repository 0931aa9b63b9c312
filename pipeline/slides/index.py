"""The slide index: one HDF5 file with every slide's geometry, mpps, tissue mask, label and patient.

All per-slide scalars and level tables are flat arrays, so loading an index of thousands of slides reads a dozen
datasets (milliseconds); tissue masks are bit-packed into one compressed dataset and read lazily, one slide at a
time. Slides that could not be indexed stay in the file with their reason, so a re-index can skip files that have
not changed (same size and modification time) whether they succeeded or failed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.slide import Level
from gapless.pipeline.slides.tissue import TissueMask

FORMAT_VERSION = 1
_STRINGS = ("path", "status", "reason", "label", "patient")
_SCALARS = ("size", "mtime", "mpp", "tissue_fraction", "mask_mpp")


@dataclass(frozen=True)
class SlideRecord:
    """One indexed slide. ``tissue_mask()`` reads its mask from the index file on first use."""

    path: str
    levels: tuple[Level, ...]
    mpp: float
    label: str
    patient: str
    tissue_fraction: float
    size: int
    mtime: float
    row: int = field(repr=False)
    index: SlideIndex = field(repr=False, compare=False)

    def tissue_mask(self) -> TissueMask:
        return self.index.tissue_mask(self.row)


class SlideIndex:
    """A loaded index: ``records`` (usable slides), ``failed`` ((path, status, reason) of the others)."""

    def __init__(self, path: Path, columns: dict[str, Any], mask_cache: int = 64) -> None:
        self.path = path
        self.columns = columns
        self._masks: OrderedDict[int, TissueMask] = OrderedDict()
        self._mask_cache = mask_cache
        starts = columns["level_start"]
        self.records: list[SlideRecord] = []
        self.failed: list[tuple[str, str, str]] = []
        for row, status in enumerate(columns["status"]):
            if status != "ok":
                self.failed.append((columns["path"][row], status, columns["reason"][row]))
                continue
            levels = tuple(
                Level(i - starts[row], int(columns["level_width"][i]), int(columns["level_height"][i]),
                      float(columns["level_downsample"][i]), float(columns["level_mpp"][i]))
                for i in range(starts[row], starts[row + 1])
            )  # fmt: skip
            self.records.append(
                SlideRecord(columns["path"][row], levels, float(columns["mpp"][row]), columns["label"][row],
                            columns["patient"][row], float(columns["tissue_fraction"][row]),
                            int(columns["size"][row]), float(columns["mtime"][row]), row, self)
            )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> SlideIndex:
        import h5py

        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: slide index not found (make one with `gapless index`)")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != "gapless-slide-index":
                    raise InputError(f"{path}: not a gapless slide index")
                columns = {k: f[k][()] for k in f.keys() if k != "masks"}
        except OSError as exc:
            raise InputError(f"{path}: cannot read the slide index ({exc})") from exc
        for key in _STRINGS:
            columns[key] = [s.decode() if isinstance(s, bytes) else str(s) for s in columns[key]]
        return cls(path, columns)

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # reloading is fast; masks are read lazily in each process

    def __setstate__(self, state: dict[str, Any]) -> None:
        loaded = SlideIndex.load(state["path"])
        self.__dict__.update(loaded.__dict__)
        self.records = [SlideRecord(**{**r.__dict__, "index": self}) for r in loaded.records]

    def tissue_mask(self, row: int) -> TissueMask:
        """The tissue mask of the slide in file row ``row`` (bounded LRU of unpacked masks)."""
        mask = self._masks.get(row)
        if mask is not None:
            self._masks.move_to_end(row)
            return mask
        import h5py

        cols = self.columns
        start, stop = int(cols["mask_start"][row]), int(cols["mask_start"][row + 1])
        shape = tuple(int(v) for v in cols["mask_shape"][row])
        with h5py.File(self.path, "r") as f:
            packed = f["masks"][start:stop]
        bits = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        mask = TissueMask(bits, float(cols["mask_mpp"][row]), float(cols["mpp"][row]))
        self._masks[row] = mask
        while len(self._masks) > self._mask_cache:
            self._masks.popitem(last=False)
        return mask

    def packed_mask(self, row: int) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return f["masks"][int(self.columns["mask_start"][row]) : int(self.columns["mask_start"][row + 1])]


def write_index(path: Path, entries: list[dict[str, Any]], mask_mpp: float) -> Path:
    """Write index entries (dicts from ``index_slide``) to ``path`` (write-then-rename)."""
    import h5py

    n = len(entries)
    level_start = np.zeros(n + 1, np.int64)
    mask_start = np.zeros(n + 1, np.int64)
    for i, e in enumerate(entries):
        level_start[i + 1] = level_start[i] + len(e.get("levels", ()))
        mask_start[i + 1] = mask_start[i] + len(e.get("mask", b""))
    levels = [lv for e in entries for lv in e.get("levels", ())]
    packed = [np.asarray(e["mask"], np.uint8) for e in entries if len(e.get("mask", b""))]
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as f:
        f.attrs.update(format="gapless-slide-index", version=FORMAT_VERSION, mask_mpp=mask_mpp)
        for key in _STRINGS:
            f[key] = np.array([str(e.get(key, "")) for e in entries], dtype=h5py.string_dtype())
        for key in _SCALARS:
            f[key] = np.array([float(e.get(key, 0.0)) for e in entries], np.float64)
        f["level_start"], f["mask_start"] = level_start, mask_start
        f["mask_shape"] = np.array([e.get("mask_shape", (0, 0)) for e in entries], np.int64).reshape(n, 2)
        for i, key in enumerate(("level_width", "level_height", "level_downsample", "level_mpp")):
            f[key] = np.array([lv[i] for lv in levels], np.float64 if i >= 2 else np.int64)
        data = np.concatenate(packed) if packed else np.zeros(0, np.uint8)
        if len(data):
            f.create_dataset("masks", data=data, chunks=(min(len(data), 1 << 16),), compression="gzip")
        else:
            f["masks"] = data
    tmp.replace(path)
    return path
