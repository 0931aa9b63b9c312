"""The slides a tile source draws from, as a sequence over the slide index rather than a Python object per slide.

An index can hold hundreds of thousands of slides, and the tile source is pickled into every loader worker. A list
of :class:`~gapless.pipeline.source.SlideEntry` objects (each with its tuple of pyramid levels) costs every process
a few hundred bytes per slide and a long unpickling; :class:`SlideTable` holds the index (pickled as its path:
each process maps it itself) and one integer per readable slide, and makes an entry when the source asks for one.
``table[i] = entry`` replaces an entry in this process (tests put a damaged copy of a slide in its place).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gapless.pipeline.source import SlideEntry


class SlideTable(Sequence):
    """``table[i]``: the :class:`SlideEntry` of record ``positions[i]`` of ``index.records``."""

    def __init__(self, index: Any, positions: Sequence[int] | np.ndarray) -> None:
        self.index = index
        self.positions = np.asarray(positions, dtype=np.int64)
        self._replaced: dict[int, SlideEntry] = {}

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i) + (len(self) if int(i) < 0 else 0)
        if i in self._replaced:
            return self._replaced[i]
        record = self.index.records[int(self.positions[i])]
        return SlideEntry(str(record.path), tuple(record.levels), float(record.mpp), None, int(record.row))

    def __setitem__(self, i: int, entry: SlideEntry) -> None:
        self._replaced[int(i)] = entry

    def __iter__(self) -> Iterator[SlideEntry]:
        return (self[i] for i in range(len(self)))
