"""`gapless demo` end to end in miniature, its resume rules, and `gapless reproduce`: its strategies, seeds,
multi-process training under torchrun, GPU-time estimate and verdict logic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gapless.apps.experiment import OUTPUTS, ExperimentConfig, Stages, load_experiment
from gapless.apps.reproduce import (
    FULL_STRATEGIES,
    estimate_gpu_hours,
    sampling_for,
    strategy_verdict,
    training_processes,
)
from gapless.apps.reproduce_report import plot_reproduction, verdicts
from gapless.cli import main
from gapless.errors import InputError
from gapless.eval.gaps import dip_test
from gapless.train.recipe import explain

MPPS = ["0.25", "0.375", "0.5", "0.75", "1", "1.5", "2"]
# Nine 0.8 x 0.8 mm slides (three per class), five iterations of eight tiles, four regions per slide, three folds.
MINI = [
    "slides.count=9",
    "slides.size_mm=[0.8, 0.8]",
    "pretrain.epochs=0.25",
    "pretrain.data.batch_size=8",
    "pretrain.data.workers=1",
    "evalset.regions_per_slide=4",
    "evalset.folds=3",
    "eval.linear_cs=[0.1, 10.0]",
    "eval.protocol=gapless",  # three patients per class: too few for the paper's nested split
]


@pytest.fixture(scope="module")
def mini_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    assert main(["demo", "--out", str(out), *MINI]) == 0
    return out


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_writes_summary_json_and_plots(mini_demo: Path) -> None:
    result = json.loads((mini_demo / "demo.json").read_text())
    run = result["run"]
    assert sorted(run["rankme"]["values"], key=float) == MPPS
    for probe in ("knn", "linear"):
        per_mpp = run["probes"][probe]["summary"]["balanced_accuracy"]
        assert sorted(per_mpp, key=float) == MPPS
        for stats in per_mpp.values():
            assert 0.0 <= stats["mean"] <= 1.0 and stats["std"] >= 0.0 and len(stats["folds"]) == 3
        assert set(run["gap"][f"{probe}/balanced_accuracy"]) == {"0.375", "0.75", "1.5", "mean"}
    control = result["untrained"]  # the same probes on the weights the run started from
    assert control["name"] == "untrained" and sorted(control["probes"]["linear"]["summary"]["balanced_accuracy"],
                                                     key=float) == MPPS  # fmt: skip
    stages = ["sampling analysis", "synthetic slides + index", "pretraining", "evaluation set"]
    assert all(result["timings_s"][s] > 0 for s in [*stages, "features + probes"])
    training = result["training"]
    assert training["iterations"] == 5 and training["tiles_read"] >= 5 * 8 and math.isfinite(training["loss_last"])
    assert 0.0 <= training["teacher_entropy"] <= training["teacher_marginal_entropy"] + 1e-6
    summary = (mini_demo / "SUMMARY.md").read_text()
    for text in ("## Per magnification", "## Gap", "## Time per stage", "0.375 mpp", "cu", "untrained: linear"):
        assert text in summary
    for name in ("linear_balanced_accuracy", "knn_balanced_accuracy", "rankme", "gap"):
        assert is_png(mini_demo / "eval" / f"{name}.png"), name
    assert is_png(mini_demo / "sampling.png") and (mini_demo / "pretrain" / "backbone.pt").is_file()


@pytest.mark.parametrize("name", ["demo_cpu", "reproduce_tiny", "reproduce_small"])
def test_cpu_presets_keep_a_steady_teacher(name: str) -> None:
    """The CPU presets keep the slower teacher that stopped the tiny model's collapse (and say so)."""
    cfg = load_experiment(name, [])
    schedule, loss = cfg.pretrain.schedule, cfg.pretrain.loss
    assert schedule.teacher_momentum >= 0.99 and loss.center_momentum >= 0.9 and loss.centering == "sinkhorn"


@pytest.mark.parametrize("name, gpus", [("demo_gpu", 1), ("reproduce_full", 8)])
def test_gpu_presets_are_dinov2s_recipe_scaled_by_rule(name: str, gpus: int) -> None:
    """Every setting DINOv2's, schedules in proportion to the run; the full budget at DINOv2's batch and lr."""
    p = load_experiment(name, []).pretrain
    assert explain(p, gpus)["values"] == []
    assert p.epochs == 100 and p.model.layerscale == 1e-5 and p.model.head_prototypes == 65536
    if name == "reproduce_full":
        assert p.data.batch_size * gpus == 1024 and p.total_iterations == 12_500


def test_rerun_resumes_and_other_config_is_refused(mini_demo: Path, capsys) -> None:
    assert main(["demo", "--out", str(mini_demo), *MINI]) == 0
    result = json.loads((mini_demo / "demo.json").read_text())
    assert all(seconds == 0.0 for seconds in result["timings_s"].values())  # every stage reused
    assert main(["demo", "--out", str(mini_demo), *MINI, "pretrain.data.sampling.strategy=minmax"]) == 2
    assert "another configuration" in " ".join(capsys.readouterr().err.split())  # rich wraps long lines


def test_fresh_deletes_only_the_demo_outputs(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    Stages(out, ExperimentConfig(), fresh=False, kind="demo")
    (out / "eval").mkdir()
    (out / "SUMMARY.md").write_text("old")
    (out / "my_notes.txt").write_text("mine")
    other = ExperimentConfig()
    other.slides.count = 21
    stages = Stages(out, other, fresh=True, kind="demo")
    assert not (out / "eval").exists() and not (out / "SUMMARY.md").exists()
    assert (out / "my_notes.txt").read_text() == "mine" and "my_notes.txt" not in OUTPUTS
    assert stages.manifest["done"] == {}


def test_a_file_as_out_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_text("a,b")
    for fresh in (False, True):
        with pytest.raises(InputError, match="results.csv: exists and is not a folder"):
            Stages(out, ExperimentConfig(), fresh=fresh, kind="demo")
    assert out.read_text() == "a,b"


def test_fresh_never_touches_another_experiments_folder(tmp_path: Path, capsys) -> None:
    """A reproduction's folder given to the demo is refused, with --fresh as without: its checkpoints stay."""
    out = tmp_path / "runs"
    Stages(out, ExperimentConfig(), fresh=False, kind="reproduce-full")
    kept = out / "pretrain" / "du" / "checkpoints" / "ckpt_00001000.pt"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"weeks of GPU time")
    for fresh in (False, True):
        with pytest.raises(InputError, match="holds a reproduce-full run") as refused:
            Stages(out, ExperimentConfig(), fresh=fresh, kind="demo")
        assert "--fresh" not in str(refused.value)  # --fresh is no way out here
    assert kept.read_bytes() == b"weeks of GPU time"
    assert json.loads((out / "manifest.json").read_text())["kind"] == "reproduce-full"
    other = ExperimentConfig()
    other.slides.count = 21
    with pytest.raises(InputError, match="rerun with --fresh"):  # the same kind, another config: --fresh is offered
        Stages(out, other, fresh=False, kind="reproduce-full")


def test_reproduce_summary_states_the_sets_mpps_and_the_protocols_folds() -> None:
    from gapless.apps.reproduce import summary_markdown
    from gapless.eval.config import EvalConfig, protocol_settings

    cfg = load_experiment("reproduce_tiny", [])
    result = {"budget": "tiny", "seeds": [0], "gpus": 0, "regions": 40, "mpps": 5, "strategies": ["du", "cu"],
              "protocol": protocol_settings(EvalConfig(nested_folds=4)), "figure": "f.png", "verdict": {},
              "stages_s": {}}  # fmt: skip
    text = " ".join(summary_markdown(cfg, result).split())
    assert "40 regions at 5 mpps" in text and "4 outer folds of the paper's nested patient split" in text
    gapless = {**result, "protocol": protocol_settings(EvalConfig(protocol="gapless"))}
    assert "the set's patient-disjoint folds" in " ".join(summary_markdown(cfg, gapless).split())


def test_a_foreign_folder_is_never_used(tmp_path: Path, capsys) -> None:
    (tmp_path / "data.csv").write_text("x")
    assert main(["demo", "--out", str(tmp_path), "--fresh"]) == 2
    assert "no demo manifest" in " ".join(capsys.readouterr().err.split()) and (tmp_path / "data.csv").exists()
    assert main(["reproduce", "--out", str(tmp_path / "r"), "--strategies", "du,nope"]) == 2


def curve(values: list[float], noise: float = 0.005, folds: int = 5) -> dict[str, list[float]]:
    """Per-fold values per mpp: the curve plus a small fold-dependent wobble."""
    wobble = [noise * ((f * 7) % 5 - 2) / 2 for f in range(folds)]
    return {m: [v + w for w in wobble] for m, v in zip(MPPS, values)}


SAWTOOTH = [0.80, 0.74, 0.80, 0.75, 0.80, 0.74, 0.80]  # DU: dips of 5-6 points between the standard mpps
FLAT = [0.80, 0.80, 0.79, 0.79, 0.78, 0.78, 0.77]  # a smooth, slowly falling curve


def test_sawtooth_is_a_dip_and_a_flat_curve_is_not() -> None:
    saw = dip_test(curve(SAWTOOTH))
    assert saw["dips"] and saw["gap"] == pytest.approx((0.06 + 0.05 + 0.06) / 3, abs=1e-9)
    assert saw["per_mpp"] == pytest.approx({"0.375": 0.06, "0.75": 0.05, "1.5": 0.06})
    flat = dip_test(curve(FLAT))
    assert not flat["dips"] and abs(flat["gap"]) < 0.01


def test_a_dip_within_fold_noise_is_not_called() -> None:
    noisy = curve(SAWTOOTH)
    noisy["0.75"] = [0.85, 0.65, 0.85, 0.65, 0.75]  # the same mean dip, but folds disagree wildly
    noisy["0.375"] = [0.84, 0.64, 0.84, 0.64, 0.74]
    noisy["1.5"] = [0.84, 0.64, 0.84, 0.64, 0.74]
    assert not dip_test(noisy)["dips"]


def test_verdict_continuous_strategies_close_the_du_gap() -> None:
    result = strategy_verdict({"du": curve(SAWTOOTH), "cu": curve(FLAT), "minmax": curve(SAWTOOTH)})
    assert result["du_dips"] and result["effect"]
    assert result["closes"] == {"cu": True, "minmax": False}
    assert any("CU" in line and "closes the gap" in line for line in result["text"])


def test_verdict_says_plainly_when_the_effect_is_absent() -> None:
    result = strategy_verdict({"init": curve(FLAT), "du": curve(FLAT), "cu": curve(FLAT)})
    assert result["du_dips"] is False and not result["effect"] and result["closes"] == {"cu": False}
    assert any("did not appear" in line for line in result["text"])
    assert any("untrained" in line for line in result["text"])


@pytest.mark.slow
def test_full_size_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    result = json.loads((out / "demo.json").read_text())
    assert sorted(result["run"]["probes"]["linear"]["summary"]["balanced_accuracy"], key=float) == MPPS


@pytest.mark.slow
def test_reproduce_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "reproduce"
    assert main(["reproduce", "--budget", "tiny", "--out", str(out)]) == 0
    result = json.loads((out / "reproduce.json").read_text())
    assert set(result["balanced_accuracy"]["linear"]) == {"init", "fixed", "du", "cu", "maxavg", "minmax"}
    assert isinstance(result["verdict"]["linear"]["du_dips"], bool) and is_png(Path(result["figure"]))
    assert "Verdict" in (out / "SUMMARY.md").read_text()


def test_reproduce_strategies_and_fixed_baselines() -> None:
    base = load_experiment("reproduce_full", []).pretrain.data.sampling
    assert FULL_STRATEGIES == ("du", "cu", "maxavg", "minmax", "fixed_0.25", "fixed_0.5", "fixed_1", "fixed_2")
    fixed = sampling_for(base, "fixed_0.25")
    assert fixed.strategy == "fixed" and fixed.fixed_mpp == 0.25 and sampling_for(base, "minmax").strategy == "minmax"
    for bad in ("nope", "fixed_", "fixed_-1", "fixed_x"):
        with pytest.raises(InputError, match="--strategies"):
            sampling_for(base, bad)


def test_reproduce_states_its_gpu_hours_from_the_measured_rate() -> None:
    cfg = load_experiment("reproduce_full", [])
    text = estimate_gpu_hours(cfg, runs=8, gpus=8)
    # 8 runs x 12,500 iterations x 1,024 tiles / 669 tiles/s per H100
    assert "about 42.5 GPU-hours" in text and "5.3 h on 8 GPU(s)" in text
    assert "measured on an earlier form of the recipe" in text  # an estimate for the recipe as it is
    assert estimate_gpu_hours(load_experiment("reproduce_tiny", []), runs=5, gpus=0) is None  # not the measured model


def test_cpu_budgets_train_in_one_process(tmp_path: Path) -> None:
    """tiny and small train on the CPU: one process by default (not one per visible GPU, which would change the
    global batch and the lr), more refused before any work; a GPU budget takes --gpus as given."""
    assert training_processes(None, "cpu") == 1 and training_processes(0, "cpu") == 0
    assert training_processes(4, "auto") == 4 and training_processes(2, "cuda") == 2
    with pytest.raises(InputError, match="--gpus 2: pretrain.device is cpu"):
        training_processes(2, "cpu")
    with pytest.raises(InputError, match="--gpus must be >= 0"):
        training_processes(-1, "auto")
    out = tmp_path / "reproduce"
    assert main(["reproduce", "--budget", "small", "--out", str(out), "--gpus", "2"]) == 2
    assert not out.exists()


def fake_run(name: str, per_mpp_folds: dict[str, list[float]]) -> dict:
    """The part of an evaluation result the verdict reads."""
    summary = {m: {"folds": v, "mean": sum(v) / len(v), "std": 0.0} for m, v in per_mpp_folds.items()}
    return {"name": name, "probes": {"linear": {"summary": {"balanced_accuracy": summary}}}}


def test_verdict_over_seeds_and_per_seed(tmp_path: Path) -> None:
    def runs(shift: float) -> dict[str, dict]:
        saw = {m: [v + shift for v in f] for m, f in curve(SAWTOOTH).items()}
        flat = {m: [v + shift for v in f] for m, f in curve(FLAT).items()}
        return {"du": fake_run("du", saw), "cu": fake_run("cu", flat)}

    judged = verdicts({0: runs(0.0), 1: runs(0.01), 2: runs(-0.005)}, ["linear"])["linear"]
    assert set(judged["per_seed"]) == {"0", "1", "2"} and all(v["du_dips"] for v in judged["per_seed"].values())
    across = judged["across_seeds"]
    assert across["unit"] == "seeds" and judged["main"] is across and across["du_dips"] and across["closes"]["cu"]
    assert across["strategies"]["du"]["folds"] == pytest.approx([0.0567] * 3, abs=1e-3)  # one gap per seed
    assert "over seeds" in across["text"][0]
    single = verdicts({0: runs(0.0)}, ["linear"])["linear"]
    assert "across_seeds" not in single and single["main"]["unit"] == "folds"
    png = plot_reproduction({"du": curve(SAWTOOTH), "cu": curve(FLAT)}, single["main"], tmp_path / "r.png", "t")
    assert is_png(png)


@pytest.mark.slow
def test_reproduce_with_two_seeds(tmp_path: Path) -> None:
    out = tmp_path / "reproduce"
    args = ["reproduce", "--out", str(out), "--strategies", "du,fixed_1", "--seeds", "0,1", *MINI]
    assert main(args) == 0
    result = json.loads((out / "reproduce.json").read_text())
    assert result["seeds"] == [0, 1] and result["verdict"]["linear"]["unit"] == "seeds"
    assert set(result["verdict_per_seed"]["linear"]) == {"0", "1"}
    assert (out / "pretrain" / "fixed_1-seed1" / "backbone.pt").is_file() and is_png(Path(result["figure"]))
    records = [json.loads(ln) for ln in (out / "pretrain" / "du" / "metrics.jsonl").read_text().splitlines()]
    assert len(records[0]["rank_batch_sums"]) == 1  # the CPU budgets train in one process, whatever GPUs there are
    assert main(args) == 0  # everything reused
