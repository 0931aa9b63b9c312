"""Build a multi-scale evaluation set: the same tissue at every evaluation mpp (``gapless eval-set``).

Each region is centred on tissue, read once from the finest level at the coarsest mpp's footprint
(``224 · max(mpps) / base_mpp`` px), and every tile is a centre crop of ``224 · mpp / base_mpp`` px of it, shrunk to
224 px in steps of at most 2x, by the paper's Gaussian-then-bicubic filter or by area averaging
(:mod:`gapless.eval.sets.tiles`). So row ``i`` of every mpp shows the same tissue, only at another magnification (as
the paper's BRACS-MS tiles were made).

Sources: slides (files, folders of slides, or a slide index ``.h5``) with labels from a CSV ``slide,label,patient``;
or labelled region images listed in a CSV ``path,label,patient,mpp`` (a folder holding ``regions.csv`` works too),
one region per image, dropped when smaller than the coarsest footprint. Unusable items are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gapless.errors import InputError
from gapless.eval.folds import assign_folds
from gapless.eval.sets.file import SetWriter, is_set_file
from gapless.eval.sets.regions import BuildStats, Region, region_images
from gapless.eval.sets.slide_regions import slide_regions
from gapless.eval.sets.tiles import RESAMPLINGS, multiscale_tiles
from gapless.io import replaceable_file
from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.pipeline.slides.inputs import read_labels


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
    resampling: str = "paper",
) -> tuple[Path, BuildStats]:
    """Write the set; returns its path and the counts of regions written and items skipped (by reason). An ``out``
    that is one of the inputs, the labels or an existing file other than a set is refused before any work.

    ``resampling`` names the filter that shrinks the crops (:data:`gapless.eval.sets.tiles.RESAMPLINGS`).
    """
    if resampling not in RESAMPLINGS:
        raise InputError(f"--resampling: '{resampling}' is not one of {', '.join(RESAMPLINGS)}")
    check_output(out, inputs, labels_csv)
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
        labels = read_labels(labels_csv) if labels_csv else None
        if labels is not None and not any(row.get("label") for row in labels.values()):
            raise InputError(f"{labels_csv}: no labelled slides")
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
    with SetWriter(out, mpps, tile_px, resampling) as writer:
        for source in sources:
            for region in source:
                writer.add(
                    multiscale_tiles(region.pixels, mpps, region.base_mpp, tile_px, resampling),
                    region.slide,
                    region.patient,
                    region.label,
                    region.centre,
                    region.base_mpp,
                )
                stats.regions += 1
        if not writer.rows:
            reasons = ", ".join(f"{n} {why}" for why, n in stats.skipped.items()) or "no inputs"
            raise InputError(f"no labelled regions could be made from {', '.join(inputs)} ({reasons})")
        label_names = [r[2] for r in writer.rows]
        patients = [r[1] for r in writer.rows]
        classes = sorted(set(label_names))
        codes = np.array([classes.index(c) for c in label_names])
        try:
            folds = assign_folds(codes, np.array(patients), n_folds, seed)
        except ValueError as exc:
            raise InputError(f"{out}: cannot split {len(set(patients))} patients into folds: {exc}") from exc
        writer.finish(folds, classes, n_folds, seed)
    return Path(out), stats


def check_output(out: str | Path, inputs: list[str], labels_csv: str | None) -> Path:
    """``out`` as the set file to write: not a folder, not one of the inputs, not an existing file other than a set
    (a set is replaced); refused before any work (:func:`gapless.io.replaceable_file`)."""
    read = [("an input", item) for item in inputs] + [("the --labels file", labels_csv)]
    read += [("an input's regions.csv", Path(item) / "regions.csv") for item in inputs if Path(item).is_dir()]
    return replaceable_file(out, read, "an evaluation set", is_set_file)
