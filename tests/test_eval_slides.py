"""Evaluation sets from real synthetic pyramidal TIFFs (read with the project's slide backends) and from an index."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gapless.cli import main
from gapless.eval.sets.file import EvalSet
from gapless.pipeline.resize import downsample

TILE = 64
MPPS = [0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0]


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory):
    from gapless.pipeline.synth.writer import make_dataset

    # 18 slides, two per patient: 9 patients, 3 per class, so every 3-fold training split holds several classes.
    return make_dataset(tmp_path_factory.mktemp("slides"), slides=18, size_mm=(0.5, 0.4), seed=0)


def test_set_from_slides_shows_the_same_tissue_at_every_mpp(slides, tmp_path: Path) -> None:
    out = tmp_path / "set.h5"
    args = ["eval-set", str(slides.paths[0].parent), "--labels", str(slides.labels_csv), "--out", str(out)]
    # Area averaging, the filter the reference below uses: this test is about geometry (the same tissue centre).
    assert (
        main([*args, "--tile-px", str(TILE), "--regions-per-slide", "3", "--folds", "3", "--resampling", "area"]) == 0
    )
    evalset = EvalSet.load(out)
    assert evalset.resampling == "area"
    assert 18 <= len(evalset) <= 54 and evalset.classes == sorted(set(slides.labels.values()))
    for p in np.unique(evalset.patients):  # make_dataset puts two slides per patient: same fold for both
        assert len(set(evalset.folds[evalset.patients == p])) == 1
    assert set(evalset.folds) == {0, 1, 2}
    finest = evalset.read_tiles(0.25)
    for m in MPPS[1:]:
        tiles = evalset.read_tiles(m)
        factor = m / 0.25
        # The 0.25 tile's footprint, shrunk to mpp m, must be the centre of the mpp-m tile (even sizes: exact centring)
        side = next(c for c in range(TILE, 0, -2) if (c / factor).is_integer() and int(c / factor) % 2 == 0)
        small = int(side / factor)
        for i in range(len(evalset)):
            o = (TILE - side) // 2
            expected = cv2.resize(finest[i, o : o + side, o : o + side], (small, small), interpolation=cv2.INTER_AREA)
            c = (TILE - small) // 2
            got = tiles[i, c : c + small, c : c + small].astype(np.float64)
            mse = np.mean((got - expected) ** 2)
            assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 28, f"mpp {m}, region {i}"


def test_set_from_an_index_uses_its_labels_and_masks(slides, tmp_path: Path) -> None:
    index = tmp_path / "index.h5"
    assert main(["index", str(slides.paths[0].parent), "--labels", str(slides.labels_csv), "--out", str(index)]) == 0
    out = tmp_path / "set.h5"
    assert (
        main(["eval-set", str(index), "--out", str(out), "--tile-px", "32", "--regions-per-slide", "2", "--folds", "3"])
        == 0
    )
    evalset = EvalSet.load(out)
    assert set(evalset.slides) == {p.name for p in slides.paths}
    assert set(evalset.patients) == {f"patient_{i:03d}" for i in range(9)}


def test_downsample_halves_exactly_then_finishes_with_one_area_step() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96, 3)).astype(np.uint8)
    halved = image.reshape(48, 2, 48, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(downsample(image, 48), halved, atol=0.51)  # a 2x2 box mean, rounded
    quarter = halved.reshape(24, 2, 24, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(downsample(image, 24), quarter, atol=1.01)  # two rounded halvings
    assert downsample(image, 20).shape == (20, 20, 3)
    with pytest.raises(ValueError, match="cannot enlarge"):
        downsample(image, 100)


def test_slides_without_labels_are_refused(slides, tmp_path: Path, capsys) -> None:
    code = main(["eval-set", str(slides.paths[0]), "--out", str(tmp_path / "s.h5")])
    assert code == 2 and "slides need labels" in " ".join(capsys.readouterr().err.split())


def test_the_resampling_choices_of_the_cli_are_the_filters_the_set_builder_knows() -> None:
    from gapless.eval.cli import RESAMPLING_CHOICES
    from gapless.eval.sets.tiles import RESAMPLINGS

    assert RESAMPLING_CHOICES == RESAMPLINGS  # the CLI names them itself so that --help imports no image library
