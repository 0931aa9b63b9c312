"""Console output shared by every command: a rich console (on stderr), progress bars and tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# stderr, so that stdout stays clean for anything a user pipes.
console = Console(stderr=True)


def end_interrupted_output() -> None:
    """Flush what an exception left half-written (a signal that lands while a progress bar renders leaves the
    console buffering), and start a new line, so that the next message stands on a line of its own. This relies on
    rich's internals (its buffer depth and flush); a rich without them is left as it is."""
    try:
        if not console._buffer_index:
            return
        console._buffer_index = 0
        console._check_buffer()
    except AttributeError:
        return
    console.line()


def progress(transient: bool = False) -> Progress:
    """A progress bar with counts and times; use as a context manager."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table; floats are shown with 4 significant digits."""
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(_fmt(v) for v in row))
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
