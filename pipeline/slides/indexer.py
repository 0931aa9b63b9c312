"""Building the slide index (``gapless index``): parallel over slides, incremental, never aborting on bad files.

Each slide is opened, its geometry and mpp recorded and its tissue mask computed in a worker process. A slide
that cannot be read, has no usable mpp or shows no tissue is recorded with its reason and reported in the
summary; the run goes on. Files whose size and modification time match the previous index are not reopened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.index import SlideIndex, write_index
from gapless.pipeline.slides.inputs import find_slides, label_row, read_labels
from gapless.pipeline.slides.tissue import MASK_MPP


@dataclass
class IndexSummary:
    total: int
    indexed: int  # opened and processed in this run
    reused: int  # unchanged since the previous index
    usable: int
    failed: list[tuple[str, str, str]]  # (path, status, reason)


def index_slide(path: str, mpp: float | None, mask_mpp: float) -> dict[str, Any]:
    """Index one slide (runs in a worker): geometry, mpps and the bit-packed tissue mask, or a failure reason."""
    from gapless.pipeline.slides.slide import open_slide
    from gapless.pipeline.slides.tissue import tissue_mask_for_slide

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
    except InputError:
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
        row = label_row(labels, slide)
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
        row = label_row(labels, entry["path"])
        entry["label"], entry["patient"] = row.get("label", ""), row.get("patient", "") or ""
    write_index(out, ordered, mask_mpp)
    failed = [(e["path"], e["status"], e["reason"]) for e in ordered if e["status"] != "ok"]
    return IndexSummary(len(ordered), len(todo), len(ordered) - len(todo), len(ordered) - len(failed), failed)
