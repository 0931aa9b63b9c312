"""The regions an evaluation set is made of, and regions from labelled images.

A :class:`Region` is a labelled square of pixels at ``base_mpp``, centred on the tissue every tile of it will show.
Regions come from slides (:mod:`gapless.eval.sets.slide_regions`) or, here, from labelled images listed in a CSV
``path,label,patient,mpp``: one region per image, its centre square at the coarsest footprint, dropped when the
image is smaller. Unusable items are skipped and counted in :class:`BuildStats`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gapless.eval.sets.tiles import crop_side
from gapless.pipeline.slides.inputs import read_csv_table


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
