"""The slide index: every slide's geometry, mpps, tissue mask, label and patient, loaded in milliseconds.

:class:`SlideIndex` keeps the columns of the index file (:mod:`gapless.pipeline.slides.index_file`) memory-mapped
and makes :class:`SlideRecord` objects only for the slides asked for: ``index.records`` is a lazy sequence, so an
index of 200,000 slides costs a process a few megabytes, not a Python object per slide. Tissue masks are read one
slide at a time through a bounded cache. The file is opened once, when the index loads, and its columns and masks
are read from that open file, so a rebuild that renames a new index over it does not mix two files. Pickled, an
index is its path and the identity of the file it loaded: each process maps the file itself, and one that finds
another file there (rebuilt or replaced under a running job) stops with :class:`~gapless.errors.RunError`.

A damaged index (a dataset missing, a column of the wrong length, a mask whose checksum fails) is an
:class:`~gapless.errors.InputError` that names the file and the way out: rebuilding it with ``gapless index``.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError, RunError
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

    def __init__(self, path: Path, columns: dict[str, Any], settings: dict[str, Any], mask_cache: int = 64,
                 file: Any = None) -> None:  # fmt: skip
        self.path = path
        self.columns = columns
        self.settings = settings
        self.ok_rows = np.flatnonzero(np.asarray(columns["status"]) == 0)
        self._masks: OrderedDict[int, TissueMask] = OrderedDict()
        self._mask_cache = mask_cache
        self._file: Any = file  # the open index file (h5py): masks are read from the file the columns came from
        self._mask_data: Any = None
        self.identity = _identity(os.fstat(file.id.get_vfd_handle())) if file is not None else None

    @classmethod
    def load(cls, path: str | Path) -> SlideIndex:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: slide index not found (make one with `gapless index`)")
        if not _is_hdf5(path):
            raise InputError(f"{path}: not a gapless slide index (not an HDF5 file)")
        import h5py

        f = None
        try:
            f = h5py.File(path, "r")
            if f.attrs.get("format") != FORMAT:
                raise InputError(f"{path}: not a gapless slide index")
            version = int(f.attrs.get("version", 1))
            if version == 1:
                index = cls(path, read_version1_columns(f), {"mask_mpp": float(f.attrs.get("mask_mpp", 8.0))}, file=f)
            elif version != FORMAT_VERSION:
                raise InputError(f"{path}: slide index format {version}; this gapless reads {FORMAT_VERSION}")
            else:
                missing = [k for k in REQUIRED if k not in f]
                if missing:
                    raise damaged(path, f"dataset(s) {', '.join(missing)} missing")
                index = cls(path, read_columns(f, path), json.loads(f.attrs.get("settings", "{}")), file=f)
            index._check_shapes()
            if _identity(path.stat()) != index.identity:  # renamed over while the columns were being mapped
                raise InputError(f"{path}: the slide index was replaced while it loaded; load it again")
        except BaseException as exc:
            if f is not None:
                f.close()
            if isinstance(exc, (OSError, KeyError, ValueError)):
                raise damaged(path, str(exc).splitlines()[0]) from exc
            raise
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
    def records(self) -> Records:
        """The usable slides (made on demand; no reference cycle keeps an index, and its open file, alive)."""
        return Records(self)

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
        return {"path": self.path, "identity": self.identity}  # each process maps the file itself

    def __setstate__(self, state: dict[str, Any]) -> None:
        loaded = SlideIndex.load(state["path"])
        if state.get("identity") is not None and loaded.identity != tuple(state["identity"]):
            loaded.close()
            raise RunError(f"{state['path']}: the slide index changed while this run was using it (rebuilt or "
                           "replaced); restart the run to use the new one")  # fmt: skip
        self.__dict__.update(loaded.__dict__)

    def mask_dataset(self) -> Any:
        """The masks dataset of the file the columns came from (opened again if the index was closed; a file
        replaced since is refused)."""
        import h5py

        if self._file is None:  # closed: open the file again, if it is still the one the columns came from
            self._file = h5py.File(self.path, "r")
            identity = _identity(os.fstat(self._file.id.get_vfd_handle()))
            if self.identity not in (None, identity):
                self.close()
                raise RunError(f"{self.path}: the slide index changed since it was loaded (rebuilt or "
                               "replaced); load it again")  # fmt: skip
            self.identity = identity
        if self._mask_data is None:
            self._mask_data = self._file["masks"]  # looking a dataset up costs more than reading a mask
        return self._mask_data

    def packed_mask(self, row: int) -> np.ndarray:
        """The bit-packed tissue mask of the slide in file row ``row``; a damaged one names the index."""
        start, stop = int(self.columns["mask_start"][row]), int(self.columns["mask_start"][row + 1])
        try:
            return self.mask_dataset()[start:stop]
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


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one index file from another at the same path: device, inode, size, modification time."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == HDF5_SIGNATURE


def is_index_file(path: Path) -> bool | None:
    """True for a gapless index, False for any other file, None for an HDF5 file too damaged to tell."""
    if not _is_hdf5(path):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except Exception:
        return None
