"""Sampling strategies: normalisation, the reference figures, exact sampling, determinism, input validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from gapless.cli import main
from gapless.config import ConfigError, from_dict
from gapless.pipeline.sampling import (
    GridDensity,
    SamplingConfig,
    build_distribution,
    information_kernel,
    load_density_file,
    make_kernel,
    mean_kernel,
    signal,
    summarize,
)

GRID = np.linspace(0.25, 2.0, 1000)


@pytest.fixture(scope="module")
def strategies() -> dict:
    return {s: build_distribution(SamplingConfig(strategy=s)) for s in ("du", "cu", "maxavg", "minmax", "fixed")}


def test_measures_are_normalised(strategies):
    for name, dist in strategies.items():
        _, weights = dist.measure(refine=GRID)
        assert weights.sum() == pytest.approx(1.0, abs=1e-9), name
    for name in ("cu", "maxavg"):
        d = strategies[name]
        assert np.trapezoid(d.pdf(GRID), GRID) == pytest.approx(1.0, abs=1e-6)


def test_maxavg_matches_reference(strategies):
    kbar = mean_kernel(information_kernel, GRID)
    assert GRID[np.argmax(kbar)] == pytest.approx(1.34, abs=0.01)
    d = strategies["maxavg"]
    assert d.density[0] / d.density.max() == pytest.approx(0.68, abs=0.01)
    # The integral convention of K̄ equals the mean convention with λ / (b - a).
    d_int = build_distribution(SamplingConfig(strategy="maxavg", lam=1.0 / 1.75))
    assert d_int.density[0] / d_int.density.max() == pytest.approx(0.51, abs=0.01)
    closed_form = 4 * GRID / 3 - 0.25**3 / (3 * GRID**2) - GRID**2 / 2.0
    assert np.allclose(kbar * 1.75, closed_form, atol=2e-3)


def test_minmax_is_flat_at_lp_optimum(strategies):
    d = strategies["minmax"]
    s = signal(d, GRID, information_kernel)
    assert d.optimum == pytest.approx(0.3247, abs=5e-4)
    assert np.ptp(s) < 1e-6
    assert np.allclose(s, d.optimum, atol=1e-6)
    assert d.lp_weights[0] == pytest.approx(0.164, abs=0.01)
    assert d.lp_weights[-1] == pytest.approx(0.164, abs=0.01)
    # The distribution that is sampled (atoms + interior density) integrates to the same flat signal.
    points, weights = d.measure(refine=GRID)
    s_sampled = (information_kernel(points[None, :], GRID[:, None]) * weights).sum(axis=1)
    assert np.ptp(s_sampled) < 1e-3


def test_du_sawtooth_and_cu_boundary(strategies):
    s_du = signal(strategies["du"], GRID, information_kernel)
    at = lambda m: np.interp(m, GRID, s_du)  # noqa: E731
    for lo, mid, hi in ((0.25, 0.375, 0.5), (0.5, 0.75, 1.0), (1.0, 1.5, 2.0)):
        assert at(mid) < min(at(lo), at(hi)), (lo, mid, hi)
    s_cu = signal(strategies["cu"], GRID, information_kernel)
    assert GRID[np.argmin(s_cu)] == pytest.approx(0.25)
    assert s_cu[0] == pytest.approx(0.125, abs=2e-3)


@pytest.mark.parametrize("name", ["cu", "maxavg", "minmax", "du"])
def test_draws_match_density(strategies, name):
    d = strategies[name]
    draws = d.sample(100_000, np.random.default_rng(7))
    assert draws.min() >= 0.25 - 1e-12 and draws.max() <= 2.0 + 1e-12
    if name == "du":
        values, counts = np.unique(draws, return_counts=True)
        assert values.tolist() == [0.25, 0.5, 1.0, 2.0]
        assert stats.chisquare(counts).pvalue > 1e-3
        return
    # Continuous parts must produce values inside cells, not only grid points.
    inner = draws[(draws > 0.25) & (draws < 2.0)]
    assert np.mean(np.isin(np.round(inner, 12), np.round(GRID, 12))) < 0.01
    if name == "minmax":  # KS needs a continuous law: test the atoms' masses and the interior part apart
        ends, interior = d.components
        atoms_expected = d.weights[0] * ends.weights
        atoms_seen = [np.mean(draws == 0.25), np.mean(draws == 2.0)]
        assert np.allclose(atoms_seen, atoms_expected, atol=0.005)
        assert stats.kstest(inner, interior.cdf).pvalue > 1e-3
        return
    assert stats.kstest(draws, d.cdf).pvalue > 1e-3


def test_ks_detects_a_wrong_density(strategies):
    draws = strategies["cu"].sample(100_000, np.random.default_rng(0))
    assert stats.kstest(draws, strategies["maxavg"].cdf).pvalue < 1e-6


def test_same_seed_same_draws(strategies):
    for d in strategies.values():
        a = d.sample(1000, np.random.default_rng(3))
        b = d.sample(1000, np.random.default_rng(3))
        c = d.sample(1000, np.random.default_rng(4))
        assert np.array_equal(a, b)
        assert d.name == "fixed" or not np.array_equal(a, c)


def test_alternative_kernel_changes_optimum():
    k = make_kernel("loglaplace", 0.5)
    assert k(np.array(1.0), np.array(1.0)) == pytest.approx(1.0)
    assert k(np.array(0.5), np.array(1.0)) == pytest.approx(np.exp(-np.log(2) / 0.5))
    d = build_distribution(SamplingConfig(strategy="minmax", kernel="loglaplace", grid=200))
    assert np.ptp(signal(d, np.linspace(0.25, 2.0, 200), k)) < 1e-6


def test_grid_density_inverse_cdf_exact_within_cells():
    d = GridDensity(np.array([1.0, 2.0]), np.array([0.0, 2.0]))  # p(x) = 2(x - 1) on [1, 2]
    x = d.sample(200_000, np.random.default_rng(1))
    assert stats.kstest(x, lambda v: np.clip(v - 1, 0, 1) ** 2).pvalue > 1e-3


@pytest.mark.parametrize(
    "values, key",
    [
        ({"low": 2.0, "high": 1.0}, "high"),
        ({"low": 0.0}, "low"),
        ({"low": -1.0}, "low"),
        ({"strategy": "maxavg", "lam": 0.0}, "lam"),
        ({"strategy": "du", "du_mpps": []}, "du_mpps"),
        ({"strategy": "nope"}, "strategy"),
        ({"kernel": "gauss"}, "kernel"),
        ({"lamda": 1.0}, "lamda"),
        ({"grid": "many"}, "grid"),
    ],
)
def test_invalid_config_names_the_key(values, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(SamplingConfig, values)


@pytest.mark.parametrize(
    "content, problem",
    [
        ("mpp,weight\n0.5,1\n", "two rows"),
        ("0.5,1\n0.25,1\n", "increasing"),
        ("0.25,1\n0.5,-1\n", "non-negative"),
        ("0.25,abc\n0.5,1\n", "cannot read"),
        ("0.25,1,3\n0.5,1,3\n", "two columns"),
    ],
)
def test_malformed_density_file(tmp_path, content, problem):
    path = tmp_path / "density.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as info:
        load_density_file(path)
    assert str(path) in str(info.value)


def test_density_file_strategy(tmp_path):
    path = tmp_path / "density.csv"
    path.write_text("mpp,weight\n0.25,0\n1.0,1\n2.0,0\n")
    d = build_distribution(SamplingConfig(strategy="file", density_file=str(path)))
    x = d.sample(50_000, np.random.default_rng(0))
    assert abs(np.median(x) - 1.0) < 0.1
    assert summarize(d, information_kernel, 0.25, 2.0, 200)["signal_max"] > 0


def test_cli_json_plot_and_draw(tmp_path):
    out_json, out_png, draws = tmp_path / "s.json", tmp_path / "s.png", tmp_path / "d.npy"
    assert (
        main(["sampling", "--strategies", "du", "cu", "--grid", "200", "--json", str(out_json), "--plot", str(out_png)])
        == 0
    )
    data = json.loads(out_json.read_text())["strategies"]
    assert set(data) == {"du", "cu"}
    assert data["du"]["points"] == [0.25, 0.5, 1.0, 2.0] and len(data["cu"]["signal"]) == 200
    assert np.trapezoid(data["cu"]["density"], data["cu"]["grid"]) == pytest.approx(1.0, abs=1e-6)
    assert out_png.stat().st_size > 10_000
    assert main(["sampling", "draw", "--strategy", "cu", "-n", "1000", "--seed", "5", "--out", str(draws)]) == 0
    assert np.load(draws).shape == (1000,)
    assert main(["sampling", "--strategies", "bogus"]) == 2
    assert main(["sampling", "--strategies", "maxavg", "minmax", "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())["strategies"]
    assert data["maxavg"]["density_peak_mpp"] == pytest.approx(1.34, abs=0.01)
    assert data["maxavg"]["density_low_over_max"] == pytest.approx(0.68, abs=0.01)
    assert data["minmax"]["lp_optimum"] == pytest.approx(0.3247, abs=5e-4)
    assert data["minmax"]["end_point_masses"] == pytest.approx([0.164, 0.164], abs=0.01)
