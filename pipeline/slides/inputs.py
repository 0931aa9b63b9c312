"""What users point gapless at: slide files and folders, and the labels CSV that goes with them.

- :func:`find_slides`: the slide files among files and folders (searched recursively, by suffix).
- :func:`read_labels`: ``labels.csv`` with columns ``slide``, ``label`` and optionally ``patient`` and ``mpp``,
  keyed by the ``slide`` column, which may hold a path, a file name or a file stem (:func:`label_row` tries each).

Every problem is an :class:`~gapless.errors.InputError` naming the file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from gapless.errors import InputError

# Whole-slide image formats by file suffix (OpenSlide's and cuCIM's; TIFF-based ones included).
SLIDE_SUFFIXES = frozenset(
    {".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff"}
)


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slide files among ``inputs``: files as given, folders searched recursively by suffix; sorted, resolved."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return sorted({p.resolve() for p in found})


def read_csv_table(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header, keys and values stripped; a missing file or column names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def read_labels(path: str | Path) -> dict[str, dict[str, str]]:
    """labels.csv (columns slide, label, optional patient and mpp) keyed by the ``slide`` column."""
    return {row["slide"]: row for row in read_csv_table(path, ("slide", "label")) if row["slide"]}


def label_row(labels: dict[str, dict[str, str]], slide: str | Path) -> dict[str, str]:
    """The labels row of ``slide``, found by its full path, file name or stem; empty when it has none."""
    slide = Path(slide)
    for key in (str(slide), slide.name, slide.stem):
        if key in labels:
            return labels[key]
    return {}
