"""The slide index (incremental, bad slides skipped and reported) and tissue masks and sampling."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

from gapless.cli import main
from gapless.pipeline.slides import SlideIndex, TissueMask, open_slide
from gapless.pipeline.slides.indexer import build_index
from gapless.pipeline.synth.render import SlideSpec
from gapless.pipeline.synth.writer import write_slide


def test_index_records_geometry_labels_and_masks(synthetic_slides) -> None:
    index = SlideIndex.load(synthetic_slides.index)
    assert len(index.records) == 4 and not index.failed
    labels = {os.path.basename(r.path): r.label for r in index.records}
    assert labels == synthetic_slides.labels
    assert {r.label for r in index.records} == {"regular", "atypia", "lobular"}
    record = index.records[0]
    assert [lv.mpp for lv in record.levels] == [0.25, 1.0, 4.0] and record.mpp == 0.25
    assert record.patient.startswith("patient_")
    assert record.levels == tuple(open_slide(record.path).levels)
    mask = record.tissue_mask()
    assert mask.mask_mpp == 8.0 and mask.mask.shape == (100, 125)
    assert 0.2 < mask.tissue_fraction < 0.9 and mask.tissue_fraction == pytest.approx(record.tissue_fraction)
    clone = pickle.loads(pickle.dumps(index))
    assert clone.records[1].tissue_mask().mask.sum() == index.records[1].tissue_mask().mask.sum()


def test_bad_slides_are_skipped_with_reasons_and_reindex_is_incremental(synthetic_slides, tmp_path) -> None:
    data = tmp_path / "slides"
    data.mkdir()
    for p in synthetic_slides.paths[:2]:
        shutil.copy(p, data)
    (data / "notes.svs").write_text("not a slide")
    good = (data / synthetic_slides.paths[0].name).read_bytes()
    (data / "cut.tiff").write_bytes(good[: len(good) // 3])
    write_slide(data / "glass.tiff", SlideSpec(600.0, 500.0, 0.25, "glass", seed=1))
    out = tmp_path / "index.h5"
    summary = build_index([data], out, synthetic_slides.labels_csv, workers=2)
    assert (summary.total, summary.usable, summary.indexed) == (5, 2, 5)
    reasons = {os.path.basename(p): (status, reason) for p, status, reason in summary.failed}
    assert reasons["notes.svs"][0] == "failed" and "not a readable whole-slide image" in reasons["notes.svs"][1]
    assert "truncated" in reasons["cut.tiff"][1]
    assert reasons["glass.tiff"] == ("no_tissue", "no tissue detected")
    index = SlideIndex.load(out)
    assert len(index.records) == 2 and len(index.failed) == 3

    # Re-index: nothing changed, nothing is reopened; then one file changes and only it is read again.
    again = build_index([data], out, synthetic_slides.labels_csv, workers=1)
    assert (again.indexed, again.reused) == (0, 5)
    changed = data / synthetic_slides.paths[1].name
    shutil.copy(synthetic_slides.paths[2], changed)
    os.utime(changed, (1, 1))
    third = build_index([data], out, synthetic_slides.labels_csv, workers=1)
    assert (third.indexed, third.reused, third.usable) == (1, 4, 2)
    reloaded = SlideIndex.load(out)
    assert [r.tissue_mask().mask.sum() for r in reloaded.records][0] == index.records[0].tissue_mask().mask.sum()


def test_index_cli_reports_and_never_aborts(synthetic_slides, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(b"II*\x00garbage")
    out = tmp_path / "cli.h5"
    args = ["index", str(synthetic_slides.paths[0]), str(bad), "--out", str(out), "--workers", "1"]
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().err
    assert len(SlideIndex.load(out).records) == 1
    assert main(["index", str(tmp_path / "missing_dir"), "--out", str(out)]) == 2


def test_tissue_fraction_and_sampling_respect_the_footprint_at_each_mpp() -> None:
    mask = np.zeros((200, 200), bool)
    mask[20:120, 20:120] = True  # an 800 um island at 8 um/px
    mask[160:168, 160:168] = True  # a 64 um speck: enough for a 0.25 mpp tile (56 um), not for 2.0 mpp (448 um)
    tissue = TissueMask(mask, 8.0, base_mpp=0.25)
    assert tissue.box_fraction(70, 70, 448.0 / 8 / 2) == pytest.approx(1.0)  # mask pixels: 32 level-0 px each
    assert tissue.box_fraction(190, 10, 56.0 / 8 / 2) == 0.0
    rng = np.random.default_rng(0)
    for side_um in (56.0, 448.0):
        for _ in range(200):
            x, y = tissue.sample_center(rng, side_um, threshold=0.9)
            assert tissue.box_fraction(x / 32, y / 32, side_um / 8 / 2) >= 0.85
            assert 20 * 32 <= x <= 120 * 32 or side_um < 100  # big footprints only land on the big island
    speck_only = TissueMask(mask & (np.arange(200)[:, None] > 150), 8.0, base_mpp=0.25)
    assert speck_only.sample_center(rng, 56.0, 0.5) is not None
    assert speck_only.sample_center(rng, 448.0, 0.5, max_tries=64) is None
    assert TissueMask(np.zeros((10, 10), bool), 8.0, 0.25).sample_center(rng, 56.0) is None
