"""The benchmark harness: a tiny real run (synthetic loader + the DataLoader baseline on one small synthetic slide)
writes a complete result, tables and plots; ``--compare`` reads two results; the verdict arithmetic is right.

No timing is asserted: figures are only checked for being present, finite and consistent with each other.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gapless.benchmarks.cli import bench_config
from gapless.benchmarks.config import BenchConfig, SlideSetConfig
from gapless.benchmarks.stages import STAGES, tile_aligned_pixels
from gapless.benchmarks.verdict import cost, keeps_up, speedups, strategy_costs
from gapless.cli import main as gapless_main
from gapless.errors import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    from gapless.benchmarks.run import run_benchmark
    from gapless.console import console

    out = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(
        preset="test",
        loaders=["baseline"],
        strategies=["du", "cu"],
        workers=0,  # in-process: no worker start-up in a unit test
        batch_size=2,
        warmup_batches=1,
        batches_per_repeat=1,
        repeats=2,
        passes=2,  # DU CU then CU DU, one window each, pooled
        min_window_s=0.05,  # the wiring, not the figures: windows of a batch or two
        scaling_workers=[0],
        scaling_loaders=["baseline"],
        scaling_repeats=1,
        stage_tiles=4,
        stage_batch=2,
        stage_strategies=["du", "cu"],
        trainer=True,
        trainer_model="tiny",  # the ViT-S figure belongs to the full preset; the wiring is the same
        trainer_batch=2,
        trainer_steps=1,
        slides=SlideSetConfig(slides=1, side_px=2048, he_texture=False),
    )
    with console.capture() as captured:
        result = run_benchmark(cfg, out / "result", cache_dir=out / "cache")
    return result, out / "result", captured.get()


def test_tiny_run_writes_complete_json(tiny_run: tuple[dict, Path, str]) -> None:
    result, out, _ = tiny_run
    on_disk = json.loads((out / "bench.json").read_text())
    assert on_disk["schema"] == "gapless-bench/1"
    for key in ("machine", "versions", "git", "config", "throughput", "scaling", "stages", "verdict", "duration_s"):
        assert key in on_disk, key
    assert on_disk["machine"]["cpu"] and on_disk["machine"]["cores_logical"] >= 1
    for lib in ("python", "torch", "dali", "cucim"):
        assert on_disk["versions"][lib], lib
    assert on_disk["config"]["strategies"] == ["du", "cu"]

    runs = {(r["loader"], r["mode"], r["strategy"]): r for r in result["throughput"]}
    assert set(runs) == {(loader, mode, s) for loader, mode in [("reference", "plain"), ("baseline", "multicrop"),
                                                                ("baseline", "plain")] for s in ("du", "cu")} | {
        ("synthetic", "multicrop", "cu")}  # fmt: skip
    for r in runs.values():
        assert not r["error"], r["error"]
        assert len(r["rates"]) == 2 and all(v > 0 and math.isfinite(v) for v in r["rates"])
        assert r["min"] <= r["median"] <= r["max"]
        assert r["memory"]["rss_peak_mib"] >= r["memory"]["rss_start_mib"] > 0
        assert len(r["cpu_ms_per_tile"]) == 2
    # Reads went through the real slides: tiles were read, none skipped; the floor loop read them too.
    for loader, mode in (("baseline", "multicrop"), ("baseline", "plain"), ("reference", "plain")):
        assert runs[(loader, mode, "cu")]["stats"]["reads"] > 0
        assert runs[(loader, mode, "cu")]["stats"]["skipped_tiles"] == 0
    assert [r["workers"] for r in result["scaling"]] == [0]
    assert runs[("baseline", "multicrop", "du")]["passes"] == 2
    # Every loader is set against the floor of its strategy; multi-crop also counts the augmentation stage.
    trainer = result["trainer"]["tiles_per_s"]
    for (loader, mode, strategy), r in runs.items():
        cpu = float(np.median(r["cpu_ms_per_tile"]))
        assert r["cores_at_trainer_rate"] == pytest.approx(trainer * cpu / 1e3)
        if loader != "baseline":
            continue
        floor = float(np.median(runs[("reference", "plain", strategy)]["cpu_ms_per_tile"]))
        augment = result["stages"][strategy]["ms_per_tile"]["augment"] if mode == "multicrop" else 0.0
        assert r["floor_cpu_ms"] == pytest.approx(floor) and r["augment_ms"] == pytest.approx(augment)
        assert r["cpu_vs_floor"] == pytest.approx(cpu / (floor + augment))


def test_tiny_run_stage_breakdown_and_pixels(tiny_run: tuple[dict, Path, str]) -> None:
    stages = tiny_run[0]["stages"]
    assert set(stages) == {"du", "cu"}
    for s in stages.values():
        assert s["tiles"] == 4 and s["failed_reads"] == 0
        assert set(s["ms_per_tile"]) == set(STAGES)
        # The check's cost is a difference of two reads: it may come out slightly negative.
        assert all(v >= 0 for k, v in s["ms_per_tile"].items() if k != "check") and s["ms_per_tile"]["read"] > 0
        assert s["total_ms_per_tile"] == pytest.approx(sum(s["ms_per_tile"].values()))
        # Never upsampled, and whole JPEG tiles cover at least the region.
        assert 1.0 <= s["pixels_per_output_pixel"] <= s["tile_aligned_pixels_per_output_pixel"]
        assert sum(s["level_share"].values()) == pytest.approx(1.0)
    # DU on a 4x pyramid reads 224 or 448 px regions only: 1x or 4x its output.
    assert 1.0 <= stages["du"]["pixels_per_output_pixel"] <= 4.0


def test_tiny_run_table_plots_and_verdict(tiny_run: tuple[dict, Path, str]) -> None:
    result, out, printed = tiny_run
    assert "Loader throughput" in printed and "Where a tile's time goes" in printed
    assert sorted(result["plots"]) == ["scaling.png", "stages.png", "throughput.png"]
    for name in result["plots"]:
        assert (out / name).read_bytes()[:8] == PNG
    costs = result["verdict"]["costs"]
    assert [(c["loader"], c["strategy"], c["metric"]) for c in costs] == [
        ("reference", "cu", "throughput"), ("baseline", "cu", "throughput"), ("baseline (plain)", "cu", "throughput")]  # fmt: skip
    assert any("the floor's CPU time per tile" in s for s in result["verdict"]["sentences"])
    assert "reference" in printed and "baseline (plain)" in printed and "× floor" in printed
    assert any("CU" in s and "relative to DU" in s for s in result["verdict"]["sentences"])
    assert result["trainer"]["tiles_per_s"] > 0 and result["trainer"]["model"] == "tiny"
    assert set(result["verdict"]["keeps_up"]) == {"baseline/du", "baseline/cu"}
    (stage_cost,) = result["verdict"]["stage_costs"]
    assert stage_cost["strategy"] == "cu" and stage_cost["low"] <= stage_cost["ratio"] <= stage_cost["high"]


def test_compare_two_results(tiny_run: tuple[dict, Path, str], tmp_path: Path) -> None:
    from gapless.console import console

    result = json.loads((tiny_run[1] / "bench.json").read_text())
    faster = copy.deepcopy(result)
    for r in faster["throughput"]:
        r["rates"] = [2 * v for v in r["rates"]]
        r["median"] *= 2
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(result))
    b.write_text(json.dumps(faster))
    with console.capture() as captured:
        assert gapless_main(["bench", "--compare", str(a), str(b)]) == 0
    assert "baseline CU ×0 tiles/s" in captured.get() and "2" in captured.get()
    from gapless.benchmarks.report import compare_rows

    ratios = {row[0]: row[3] for row in compare_rows(result, faster)}
    assert ratios["baseline DU ×0 tiles/s"] == pytest.approx(2.0)
    not_bench = tmp_path / "other.json"
    not_bench.write_text('{"hello": 1}')
    assert gapless_main(["bench", "--compare", str(a), str(not_bench)]) == 2


def test_cost_arithmetic_on_hand_made_numbers() -> None:
    same = cost("dali", "cu", [90.0, 100.0, 110.0], [100.0, 100.0, 100.0])
    assert same.ratio == pytest.approx(1.0) and same.cost_pct == pytest.approx(0.0)
    assert (same.ratio_low, same.ratio_high) == pytest.approx((0.9, 1.1))
    assert same.spread_pct == pytest.approx(10.0) and same.meets_target

    half = cost("baseline", "cu", [49.0, 50.0, 51.0], [99.0, 100.0, 101.0])
    assert half.ratio == pytest.approx(0.5) and half.cost_pct == pytest.approx(50.0)
    assert half.spread_pct == pytest.approx(100 * (51 / 99 - 49 / 101) / 2)
    assert not half.meets_target
    assert "costs 50.0 %" in half.sentence({"cu": "CU", "du": "DU"})

    assert cost("d", "cu", [97.0], [100.0]).meets_target is False  # 0.97 < 0.98
    assert cost("d", "cu", [98.0], [100.0]).meets_target is True

    results = [
        {"loader": "dali", "strategy": "du", "rates": [200.0], "cpu_ms_per_tile": [10.0]},
        {"loader": "dali", "strategy": "cu", "rates": [150.0], "cpu_ms_per_tile": [20.0]},
        {"loader": "baseline", "strategy": "du", "rates": [50.0], "cpu_ms_per_tile": [40.0]},
        {"loader": "baseline", "strategy": "cu", "rates": [40.0], "cpu_ms_per_tile": [50.0]},
        {"loader": "synthetic", "strategy": "cu", "rates": [999.0], "cpu_ms_per_tile": [1.0]},
    ]
    wall = {(c.loader, c.strategy): c.ratio for c in strategy_costs(results)}
    assert wall == pytest.approx({("dali", "cu"): 0.75, ("baseline", "cu"): 0.8})
    cpu = {(c.loader, c.strategy): c.ratio for c in strategy_costs(results, metric="cpu")}
    assert cpu == pytest.approx({("dali", "cu"): 0.5, ("baseline", "cu"): 0.8})
    assert speedups(results) == pytest.approx({"du": 4.0, "cu": 3.75})
    assert keeps_up(150.0, 100.0)["keeps_up"] and not keeps_up(50.0, 100.0)["keeps_up"]


def test_tile_aligned_area() -> None:
    from gapless.pipeline.slides.tiff import PageLayout

    def spec(x: int, y: int, size: int) -> SimpleNamespace:
        return SimpleNamespace(plan=SimpleNamespace(location=(x, y), read_size=size))

    grid = np.zeros(64, np.int64)
    pages = {(2048, 2048): PageLayout(2048, 2048, 256, 256, True, grid, grid)}
    level0 = SimpleNamespace(width=2048, height=2048, downsample=1.0)
    level2 = SimpleNamespace(width=2048, height=2048, downsample=4.0)
    assert tile_aligned_pixels(spec(0, 0, 256), level0, pages) == 256 * 256  # exactly one tile
    assert tile_aligned_pixels(spec(10, 0, 256), level0, pages) == 2 * 256 * 256  # spills into the next column
    assert tile_aligned_pixels(spec(300, 300, 224), level0, pages) == 4 * 256 * 256
    assert tile_aligned_pixels(spec(4 * 256, 0, 100), level2, pages) == 256 * 256  # level-0 coords / downsample
    assert tile_aligned_pixels(spec(0, 0, 100), SimpleNamespace(width=9, height=9, downsample=1.0), pages) == 100**2


def test_presets_and_overrides() -> None:
    quick = bench_config(True, ["repeats=4", "strategies=[du,cu,minmax]"])
    assert quick.preset == "quick" and quick.repeats == 4 and quick.strategies == ["du", "cu", "minmax"]
    assert bench_config(False, ["slides.level_step=2"]).slides.level_step == 2
    assert BenchConfig(warmup_batches=-1).warmup(workers=2, prefetch=2) == 5
    with pytest.raises(ConfigError, match="repeets"):
        bench_config(True, ["repeets=4"])
    with pytest.raises(ConfigError, match="strategies"):
        bench_config(False, ["strategies=[du, xx]"])


def test_windows_last_at_least_their_minimum() -> None:
    from gapless.benchmarks.throughput import window_rates

    calls = []
    rates, cpu_ms = window_rates(
        lambda: calls.append(1), batch_size=4, warmup=2, batches=3, repeats=2, min_window_s=0.05
    )
    assert len(rates) == len(cpu_ms) == 2
    assert len(calls) > 2 + 2 * 3  # an instant loader is called far more than 3 times in 50 ms
    calls.clear()
    window_rates(lambda: calls.append(1), batch_size=4, warmup=0, batches=3, repeats=2)
    assert len(calls) == 6


def test_paired_stage_ratio() -> None:
    from gapless.benchmarks.stages import paired_ratio

    r = paired_ratio([2.0, 2.0, 2.0], [1.0, 1.0, 1.0])
    assert (r["ratio"], r["low"], r["high"]) == pytest.approx((0.5, 0.5, 0.5))
    assert paired_ratio([2.0, 2.0], [1.0, 1.0], fixed_ms=1.0)["ratio"] == pytest.approx(2 / 3)
    # A failed read (nan) drops its pair; the interval brackets the ratio.
    r = paired_ratio([2.0, float("nan"), 3.0, 1.0], [1.0, 5.0, 2.0, 1.0])
    assert r["ratio"] == pytest.approx(4 / 6) and r["low"] <= r["ratio"] <= r["high"]


def test_cost_from_paired_passes() -> None:
    # The machine slowed down between passes: pooled windows would blur the strategies, per-pass ratios do not.
    du = [[100.0, 100.0], [50.0, 50.0], [80.0, 80.0]]
    cu = [[90.0, 90.0], [45.0, 45.0], [76.0, 76.0]]
    c = cost("dali", "cu", sum(cu, []), sum(du, []), pass_rates=cu, pass_reference_rates=du)
    assert c.passes == 3
    assert c.ratio == pytest.approx(0.9) and (c.ratio_low, c.ratio_high) == pytest.approx((0.9, 0.95))
    assert c.spread_pct == pytest.approx(2.5) and "3 paired passes" in c.sentence()
    pooled = cost("dali", "cu", sum(cu, []), sum(du, []))
    assert pooled.passes == 1 and pooled.spread_pct > 50
