"""Build a multi-scale benchmark set: the same tissue at every evaluation mpp (``gapless bench-set``).

Each region is centred on tissue, read once from the finest level at the coarsest mpp's footprint
(``224 · max(mpps) / base_mpp`` px), and every tile is a centre crop of ``224 · mpp / base_mpp`` px of it, shrunk to
224 px with antialiasing in steps of at most 2x (:mod:`eval.resize`). So row ``i`` of every mpp shows the same
tissue, only at another magnification (as the paper's BRACS-MS tiles were made).

Sources: slides (files, folders of slides, or a slide index ``.h5``) with labels from a CSV ``slide,label,patient``;
or labelled region images listed in a CSV ``path,label,patient,mpp`` (a folder holding ``regions.csv`` works too),
one region per image, dropped when smaller than the coarsest footprint. Unusable items are skipped and counted.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.folds import assign_folds
from eval.resize import crop_side, multiscale_tiles
from eval.setfile import SetWriter
from gapless.cli import UserError

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms")


@dataclass
class Region:
    """A labelled region: its pixels at ``base_mpp`` (square, centred on the region centre)."""

    pixels: np.ndarray
    slide: str
    patient: str
    label: str
    centre: tuple[float, float]
    base_mpp: float


@dataclass
class BuildStats:
    regions: int = 0
    skipped: Counter = field(default_factory=Counter)


def read_csv_table(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header; a missing file or column is a :class:`UserError` naming it."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'})")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def load_labels(path: Path) -> dict[str, tuple[str, str]]:
    """``slide -> (label, patient)`` from a CSV ``slide,label[,patient]``; slide may be a path, file name or stem."""
    table = {}
    for row in read_csv_table(path, ("slide", "label")):
        if not row["slide"] or not row["label"]:
            continue
        table[row["slide"]] = (row["label"], row.get("patient") or row["slide"])
    if not table:
        raise UserError(f"{path}: no labelled slides")
    return table


def lookup_label(labels: dict[str, tuple[str, str]], slide_path: str) -> tuple[str, str] | None:
    p = Path(slide_path)
    for key in (str(slide_path), p.name, p.stem):
        if key in labels:
            return labels[key]
    return None


def region_images(
    table_path: Path, mpps: list[float], tile_px: int, stats: BuildStats, progress=None
) -> Iterator[Region]:
    """Regions from labelled images listed in ``path,label,patient,mpp`` (paths relative to the CSV)."""
    import cv2

    rows = read_csv_table(table_path, ("path", "label", "mpp"))
    task = progress.add_task("region images", total=len(rows)) if progress else None
    for row in rows:
        if progress:
            progress.advance(task)
        path = (table_path.parent / row["path"]).resolve()
        try:
            base_mpp = float(row["mpp"])
        except ValueError:
            stats.skipped["bad mpp value"] += 1
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            stats.skipped["unreadable image"] += 1
            continue
        if crop_side(min(mpps), base_mpp, tile_px) < tile_px:
            stats.skipped["image coarser than the finest mpp"] += 1
            continue
        side = crop_side(max(mpps), base_mpp, tile_px)
        h, w = image.shape[:2]
        if min(h, w) < side:
            stats.skipped["region too small for the coarsest mpp"] += 1
            continue
        top, left = (h - side) // 2, (w - side) // 2
        pixels = cv2.cvtColor(image[top : top + side, left : left + side], cv2.COLOR_BGR2RGB)
        yield Region(
            pixels, str(row["path"]), row.get("patient") or row["path"], row["label"], (w / 2, h / 2), base_mpp
        )


def build_set(
    inputs: list[str],
    out: str | Path,
    labels_csv: str | None = None,
    mpps: list[float] | None = None,
    regions_per_slide: int = 16,
    n_folds: int = 5,
    seed: int = 0,
    tile_px: int = 224,
    tissue_threshold: float = 0.5,
    slide_mpp: float | None = None,
    progress=None,
) -> tuple[Path, BuildStats]:
    """Write the set; returns its path and the counts of regions written and items skipped (by reason)."""
    from eval.config import EVAL_MPPS

    mpps = sorted(mpps or EVAL_MPPS)
    stats = BuildStats()
    sources: list[Iterator[Region]] = []
    slide_inputs = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() == ".csv":
            sources.append(region_images(path, mpps, tile_px, stats, progress))
        elif path.is_dir() and (path / "regions.csv").is_file():
            sources.append(region_images(path / "regions.csv", mpps, tile_px, stats, progress))
        else:
            slide_inputs.append(path)
    if slide_inputs:
        from eval.slide_regions import slide_regions

        labels = load_labels(Path(labels_csv)) if labels_csv else None
        sources.append(
            slide_regions(
                slide_inputs,
                labels,
                mpps,
                regions_per_slide,
                seed,
                tile_px,
                tissue_threshold,
                slide_mpp,
                stats,
                progress,
            )
        )
    writer = SetWriter(out, mpps, tile_px)
    try:
        for source in sources:
            for region in source:
                writer.add(
                    multiscale_tiles(region.pixels, mpps, region.base_mpp, tile_px),
                    region.slide,
                    region.patient,
                    region.label,
                    region.centre,
                    region.base_mpp,
                )
                stats.regions += 1
        if not writer.rows:
            reasons = ", ".join(f"{n} {why}" for why, n in stats.skipped.items()) or "no inputs"
            raise UserError(f"no labelled regions could be made from {', '.join(inputs)} ({reasons})")
        label_names = [r[2] for r in writer.rows]
        patients = [r[1] for r in writer.rows]
        classes = sorted(set(label_names))
        codes = np.array([classes.index(c) for c in label_names])
        try:
            folds = assign_folds(codes, np.array(patients), n_folds, seed)
        except ValueError as exc:
            raise UserError(f"{out}: cannot split {len(set(patients))} patients into folds: {exc}") from exc
        return writer.close(folds, classes, n_folds, seed), stats
    except BaseException:
        writer.abort()
        raise
