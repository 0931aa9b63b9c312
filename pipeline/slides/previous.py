"""What a re-index can take from the previous index at ``--out``: its entries, with damaged records marked.

An index that cannot be loaded at all (a dataset missing, columns of the wrong length) gives nothing, and every
slide is read again; one whose tissue masks are partly damaged (a chunk fails its checksum) gives everything else,
and only the slides whose masks lay in the damaged chunks are read again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.index import SlideIndex
from gapless.pipeline.slides.index_file import LEVELS, SCALARS, STATUSES, STRINGS

_BLOCK_CHUNKS = 64


def damaged_mask_rows(index: SlideIndex) -> np.ndarray:
    """Rows whose tissue mask lies (partly) in a chunk of the masks dataset that cannot be read (read through the
    index's own open file)."""
    starts = np.asarray(index.columns["mask_start"])
    bad: list[tuple[int, int]] = []
    try:
        masks = index.mask_dataset()
    except (OSError, KeyError) as exc:
        raise InputError(f"{index.path}: the tissue masks cannot be read ({str(exc).splitlines()[0]})") from exc
    chunk = masks.chunks[0] if masks.chunks else max(masks.shape[0], 1)
    block = chunk * _BLOCK_CHUNKS
    for start in range(0, masks.shape[0], block):
        try:
            masks[start : start + block]
        except OSError:
            for first in range(start, min(start + block, masks.shape[0]), chunk):
                try:
                    masks[first : first + chunk]
                except OSError:
                    bad.append((first, first + chunk))
    rows = [np.flatnonzero((starts[:-1] < stop) & (starts[1:] > begin)) for begin, stop in bad]
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def index_entries(index: SlideIndex, damaged: set[int] = frozenset()) -> dict[str, dict[str, Any]]:
    """Every row of an index as an entry (as the indexer makes them) by path; masks stay in the file
    (``mask_ref`` ("index", row)); rows in ``damaged`` are marked."""
    cols, n = index.columns, len(index.columns["status"])
    strings = {name: cols[name].tolist() for name in STRINGS}
    numbers = {key: np.asarray(cols[key]).tolist() for key in (*SCALARS, *LEVELS, "level_start", "mask_shape")}
    status = np.asarray(cols["status"]).tolist()
    entries = {}
    for row in range(n):
        start, stop = numbers["level_start"][row], numbers["level_start"][row + 1]
        entry = {name: strings[name][row] for name in STRINGS}
        entry.update({key: numbers[key][row] for key in SCALARS})
        entry.update(
            status=STATUSES[status[row]],
            levels=[tuple(numbers[k][i] for k in LEVELS) for i in range(start, stop)],
            mask_shape=tuple(numbers["mask_shape"][row]),
            mask_ref=("index", row),
            damaged=row in damaged,
        )
        entries[entry["path"]] = entry
    return entries


def previous_entries(out: Path) -> tuple[dict[str, dict[str, Any]], SlideIndex | None, str]:
    """(entries by path, the open previous index, what was wrong with it or "") of the index at ``out``."""
    if not out.is_file():
        return {}, None, ""
    try:
        index = SlideIndex.load(out)
        damaged = set(damaged_mask_rows(index).tolist())
    except InputError as exc:
        return {}, None, f"{exc}: every slide is read again"
    problem = f"{len(damaged)} slide record(s) of {out} damaged: read again" if damaged else ""
    return index_entries(index, damaged), index, problem
