"""Building the slide index (``gapless index``): parallel over slides, incremental, never aborting on bad files.

Each slide is opened, its geometry and mpp recorded and its tissue mask computed in a worker process. A slide
that cannot be read, has no usable mpp or shows no tissue is recorded with its reason and reported in the
summary; the run goes on. Files whose size and modification time match the previous index are not reopened.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.cli import UserError
from pipeline.slides.index import SlideIndex, write_index
from pipeline.slides.tissue import MASK_MPP

SLIDE_SUFFIXES = {".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".qptiff"}


@dataclass
class IndexSummary:
    total: int
    indexed: int  # opened and processed in this run
    reused: int  # unchanged since the previous index
    usable: int
    failed: list[tuple[str, str, str]]  # (path, status, reason)


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Slide files among ``inputs``: files as given, directories searched recursively by suffix."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    return sorted({p.resolve() for p in found})


def read_labels(path: str | Path) -> dict[str, dict[str, str]]:
    """labels.csv (columns slide, label, optional patient and mpp) keyed by the ``slide`` column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: labels file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"slide", "label"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(f"{path}: labels file lacks column(s) {', '.join(sorted(missing))}")
        return {row["slide"].strip(): row for row in reader}


def _label_for(slide: Path, labels: dict[str, dict[str, str]]) -> dict[str, str]:
    for key in (str(slide), slide.name, slide.stem):
        if key in labels:
            return labels[key]
    return {}


def index_slide(path: str, mpp: float | None, mask_mpp: float) -> dict[str, Any]:
    """Index one slide (runs in a worker): geometry, mpps and the bit-packed tissue mask, or a failure reason."""
    from pipeline.slides.slide import open_slide
    from pipeline.slides.tissue import tissue_mask_for_slide

    stat = Path(path).stat()
    entry: dict[str, Any] = {"path": path, "size": stat.st_size, "mtime": stat.st_mtime}
    try:
        with open_slide(path, mpp=mpp) as slide:
            mask = tissue_mask_for_slide(slide, mask_mpp)
            entry.update(
                mpp=slide.mpp,
                levels=[(lv.width, lv.height, lv.downsample, lv.mpp) for lv in slide.levels],
                mask=np.packbits(mask.mask),
                mask_shape=mask.mask.shape,
                mask_mpp=mask.mask_mpp,
                tissue_fraction=mask.tissue_fraction,
            )
        entry["status"] = "ok" if mask.tissue_fraction > 0 else "no_tissue"
        entry["reason"] = "" if entry["status"] == "ok" else "no tissue detected"
    except Exception as exc:  # bulk work: record and go on
        entry.update(status="failed", reason=str(exc).removeprefix(f"{path}: ") or type(exc).__name__)
    return entry


def _previous_entries(out: Path) -> dict[str, dict[str, Any]]:
    if not out.is_file():
        return {}
    try:
        old = SlideIndex.load(out)
    except UserError:
        return {}
    cols, entries = old.columns, {}
    for row, path in enumerate(cols["path"]):
        start, stop = cols["level_start"][row], cols["level_start"][row + 1]
        entries[path] = {
            **{k: cols[k][row] for k in ("path", "status", "reason", "size", "mtime", "mpp", "tissue_fraction")},
            "mask_mpp": cols["mask_mpp"][row],
            "mask_shape": tuple(cols["mask_shape"][row]),
            "levels": [
                tuple(cols[k][i] for k in ("level_width", "level_height", "level_downsample", "level_mpp"))
                for i in range(start, stop)
            ],  # fmt: skip
            "mask": old.packed_mask(row),
        }
    return entries


def build_index(
    inputs: Sequence[str | Path],
    out: str | Path,
    labels_csv: str | Path | None = None,
    workers: int = 1,
    mpp: float | None = None,
    mask_mpp: float = MASK_MPP,
    on_progress: Callable[[int, int], None] | None = None,
) -> IndexSummary:
    """Index ``inputs`` into ``out``; unchanged files are taken from the previous ``out`` when it exists."""
    out = Path(out)
    slides = find_slides(inputs)
    labels = read_labels(labels_csv) if labels_csv else {}
    previous = _previous_entries(out)
    entries: dict[str, dict[str, Any]] = {}
    todo: list[tuple[str, float | None]] = []
    for slide in slides:
        row = _label_for(slide, labels)
        override = float(row["mpp"]) if row.get("mpp") else mpp
        old = previous.get(str(slide))
        stat = slide.stat()
        if old is not None and old["size"] == stat.st_size and old["mtime"] == stat.st_mtime:
            entries[str(slide)] = old
        else:
            todo.append((str(slide), override))
    done = 0
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(index_slide, p, m, mask_mpp) for p, m in todo]
            for future in as_completed(futures):
                entry = future.result()
                entries[entry["path"]] = entry
                done += 1
                if on_progress:
                    on_progress(done, len(todo))
    else:
        for p, m in todo:
            entries[p] = index_slide(p, m, mask_mpp)
            done += 1
            if on_progress:
                on_progress(done, len(todo))
    ordered = [entries[str(s)] for s in slides]
    for entry in ordered:
        row = _label_for(Path(entry["path"]), labels)
        entry["label"], entry["patient"] = row.get("label", ""), row.get("patient", "") or ""
    write_index(out, ordered, mask_mpp)
    failed = [(e["path"], e["status"], e["reason"]) for e in ordered if e["status"] != "ok"]
    return IndexSummary(len(ordered), len(todo), len(ordered) - len(todo), len(ordered) - len(failed), failed)
