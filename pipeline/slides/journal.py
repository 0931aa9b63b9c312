"""The indexing journal: every slide indexed is appended to ``<index>.journal`` as soon as it is done.

A run that is killed, preempted or runs out of disk leaves its journal behind, and re-running the same command
resumes from it: slides already in the journal (unchanged since) are not read again. The journal is removed once
the index is written. Each record is ``<meta length, mask length, CRC-32>`` followed by the entry as JSON and its
bit-packed tissue mask compressed with zlib; a record cut short by a kill fails its length or checksum and is
dropped, with everything after it, when the journal is reopened.

Masks stay on disk: the index is written by streaming them from here (and from the previous index), so indexing
200,000 slides never holds their masks in memory.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError

MAGIC = b"gapless-index-journal 1\n"
_HEADER = struct.Struct("<III")
_FSYNC_SECONDS = 10.0


def _space_error(path: Path, exc: OSError) -> InputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"{path}: cannot write ({exc.strerror}); free space and rerun the same command: it resumes "
                          "from the slides already indexed")  # fmt: skip
    return InputError(f"{path}: cannot write ({exc.strerror or exc}); choose another --out")


class Journal:
    """``Journal(path).open()`` returns the entries of an earlier run (each with ``mask_ref``) and appends after
    them; ``append(entry, mask)`` records one slide; ``mask(ref)`` reads a mask back; ``remove()`` ends it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._synced = time.monotonic()

    def open(self) -> list[dict[str, Any]]:
        """Open for appending (created if absent; raises InputError naming the path if it cannot be written)."""
        entries, end = self._scan() if self.path.is_file() else ([], 0)
        try:
            if end == 0:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(self._fd, MAGIC)
            else:
                self._fd = os.open(self.path, os.O_RDWR)
                os.ftruncate(self._fd, end)  # drop a record cut short by a kill
                os.lseek(self._fd, end, os.SEEK_SET)
        except OSError as exc:
            raise _space_error(self.path, exc) from exc
        return entries

    def _scan(self) -> tuple[list[dict[str, Any]], int]:
        """The intact records of an existing journal, and where they end (one record in memory at a time)."""
        entries: list[dict[str, Any]] = []
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                return [], 0
            pos = len(MAGIC)
            while len(header := f.read(_HEADER.size)) == _HEADER.size:
                meta_len, mask_len, crc = _HEADER.unpack(header)
                body = f.read(meta_len + mask_len)
                if len(body) != meta_len + mask_len or zlib.crc32(body) != crc:
                    break
                entry = json.loads(body[:meta_len])
                entry["mask_ref"] = ("journal", pos + _HEADER.size + meta_len, mask_len)
                entries.append(entry)
                pos += _HEADER.size + meta_len + mask_len
        return entries, pos

    def append(self, entry: dict[str, Any], mask: np.ndarray | None) -> tuple[str, int, int]:
        """Record one slide (``entry`` without its mask) and return the reference of its stored mask."""
        meta = json.dumps({k: v for k, v in entry.items() if k not in ("mask", "mask_ref")}).encode()
        packed = zlib.compress(np.asarray(mask if mask is not None else [], np.uint8).tobytes(), 1)
        body = meta + packed
        try:
            offset = os.lseek(self._fd, 0, os.SEEK_CUR)
            os.write(self._fd, _HEADER.pack(len(meta), len(packed), zlib.crc32(body)) + body)
            if time.monotonic() - self._synced > _FSYNC_SECONDS:
                os.fsync(self._fd)
                self._synced = time.monotonic()
        except OSError as exc:
            raise _space_error(self.path, exc) from exc
        return ("journal", offset + _HEADER.size + len(meta), len(packed))

    def mask(self, ref: tuple[str, int, int]) -> np.ndarray:
        _, offset, length = ref
        return np.frombuffer(zlib.decompress(os.pread(self._fd, length, offset)), np.uint8)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
