"""Augmentation parameters drawn on the host (``gapless.pipeline.augparams``) and the two consumers of them: each DALI graph
operator (CPU operators) and its NumPy/OpenCV twin in the baseline give the same pixels for the same parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from gapless.pipeline import augparams as P
from gapless.pipeline.augment import MultiCrop
from gapless.pipeline.augparams import CropRecipe, CropWindows, crop_recipes, sample_params, window_pixels
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.loader import build_source
from gapless.pipeline.resize import resize_square, resize_window

AUG = AugmentConfig(local_crops=4)
TILE = 224


def test_parameters_are_a_pure_function_of_seed_and_sample() -> None:
    a = sample_params(AUG, seed=3, g=11, tile_px=TILE)
    assert a.shape == (AUG.global_crops + AUG.local_crops, P.N_PARAMS) and a.dtype == np.float32
    assert np.array_equal(a, sample_params(AUG, seed=3, g=11, tile_px=TILE))
    assert not np.array_equal(a, sample_params(AUG, seed=3, g=12, tile_px=TILE))
    assert not np.array_equal(a, sample_params(AUG, seed=4, g=11, tile_px=TILE))


def test_parameters_follow_the_dinov2_recipe() -> None:
    params = np.stack([sample_params(AUG, seed=0, g=g, tile_px=TILE) for g in range(1500)])
    recipes = crop_recipes(AUG)
    for k, recipe in enumerate(recipes):
        rows = params[:, k]
        windows = np.array([window_pixels(r, TILE) for r in rows])  # (y, x, h, w), integer pixels
        assert np.all(windows[:, :2] >= 0) and np.all(windows[:, :2] + windows[:, 2:] <= TILE)
        area = windows[:, 2] * windows[:, 3] / TILE**2
        aspect = windows[:, 3] / windows[:, 2]
        # Rounding to whole pixels moves area and aspect slightly outside the drawn ranges.
        assert area.min() >= recipe.scale[0] * 0.95 and area.max() <= min(1.0, recipe.scale[1] * 1.05)
        assert aspect.min() >= 0.75 * 0.95 and aspect.max() <= 4 / 3 * 1.05
        for column, p in ((P.FLIP, AUG.flip_p), (P.GRAY, AUG.grayscale_p), (P.BLUR, recipe.blur_p),
                          (P.SOLARIZE, recipe.solarize_p)):  # fmt: skip
            hits = int(rows[:, column].sum())
            assert set(np.unique(rows[:, column])) <= {0.0, 1.0}
            assert stats.binomtest(hits, len(rows), p).pvalue > 1e-4 if 0 < p < 1 else hits == p * len(rows)
        jitter = rows[:, P.HUE] != 0
        assert stats.binomtest(int(jitter.sum()), len(rows), AUG.jitter_p).pvalue > 1e-4
        # No jitter -> identity factors; jitter -> factors in torchvision's ranges.
        assert np.all(rows[~jitter][:, [P.BRIGHTNESS, P.CONTRAST, P.SATURATION]] == 1.0)
        assert np.all(np.abs(rows[jitter][:, P.BRIGHTNESS] - 1) <= AUG.brightness + 1e-6)
        assert np.all(np.abs(rows[jitter][:, P.HUE]) <= AUG.hue + 1e-6)
        assert np.all((rows[:, P.SIGMA] >= 0.1) & (rows[:, P.SIGMA] <= 2.0))


def test_crop_windows_fall_back_to_the_centre_as_torchvision() -> None:
    rng, ratio, tries = np.random.default_rng(0), (0.75, 4 / 3), 10

    def windows(height: int, width: int, scales: np.ndarray) -> np.ndarray:
        n = len(scales)
        return CropWindows(height, width, scales, ratio, tries).place(rng.random((n, tries, 2)), rng.random((n, 2)))

    impossible = np.array([[2.0, 3.0], [0.5, 0.5]])  # no try can fit the first; the second always fits
    placed = windows(100, 100, impossible)
    assert placed[0].tolist() == [0, 0, 100, 100] and 0 < placed[1, 2] < 100
    # A wide image clamps the whole-image fallback to the largest allowed aspect ratio.
    assert windows(100, 300, np.array([[5.0, 6.0]]))[0].tolist() == [0, 83, 100, 133]


@pytest.fixture(scope="module")
def tile(synthetic_slides) -> np.ndarray:
    source, _ = build_source(DataConfig(index=str(synthetic_slides.index), seed=1))
    return resize_square(source.read(0).region, TILE)


def _row(window=(0.0, 0.0, 1.0, 1.0), **values: float) -> np.ndarray:
    row = np.zeros(P.N_PARAMS, np.float32)
    row[[P.Y0, P.X0, P.Y1, P.X1]] = window
    row[[P.BRIGHTNESS, P.CONTRAST, P.SATURATION]] = 1.0
    row[P.SIGMA] = 1.0
    for name, value in values.items():
        row[getattr(P, name.upper())] = value
    return row


# One row per operation (the others off), then everything at once; the whole-tile window at tile size keeps the
# resize out of the colour/blur comparisons, and the last rows exercise the window.
ROWS = [
    _row(),
    _row(flip=1),
    _row(brightness=1.3, contrast=0.7, saturation=1.15, hue=0.08),
    _row(brightness=0.6, contrast=1.4, saturation=0.8, hue=-0.1),
    _row(gray=1, brightness=1.1),
    _row(blur=1, sigma=0.3),
    _row(blur=1, sigma=1.9),
    _row(solarize=1),
    _row(flip=1, brightness=1.2, contrast=1.2, saturation=0.9, hue=0.05, blur=1, sigma=0.8, solarize=1),
    _row(window=(0.25, 0.125, 0.75, 0.875)),  # 112 x 168 -> 224: upscaling
    _row(window=(0.0, 0.0, 1.0, 0.5)),  # 224 x 112 -> 224: shrinks nothing, grows x
]


def _dali_views(tile: np.ndarray, rows: list[np.ndarray], recipe: CropRecipe) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def

    from gapless.pipeline.dali import graph

    @pipeline_def(enable_conditionals=True, batch_size=len(rows), num_threads=1, device_id=None)
    def views():
        tiles = fn.external_source(source=lambda: [tile] * len(rows), batch=True, layout="HWC")
        params = fn.external_source(source=lambda: rows, batch=True)
        return graph.augmented_crop(tiles, params, recipe, AUG)

    pipe = views()
    pipe.build()
    return np.array(pipe.run()[0].as_tensor())


def test_each_dali_operation_matches_its_baseline_twin(tile) -> None:
    recipe = CropRecipe(TILE, (0.3, 1.0), blur_p=0.5, solarize_p=0.5)  # both gates are DALI conditionals
    dali = _dali_views(tile, ROWS, recipe).astype(np.float64)  # uint8 HWC views, as both loaders make them
    multicrop = MultiCrop(AUG)
    for k, row in enumerate(ROWS):
        base = multicrop.view(tile, row, TILE).astype(np.float64)
        diff = np.abs(dali[k] - base)
        if k < len(ROWS) - 2:
            # Same pixels up to float rounding: one grey level here and there (blur kernels are truncated alike).
            assert diff.max() <= 1.01 and diff.mean() < 0.05, (k, diff.max(), diff.mean())
        else:  # resize filters differ in shape only: tens of dB above a one-pixel shift
            assert 10 * math.log10(255**2 / np.mean(diff**2)) > 38.0
    assert not np.allclose(dali[0], dali[1]) and not np.allclose(dali[0], dali[7])  # the ops did something


def test_resize_window_is_antialiased_along_each_shrinking_axis() -> None:
    stripes = np.zeros((TILE, TILE, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes along x: shrinking x must average them towards grey
    # Area averaging over 2.33 pixels leaves 109..146; a filter without antialiasing (bilinear, nearest) picks
    # single stripes and gives 0 and 255.
    out = resize_window(stripes, (0, 0, TILE, TILE), 96)
    assert np.all(np.abs(out.astype(int) - 128) <= 20)
    mixed = resize_window(stripes, (0, 0, 48, TILE), 96)  # x shrinks, y grows: two passes
    assert mixed.shape == (96, 96, 3) and np.all(np.abs(mixed.astype(int) - 128) <= 20)


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"hue": 0.9}, "augment.hue: must be in [0, 0.5] (in turns of the colour wheel), got 0.9"),
        ({"hue": -0.1}, "augment.hue: must be in [0, 0.5] (in turns of the colour wheel), got -0.1"),
        ({"contrast": -0.5}, "augment.contrast: a jitter strength must be >= 0, got -0.5"),
        ({"saturation": -1}, "augment.saturation: a jitter strength must be >= 0, got -1.0"),
    ],
)
def test_a_bad_colour_jitter_value_is_named_with_its_value(augment: dict, message: str) -> None:
    from gapless.config import from_dict
    from gapless.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        from_dict(DataConfig, {"augment": augment})
    assert str(raised.value) == message
