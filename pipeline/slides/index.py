"""The slide index: every slide's geometry, mpps, tissue mask, label and patient, loaded in milliseconds.

:class:`SlideIndex` keeps the columns of the index file (:mod:`gapless.pipeline.slides.index_file`) memory-mapped
and makes :class:`SlideRecord` objects only for the slides asked for: ``index.records`` is a lazy sequence, so an
index of 200,000 slides costs a process a few megabytes, not a Python object per slide. Tissue masks are read one
slide at a time through a bounded cache. Pickled, an index is its path: each process maps the file itself.

A damaged index (a dataset missing, a column of the wrong length, a mask whose checksum fails) is an
:class:`~gapless.errors.InputError` that names the file and the way out: rebuilding it with ``gapless index``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.index_file import (
    FORMAT,
    FORMAT_VERSION,
    LEVELS,
    REQUIRED,
    STATUSES,
    read_columns,
    read_version1_columns,
)  # fmt: skip
from gapless.pipeline.slides.slide import Level
from gapless.pipeline.slides.tissue import TissueMask

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def damaged(path: Path, problem: str) -> InputError:
    return InputError(
        f"{path}: damaged slide index ({problem}); rebuild it: gapless index SLIDES --out {path} "
        "(slides whose records are intact are not read again)"
    )


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


class Records(Sequence):
    """The usable slides of an index as a sequence of :class:`SlideRecord`, each made when it is asked for."""

    def __init__(self, index: SlideIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index.ok_rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._index.record(int(row)) for row in self._index.ok_rows[i]]
        return self._index.record(int(self._index.ok_rows[i]))

    def __iter__(self) -> Iterator[SlideRecord]:
        return (self._index.record(int(row)) for row in self._index.ok_rows)


class SlideIndex:
    """A loaded index: ``records`` (usable slides, lazily), ``failed`` ((path, status, reason) of the others),
    ``settings`` (those the index was built with) and the columns themselves (``columns``)."""

    def __init__(self, path: Path, columns: dict[str, Any], settings: dict[str, Any], mask_cache: int = 64) -> None:
        self.path = path
        self.columns = columns
        self.settings = settings
        self.ok_rows = np.flatnonzero(np.asarray(columns["status"]) == 0)
        self.records = Records(self)
        self._masks: OrderedDict[int, TissueMask] = OrderedDict()
        self._mask_cache = mask_cache
        self._file: Any = None
        self._mask_data: Any = None

    @classmethod
    def load(cls, path: str | Path) -> SlideIndex:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: slide index not found (make one with `gapless index`)")
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise InputError(f"{path}: not a gapless slide index")
                version = int(f.attrs.get("version", 1))
                if version == 1:
                    return cls(path, read_version1_columns(f), {"mask_mpp": float(f.attrs.get("mask_mpp", 8.0))})
                if version != FORMAT_VERSION:
                    raise InputError(f"{path}: slide index format {version}; this gapless reads {FORMAT_VERSION}")
                missing = [k for k in REQUIRED if k not in f]
                if missing:
                    raise damaged(path, f"dataset(s) {', '.join(missing)} missing")
                index = cls(path, read_columns(f, path), json.loads(f.attrs.get("settings", "{}")))
        except (OSError, KeyError, ValueError) as exc:
            raise damaged(path, str(exc).splitlines()[0]) from exc
        index._check_shapes()
        return index

    def _check_shapes(self) -> None:
        cols, n = self.columns, len(self.columns["status"])
        lengths = {k: len(cols[k]) for k in cols if k not in (*LEVELS, "level_start", "mask_start")}
        wrong = [k for k, v in lengths.items() if v != n]
        levels = int(cols["level_start"][-1]) if len(cols["level_start"]) else 0
        wrong += [k for k in LEVELS if len(cols[k]) != levels]
        wrong += [k for k in ("level_start", "mask_start") if len(cols[k]) != n + 1]
        if wrong:
            raise damaged(self.path, f"column(s) {', '.join(sorted(wrong))} of the wrong length")

    def __len__(self) -> int:
        return len(self.ok_rows)

    @property
    def failed(self) -> list[tuple[str, str, str]]:
        rows = np.flatnonzero(np.asarray(self.columns["status"]) != 0)
        cols = self.columns
        return [(cols["path"][r], STATUSES[int(cols["status"][r])], cols["reason"][r]) for r in rows]

    def levels(self, row: int) -> tuple[Level, ...]:
        cols = self.columns
        start, stop = int(cols["level_start"][row]), int(cols["level_start"][row + 1])
        widths, heights = cols["level_width"][start:stop].tolist(), cols["level_height"][start:stop].tolist()
        downsamples, mpps = cols["level_downsample"][start:stop].tolist(), cols["level_mpp"][start:stop].tolist()
        return tuple(Level(i, *values) for i, values in enumerate(zip(widths, heights, downsamples, mpps)))

    def record(self, row: int) -> SlideRecord:
        cols = self.columns
        return SlideRecord(cols["path"][row], self.levels(row), float(cols["mpp"][row]), cols["label"][row],
                           cols["patient"][row], float(cols["tissue_fraction"][row]), int(cols["size"][row]),
                           float(cols["mtime"][row]), row, self)  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}  # each process maps the file itself

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(SlideIndex.load(state["path"]).__dict__)
        self.records = Records(self)

    def packed_mask(self, row: int) -> np.ndarray:
        """The bit-packed tissue mask of the slide in file row ``row``; a damaged one names the index."""
        import h5py

        start, stop = int(self.columns["mask_start"][row]), int(self.columns["mask_start"][row + 1])
        try:
            if self._file is None:
                self._file = h5py.File(self.path, "r")
                self._mask_data = self._file["masks"]  # looking a dataset up costs more than reading a mask
            return self._mask_data[start:stop]
        except (OSError, KeyError, ValueError) as exc:
            problem = f"the tissue mask of {self.columns['path'][row]} cannot be read: {str(exc).splitlines()[0]}"
            raise damaged(self.path, problem) from exc

    def tissue_mask(self, row: int) -> TissueMask:
        """The tissue mask of the slide in file row ``row`` (bounded LRU of unpacked masks)."""
        mask = self._masks.get(row)
        if mask is not None:
            self._masks.move_to_end(row)
            return mask
        shape = tuple(int(v) for v in self.columns["mask_shape"][row])
        bits = np.unpackbits(self.packed_mask(row), count=shape[0] * shape[1]).reshape(shape).astype(bool)
        mask = TissueMask(bits, float(self.columns["mask_mpp"][row]), float(self.columns["mpp"][row]))
        self._masks[row] = mask
        while len(self._masks) > self._mask_cache:
            self._masks.popitem(last=False)
        return mask

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._mask_data = None


def is_index_file(path: Path) -> bool | None:
    """True for a gapless index, False for any other file, None for an HDF5 file too damaged to tell."""
    with open(path, "rb") as f:
        if f.read(8) != HDF5_SIGNATURE:
            return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except Exception:
        return None
