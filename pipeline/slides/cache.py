"""A bounded, per-process LRU cache of open slide handles.

Native handles (cuCIM's ``CuImage``, OpenSlide) cannot be pickled, and opening thousands of slides without closing
them grows memory without bound. The cache opens slides lazily on first use, closes the least recently used one
beyond ``max_open``, and pickles as an empty cache: each worker process fills its own. A slide is opened for the
device its regions are decoded on (``get(..., device=)``, :func:`~gapless.pipeline.slides.slide.open_slide`): the
host reads of a JPEG pyramid go to the reader that decodes each tile once, GPU reads to cuCIM.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from gapless.pipeline.slides.slide import Slide, open_slide


class SlideCache:
    """``cache.get(path)`` returns an open :class:`Slide`, opening it if needed; at most ``max_open`` stay open."""

    def __init__(self, max_open: int = 32, backend: str = "auto") -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.max_open = max_open
        self.backend = backend
        self._open: OrderedDict[tuple[str, float | None, str], Slide] = OrderedDict()
        self.opened = 0  # total opens, for tests and statistics

    def get(self, path: str | Path, mpp: float | None = None, device: str = "cpu") -> Slide:
        """The open slide at ``path`` for regions decoded on ``device`` ("cpu" or "cuda")."""
        key = (str(path), mpp, device)
        slide = self._open.get(key)
        if slide is not None:
            self._open.move_to_end(key)
            return slide
        slide = open_slide(path, mpp=mpp, backend=self.backend, device=device)
        self.opened += 1
        self._open[key] = slide
        while len(self._open) > self.max_open:
            _, evicted = self._open.popitem(last=False)
            evicted.close()
        return slide

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, path: object) -> bool:
        return any(key[0] == str(path) for key in self._open)

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __getstate__(self) -> dict[str, Any]:
        return {"max_open": self.max_open, "backend": self.backend}  # handles are per process: never pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_open"], state["backend"])

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
