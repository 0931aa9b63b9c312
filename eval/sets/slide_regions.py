"""Labelled regions sampled from slides for an evaluation set.

Per slide, region centres are drawn on tissue with the slide's :class:`~gapless.pipeline.slides.TissueMask` so that the
*coarsest* footprint (``tile_px · max(mpps)`` microns square) is at least ``tissue_threshold`` tissue; regions of one
slide do not overlap (a centre closer than one footprint to an earlier one is redrawn). Each region is read once from
the finest level (level 0) at that footprint, and every tile is cut from it
(:func:`gapless.eval.sets.tiles.multiscale_tiles`). Slides without a label, whose finest level is coarser than the
finest evaluation mpp, or that are too small for the coarsest footprint are skipped and counted; a slide that cannot be
opened is skipped and counted too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gapless.errors import InputError
from gapless.eval.sets.regions import BuildStats, Region
from gapless.eval.sets.tiles import crop_side
from gapless.pipeline.slides.inputs import find_slides, label_row
from gapless.pipeline.slides.planning import region_origin
from gapless.seeding import generator

TRIES_PER_REGION = 20


def _slide_records(inputs: list[Path], labels: dict | None) -> list[tuple[str, str, str, Any, float | None]]:
    """(path, label, patient, tissue-mask getter or None, mpp or None) for every slide named by the inputs.

    An index brings its labels, patients, mpps and tissue masks; ``--labels`` overrides its labels.
    """
    from gapless.pipeline.slides import SlideIndex

    records = []
    for item in inputs:
        if item.suffix.lower() == ".h5":
            for rec in SlideIndex.load(item).records:
                found = _label(labels, rec.path) if labels else None
                label, patient = found or (rec.label, rec.patient)
                records.append((str(rec.path), label, patient or Path(rec.path).name, rec.tissue_mask, rec.mpp))
        elif item.is_dir():
            paths = find_slides([item])
            if not paths:
                raise InputError(f"{item}: no slides in this folder")
            records.extend(_labelled(p, labels) for p in paths)
        elif item.is_file():
            records.append(_labelled(item, labels))
        else:
            raise InputError(f"{item}: no such slide, folder or index")
    return records


def _labelled(path: Path, labels: dict | None) -> tuple[str, str, str, Any, float | None]:
    if labels is None:
        raise InputError(f"{path}: slides need labels: pass --labels labels.csv (columns slide,label,patient)")
    label, patient = _label(labels, path) or ("", "")
    return str(path), label, patient, None, None


def _label(labels: dict, path: str | Path) -> tuple[str, str] | None:
    """(label, patient) of a slide from its labels row (the patient defaults to the row's slide name)."""
    row = label_row(labels, path)
    return (row["label"], row.get("patient") or row["slide"]) if row.get("label") else None


def slide_regions(
    inputs: list[Path],
    labels: dict | None,
    mpps: list[float],
    regions_per_slide: int,
    seed: int,
    tile_px: int,
    tissue_threshold: float,
    slide_mpp: float | None,
    stats: BuildStats,
    progress=None,
) -> Iterator[Region]:
    from gapless.pipeline.slides import open_slide, tissue_mask_for_slide

    records = _slide_records(inputs, labels)
    task = progress.add_task("regions", total=len(records) * regions_per_slide) if progress else None
    side_um = tile_px * max(mpps)
    for i, (path, label, patient, mask_getter, indexed_mpp) in enumerate(records):
        if not label:
            stats.skipped["slide without a label"] += 1
            continue
        try:
            slide = open_slide(path, mpp=slide_mpp or indexed_mpp)
        except InputError:
            stats.skipped["unreadable slide"] += 1
            continue
        with slide:
            base = min(slide.levels, key=lambda lv: lv.mpp)
            if crop_side(min(mpps), base.mpp, tile_px) < tile_px:
                stats.skipped["slide coarser than the finest mpp"] += 1
                continue
            side = crop_side(max(mpps), base.mpp, tile_px)
            if side > min(base.width, base.height):
                stats.skipped["slide smaller than the coarsest footprint"] += 1
                continue
            mask = mask_getter() if mask_getter is not None else tissue_mask_for_slide(slide)
            rng = generator(seed, i)
            for region in _sample(slide, base, mask, rng, side, side_um, tissue_threshold, regions_per_slide, stats):
                yield Region(region[0], Path(path).name, patient, label, region[1], base.mpp)
                if progress:
                    progress.advance(task)
        if progress:  # regions a slide could not give still count as done
            progress.update(task, completed=(i + 1) * regions_per_slide)


def _sample(slide, base, mask, rng, side: int, side_um: float, threshold: float, n: int, stats: BuildStats):
    """Up to ``n`` non-overlapping regions of ``side`` px at level ``base``: (pixels, centre in level-0 px)."""
    corners: list[tuple[int, int]] = []
    for _ in range(n * TRIES_PER_REGION):
        if len(corners) == n:
            return
        centre = mask.sample_center(rng, side_um, threshold, 64, base_mpp=base.mpp)
        if centre is None:
            continue
        ds = base.downsample
        lx, ly = region_origin(centre, side, base)  # inside the level, as the training pipeline plans regions
        if any(abs(lx - x) < side and abs(ly - y) < side for x, y in corners):
            continue
        try:
            pixels = slide.read_region((round(lx * ds), round(ly * ds)), base.index, (side, side))
        except InputError:
            stats.skipped["unreadable region"] += 1
            continue
        corners.append((lx, ly))
        yield np.asarray(pixels), ((lx + side / 2) * ds, (ly + side / 2) * ds)
    stats.skipped["region without tissue room"] += n - len(corners)
