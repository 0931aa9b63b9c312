"""What users point gapless at: slide files and folders, and the labels CSV that goes with them.

- :func:`find_slides`: the slides among files and folders: files by suffix (folders searched recursively), and
  DICOM slides, one per folder of ``.dcm`` instances (or a folder given directly whose files are DICOM).
- :func:`slide_stat`: (size, modification time) of a slide file or DICOM folder, to notice changed slides.
- :func:`read_labels`: ``labels.csv`` with columns ``slide``, ``label`` and optionally ``patient`` and ``mpp``,
  keyed by the ``slide`` column, which may hold a path, a file name or a file stem (:func:`label_row` tries each).
  Conflicting rows for one slide, a non-numeric mpp and a file that is not UTF-8 text are errors.

Every problem is an :class:`~gapless.errors.InputError` naming the file (and the line, where there is one).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from gapless.errors import InputError
from gapless.pipeline.slides.dicom import dicom_files

# Whole-slide image formats by file suffix (OpenSlide's and cuCIM's; TIFF-based ones included).
SLIDE_SUFFIXES = frozenset(
    {".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff"}
)
DICOM_SUFFIX = ".dcm"
_LABEL_FIELDS = ("label", "patient", "mpp")


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        root_path = Path(root)
        if any(name.lower().endswith(DICOM_SUFFIX) for name in files):
            found.append(root_path)  # a DICOM slide: the folder of its instances
        found.extend(root_path / name for name in files if Path(name).suffix.lower() in SLIDE_SUFFIXES)
    return found


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slides among ``inputs``: files as given (a DICOM file stands for its folder), folders searched recursively;
    sorted, resolved."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            slides = _walk(path)
            found.extend(slides if slides or not dicom_files(path) else [path])
        elif path.is_file():
            found.append(path.parent if path.suffix.lower() == DICOM_SUFFIX else path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return sorted({p.resolve() for p in found})


def slide_stat(path: Path) -> tuple[int, float]:
    """(bytes, latest modification time) of a slide file, or of a DICOM folder and its instances."""
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime
    stats = [p.stat() for p in dicom_files(path)]
    return sum(s.st_size for s in stats), max([path.stat().st_mtime] + [s.st_mtime for s in stats])


def read_csv_table(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header, keys and values stripped; a missing, unreadable or non-UTF-8 file or a missing
    column names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise InputError(
                    f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})"
                )
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def read_labels(path: str | Path) -> dict[str, dict[str, str]]:
    """labels.csv (columns slide, label, optional patient and mpp) keyed by the ``slide`` column.

    Rows repeating a slide with the same values are merged; rows that disagree are an error naming both lines."""
    labels: dict[str, dict[str, str]] = {}
    lines: dict[str, int] = {}
    for line, row in enumerate(read_csv_table(path, ("slide", "label")), start=2):
        slide = row["slide"]
        if not slide:
            continue
        if row.get("mpp"):
            try:
                float(row["mpp"])
            except ValueError:
                raise InputError(f"{path}: line {line}: mpp '{row['mpp']}' of {slide} is not a number") from None
        if slide in labels and _values(labels[slide]) != _values(row):
            raise InputError(
                f"{path}: lines {lines[slide]} and {line} give {slide} different values "
                f"({_describe(labels[slide])} vs {_describe(row)}); keep one"
            )
        labels.setdefault(slide, row)
        lines.setdefault(slide, line)
    return labels


def _values(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row.get(k, "") for k in _LABEL_FIELDS)


def _describe(row: dict[str, str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in _LABEL_FIELDS if row.get(k))


def label_row(labels: dict[str, dict[str, str]], slide: str | Path) -> dict[str, str]:
    """The labels row of ``slide``, found by its full path, file name or stem; empty when it has none. Two rows
    that name the same slide differently (a name and a stem) must agree."""
    slide = Path(slide)
    keys = [key for key in dict.fromkeys((str(slide), slide.name, slide.stem)) if key in labels]
    if not keys:
        return {}
    first = labels[keys[0]]
    for key in keys[1:]:
        if _values(labels[key]) != _values(first):
            raise InputError(
                f"{slide}: the labels rows '{keys[0]}' and '{key}' both name this slide, with different values "
                f"({_describe(first)} vs {_describe(labels[key])}); keep one"
            )
    return first
