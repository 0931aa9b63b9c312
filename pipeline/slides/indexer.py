"""Building the slide index (``gapless index``): parallel, incremental, resumable, shardable, never losing data.

- Each slide is opened, its geometry and mpp recorded and its tissue mask computed in a worker process (workers die
  with the parent, :mod:`gapless.workers`). A slide that cannot be read, has no usable mpp or shows
  no tissue is recorded with its reason and reported; the run goes on.
- A slide is read again only when its file changed (size, modification time), a setting that shapes its record
  changed (``--mpp``, its labels ``mpp``, ``--mask-mpp``) or its record in the previous index is damaged.
- Every slide read is appended to a journal at once (:mod:`gapless.pipeline.slides.journal`): a killed run resumes.
- Nothing the user did not ask to drop is lost: slides of the previous index that are not among the inputs are
  kept (``prune=True`` drops them), and without a labels file the stored labels are kept (with neither a labels
  file nor ``--mpp``, each slide's mpp override as stored, too).
- ``shard=(i, n)`` indexes the slides whose path hashes to part ``i`` of ``n``
  (:func:`gapless.pipeline.slides.merge.merge_indexes` joins the parts).
- ``--out`` is checked before any work: it must be writable and, if it exists, a gapless index.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.pipeline.slides.index import is_index_file
from gapless.pipeline.slides.index_file import write_index
from gapless.pipeline.slides.inputs import find_slides, label_row, read_labels, slide_stat
from gapless.pipeline.slides.journal import Journal
from gapless.pipeline.slides.labelling import apply_labels
from gapless.pipeline.slides.previous import previous_entries
from gapless.pipeline.slides.tissue import MASK_MPP


@dataclass
class IndexSummary:
    total: int  # slides in the index written
    indexed: int  # read in this run
    reused: int  # unchanged, taken from the previous index or from the journal of an interrupted run
    usable: int
    failed: list[tuple[str, str, str]]  # (path, status, reason)
    resumed: int = 0  # of the reused: from the journal of an interrupted run
    reasons: dict[str, int] = field(default_factory=dict)  # why slides were read: new, changed file, ...
    kept: list[str] = field(default_factory=list)  # in the previous index, not among the inputs: kept
    pruned: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # slides without a row in the labels file
    unmatched_rows: list[str] = field(default_factory=list)  # labels rows that name no slide
    labels_changed: int = 0
    previous_problem: str = ""  # why (part of) the previous index could not be reused


def index_slide(path: str, mpp: float | None, mask_mpp: float) -> dict[str, Any]:
    """Index one slide (runs in a worker): geometry, mpps and the bit-packed tissue mask, or a failure reason."""
    from gapless.pipeline.slides.slide import open_slide
    from gapless.pipeline.slides.tissue import tissue_mask_for_slide

    size, mtime = slide_stat(Path(path))
    entry: dict[str, Any] = {"path": path, "size": size, "mtime": mtime, "mask_mpp_setting": mask_mpp,
                             "mpp_override": math.nan if mpp is None else mpp}  # fmt: skip
    try:
        with open_slide(path, mpp=mpp) as slide:
            entry["format"] = slide.format
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


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; anything else is an InputError."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard: '{text}' is not I/N (e.g. 0/8 for the first of eight parts)") from None
    if not 0 <= i < n:
        raise InputError(f"--shard: part {i} of {n} does not exist (parts are numbered 0 to {n - 1})")
    return i, n


def in_shard(path: Path, shard: tuple[int, int]) -> bool:
    """Whether a slide belongs to part ``shard[0]`` of ``shard[1]``: by a hash of its path, so every part sees the
    same split whatever else is in the folders."""
    return zlib.crc32(str(path).encode()) % shard[1] == shard[0]


def check_output(out: Path) -> None:
    """Refuse an ``--out`` that exists and is not a gapless index, or is a folder (before any work is done)."""
    if out.is_dir():
        raise InputError(f"{out}: is a folder; --out takes the index file name (e.g. {out / 'index.h5'})")
    if out.exists():
        kind = is_index_file(out)
        if kind is False:
            raise InputError(f"{out}: exists and is not a gapless slide index; choose another --out (nothing written)")
        if kind is None:
            raise InputError(f"{out}: an HDF5 file too damaged to tell whether it is a slide index; remove it or "
                             "choose another --out (nothing written)")  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9)


def _why_read(old: dict[str, Any] | None, size: int, mtime: float, override: float | None, mask_mpp: float) -> str:
    """Why a slide must be read (new, changed file, changed settings, damaged record), or "" when it need not."""
    if old is None:
        return "new"
    if old.get("damaged"):
        return "damaged record"
    if int(old["size"]) != size or not _same(old["mtime"], mtime):
        return "changed file"
    if not _same(old["mpp_override"], math.nan if override is None else override):
        return "changed mpp"
    if not _same(old["mask_mpp_setting"], mask_mpp):
        return "changed mask mpp"
    return ""


def _stored_override(entries: list[dict[str, Any]]) -> float | None:
    """The mpp override a slide was indexed with (from ``--mpp`` or its labels ``mpp``), or None."""
    for entry in entries:
        value = float(entry.get("mpp_override", math.nan))
        if not math.isnan(value):
            return value
    return None


def _kept(entry: dict[str, Any]) -> dict[str, Any]:
    """A previous entry kept though its slide is not among the inputs; a damaged one keeps only its name."""
    if not entry.get("damaged"):
        return entry
    reason = "its record in the previous index was damaged and the slide was not among the inputs to read again"
    return {**entry, "status": "failed", "reason": reason, "mask_ref": None, "levels": [], "mask_shape": (0, 0)}


def _read_slides(todo: list[tuple[str, float | None]], mask_mpp: float, workers: int, journal: Journal,
                 on_progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:  # fmt: skip
    """Index the slides of ``todo`` (in workers when more than one), journaling each as it is done."""
    done: list[dict[str, Any]] = []

    def record(entry: dict[str, Any]) -> None:
        entry["mask_ref"] = journal.append(entry, entry.pop("mask", None))
        done.append(entry)
        if on_progress:
            on_progress(len(done), len(todo))

    if workers > 1 and len(todo) > 1:
        from gapless.workers import worker_pool

        with worker_pool(min(workers, len(todo))) as pool:
            for future in as_completed([pool.submit(index_slide, p, m, mask_mpp) for p, m in todo]):
                record(future.result())
    else:
        for p, m in todo:
            record(index_slide(p, m, mask_mpp))
    return done


def build_index(
    inputs: Sequence[str | Path],
    out: str | Path,
    labels_csv: str | Path | None = None,
    workers: int = 1,
    mpp: float | None = None,
    mask_mpp: float = MASK_MPP,
    on_progress: Callable[[int, int], None] | None = None,
    shard: tuple[int, int] | None = None,
    prune: bool = False,
) -> IndexSummary:
    """Index ``inputs`` into ``out`` (see the module docstring for what is read again, kept and reported)."""
    out = Path(out)
    check_output(out)
    every_slide = find_slides(inputs)
    slides = [s for s in every_slide if shard is None or in_shard(s, shard)]
    labels = read_labels(labels_csv) if labels_csv else None
    if not every_slide and shard is None:
        names = ", ".join(map(str, inputs))
        raise InputError(f"{names}: no slides found (slide files by suffix, DICOM folders); nothing written")
    journal = Journal(out.with_name(out.name + ".journal"))
    old_index = None
    try:
        resumed = {e["path"]: e for e in journal.open()}  # also proves early that the folder takes files
        previous, old_index, problem = previous_entries(out)
        todo, entries, reasons, from_journal = [], {}, Counter(), 0
        for slide in slides:
            path = str(slide)
            row_mpp = label_row(labels, slide).get("mpp") if labels is not None else None
            override = float(row_mpp) if row_mpp else mpp
            size, mtime = slide_stat(slide)
            candidates = [e for e in (resumed.get(path), previous.get(path)) if e is not None]
            if labels is None and mpp is None:  # neither given: the stored override (a labels mpp) stays
                override = _stored_override(candidates)
            why = [_why_read(e, size, mtime, override, mask_mpp) for e in candidates] or ["new"]
            if "" in why:
                entries[path] = candidates[why.index("")]
                from_journal += entries[path] is resumed.get(path)
            else:
                todo.append((path, override))
                reasons[why[-1]] += 1
        for entry in _read_slides(todo, mask_mpp, workers, journal, on_progress):
            entries[entry["path"]] = entry
        found = set(entries)
        others = [p for p in previous if p not in found]
        if not prune:
            entries.update({p: _kept(previous[p]) for p in others})
        ordered = [entries[p] for p in sorted(entries)]
        report = apply_labels(ordered, labels, previous, found, [str(s) for s in every_slide])

        def mask_of(entry: dict[str, Any]) -> np.ndarray:
            ref = entry.get("mask_ref")
            if ref is None:
                return np.zeros(0, np.uint8)
            return journal.mask(ref) if ref[0] == "journal" else old_index.packed_mask(ref[1])

        settings = {"mpp": mpp, "mask_mpp": mask_mpp, "shard": f"{shard[0]}/{shard[1]}" if shard else None}
        write_index(out, ordered, settings, mask_of)
    finally:
        journal.close()
        if old_index is not None:
            old_index.close()
    journal.remove()
    failed = [(e["path"], e["status"], e["reason"]) for e in ordered if e["status"] != "ok"]
    return IndexSummary(
        len(ordered), len(todo), len(slides) - len(todo), len(ordered) - len(failed), failed, from_journal,
        dict(reasons), [] if prune else others, others if prune else [], report.unlabelled, report.unmatched_rows,
        report.changed, problem,
    )  # fmt: skip
