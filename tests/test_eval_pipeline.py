"""Evaluation sets from region images, features from a real (tiny) checkpoint, `gapless evaluate`, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from gapless.cli import main
from gapless.errors import InputError
from gapless.eval.features import FeatureFile, featurise_checkpoint, stored_model
from gapless.eval.sets.file import EvalSet

TILE = 64  # small tiles keep the tests fast; the coarsest footprint is then 64 * 2.0 / 0.25 = 512 px
MPPS = [0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0]
N = 28  # regions (the 300 px image is dropped)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def same_tissue_crops(tile_fine: np.ndarray, tile: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The centre of the finest tile shrunk by ``factor``, and the same physical area cut from the coarser tile.

    Sizes are chosen so both crops are exactly centred (even sides) and the factor divides exactly.
    """
    side = len(tile_fine)
    for c in range(side, 0, -2):
        s = c / factor
        if s == int(s) and int(s) % 2 == 0 and s > 0:
            break
    fine = tile_fine[(side - c) // 2 : (side + c) // 2, (side - c) // 2 : (side + c) // 2]
    fine = cv2.resize(fine, (int(s), int(s)), interpolation=cv2.INTER_AREA)
    o = (side - int(s)) // 2
    return fine, tile[o : o + int(s), o : o + int(s)]


@pytest.fixture(scope="module")
def region_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled region images at 0.25 mpp: smooth tissue-like colour fields, class-dependent hue; one too small."""
    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(0)
    rows = ["path,label,patient,mpp"]
    for i in range(N):  # two regions per patient, one label per patient: 7 patients per class
        label = ("benign", "tumour")[(i // 2) % 2]
        noise = rng.normal(size=(128, 128, 3)).astype(np.float32)
        field = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 2), (520, 520), interpolation=cv2.INTER_CUBIC)
        tint = np.array([190, 120, 170] if label == "benign" else [150, 90, 200], np.float32)
        image = np.clip(tint + 40 * field / field.std(), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f"r{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(f"r{i}.png,{label},pat{i // 2},0.25")
    cv2.imwrite(str(root / "small.png"), np.zeros((300, 300, 3), np.uint8))
    rows.append("small.png,benign,pat99,0.25")
    (root / "regions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def bench_path(region_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("set") / "set.h5"
    args = ["eval-set", str(region_dir), "--out", str(out), "--tile-px", str(TILE), "--folds", "4"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported gapless backbone of a tiny real ViT (the format `train.checkpoint` writes)."""
    from gapless.config import to_dict
    from gapless.train.checkpoint import BACKBONE_FORMAT, FORMAT_VERSION
    from gapless.train.config import ModelConfig
    from gapless.train.vit import build_vit

    model_cfg = to_dict(ModelConfig(arch="vit_tiny_test", drop_path=0.0))
    torch.manual_seed(0)
    vit = build_vit(model_cfg, TILE, drop_path=0.0)
    config = {"model": model_cfg, "data": {"augment": {"global_size": TILE}}}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    state = {"format": BACKBONE_FORMAT, "version": FORMAT_VERSION, "iteration": 7, "config": config}
    torch.save({**state, "backbone": vit.state_dict()}, path)
    return path


def test_set_holds_every_region_at_every_mpp_with_folds(bench_path: Path) -> None:
    evalset = EvalSet.load(bench_path)
    assert evalset.mpps == MPPS and len(evalset) == N  # the 300 px image is too small for 2.0 mpp: dropped
    assert evalset.classes == ["benign", "tumour"] and set(evalset.labels) == {0, 1}
    assert set(evalset.folds) == {0, 1, 2, 3}
    for p in np.unique(evalset.patients):
        assert len(set(evalset.folds[evalset.patients == p])) == 1
    assert evalset.read_tiles(1.5).shape == (N, TILE, TILE, 3)
    with h5py.File(bench_path) as f:
        assert f["tiles/0.375"].compression == "gzip" and f["tiles/0.375"].chunks == (1, TILE, TILE, 3)


def test_every_mpp_shows_the_same_tissue(bench_path: Path) -> None:
    evalset = EvalSet.load(bench_path)
    finest = evalset.read_tiles(0.25)
    for m in MPPS[1:]:
        tiles = evalset.read_tiles(m)
        for i in range(0, len(evalset), 5):
            fine, coarse = same_tissue_crops(finest[i], tiles[i], m / 0.25)
            assert psnr(fine, coarse) > 30, f"mpp {m}, region {i}"
        # and a different region does not match: the test can fail
        fine, coarse = same_tissue_crops(finest[0], tiles[1], m / 0.25)
        assert psnr(fine, coarse) < 25


def test_features_are_two_unit_halves_stored_per_mpp(bench_path: Path, checkpoint: Path, tmp_path: Path,
                                                     capsys) -> None:  # fmt: skip
    evalset = EvalSet.load(bench_path)
    out = tmp_path / "feats.h5"
    args = ["features", str(checkpoint), "--set", str(bench_path), "--out", str(out), "--batch-size", "10"]
    assert main([*args, "--device", "cpu"]) == 0
    feats = FeatureFile.load(out, evalset)
    assert stored_model(out) == feats.model and feats.model["kind"] == "gapless"
    assert "(gapless model, 1 prefix tokens, patch" in " ".join(capsys.readouterr().err.split())
    assert feats.dim == 64 and feats.step == 7 and feats.config["model"]["arch"] == "vit_tiny_test"
    x = feats.features["0.75"]
    np.testing.assert_allclose(np.linalg.norm(x[:, :32], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x[:, 32:], axis=1), 1, atol=1e-5)
    assert not np.allclose(feats.features["0.25"], feats.features["2"])


def test_evaluate_writes_json_tables_and_plots(bench_path: Path, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    overrides = ["linear_cs=[0.1, 10.0]", "knn_ks=[1, 5]"]
    args = ["evaluate", str(checkpoint), str(checkpoint), "--set", str(bench_path), "--out", str(out), *overrides]
    assert main([*args, "--name", "a", "b"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["a", "b"]
    run = report["runs"][0]
    assert "singular values" in report["rankme_method"] and run["step"] == 7
    assert "fewer samples than dimensions" in run["rankme"]["warning"]  # 28 regions, 64 dimensions
    assert set(run["rankme"]["values"]) == {"0.25", "0.375", "0.5", "0.75", "1", "1.5", "2"}
    assert (
        set(run["rankme_paper"]["values"]) == set(run["rankme"]["values"])
        and "clamped" in run["rankme_paper"]["method"]
    )
    bal = run["probes"]["linear"]["summary"]["balanced_accuracy"]["0.375"]
    assert len(bal["folds"]) == 5 and 0 <= bal["mean"] <= 1  # the paper's protocol: 5 outer folds over 14 patients
    assert report["protocol"] == {"protocol": "paper", "split": "nested", "refit": False, "f1_labels": "present",
                                  "nested_folds": 5, "split_seed": 42}  # fmt: skip
    assert sum(run["split_sizes"][0]) == N and report["resampling"] == "paper"
    assert run["model"]["kind"] == "gapless" and "names none" in run["model"]["normalisation_source"]
    assert set(run["gap"]["knn/balanced_accuracy"]) == {"0.375", "0.75", "1.5", "mean"}
    for name in ("rankme", "rankme_paper", "knn_balanced_accuracy", "linear_weighted_f1", "gap"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / "features" / "a.h5").is_file()
    # features files are used as they are: the same numbers without a checkpoint
    again = tmp_path / "again"
    assert (
        main(["evaluate", str(out / "features" / "a.h5"), "--set", str(bench_path), "--out", str(again), *overrides])
        == 0
    )
    rerun = json.loads((again / "report.json").read_text())["runs"][0]
    assert rerun["probes"]["knn"]["summary"] == run["probes"]["knn"]["summary"]


def test_adding_a_model_computes_only_its_features(bench_path: Path, checkpoint: Path, tmp_path: Path) -> None:
    from gapless.train.export import export_timm

    out = tmp_path / "report"
    fast = ["probes=[knn]", "knn_ks=[1, 5]"]
    assert main(["evaluate", str(checkpoint), "--set", str(bench_path), "--out", str(out), *fast, "--name", "a"]) == 0
    cached = out / "features" / "a.h5"
    before = cached.stat().st_mtime_ns
    exported = export_timm(checkpoint, tmp_path / "timm")  # the same weights as a released timm folder
    args = ["evaluate", str(checkpoint), str(exported), "--set", str(bench_path), "--out", str(out), *fast]
    assert main([*args, "--name", "a", "b"]) == 0
    assert cached.stat().st_mtime_ns == before and (out / "features" / "b.h5").is_file()
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["model"]["kind"] for r in runs] == ["gapless", "released"]
    a, b = (FeatureFile.load(out / "features" / f"{n}.h5", EvalSet.load(bench_path)) for n in "ab")
    assert max(np.abs(a.features[m] - b.features[m]).max() for m in a.features) <= 1e-5  # one model, two formats
    torch.save(torch.load(checkpoint, weights_only=True), checkpoint.with_name("touched.pt"))
    checkpoint.with_name("touched.pt").replace(checkpoint)  # a changed file is featurised again
    assert main([*args, "--name", "a", "b"]) == 0 and cached.stat().st_mtime_ns != before


def test_a_set_too_small_for_the_nested_split_is_refused(bench_path: Path, checkpoint: Path, tmp_path, capsys) -> None:
    code = main(["evaluate", str(checkpoint), "--set", str(bench_path), "--out", str(tmp_path), "nested_folds=7"])
    message = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "too few patients for the paper's nested split" in message
    assert "benign has 7" in message and "protocol=gapless" in message and not (tmp_path / "features").exists()


def test_bad_inputs_give_clear_errors(bench_path: Path, checkpoint: Path, tmp_path: Path, capsys) -> None:
    unlabelled = tmp_path / "unlabelled.h5"
    unlabelled.write_bytes(bench_path.read_bytes())
    with h5py.File(unlabelled, "a") as f:
        del f["labels"]
    with pytest.raises(InputError, match="unlabelled.h5: the set has no 'labels'"):
        EvalSet.load(unlabelled)

    evalset = EvalSet.load(bench_path)
    feats = featurise_checkpoint(checkpoint, evalset, tmp_path / "f.h5", batch_size=N, device="cpu")
    with h5py.File(feats, "a") as f:
        del f["features/0.5"]
        f["features/0.5"] = np.zeros((len(evalset), 48), np.float32)
    with pytest.raises(InputError, match=r"f.h5: features at mpp 0.5 have shape \(28, 48\), expected \(28, 64\)"):
        FeatureFile.load(feats, evalset)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    code = main(["evaluate", str(foreign), "--set", str(bench_path), "--out", str(tmp_path / "r")])
    assert code == 2 and "foreign.pt: not a gapless checkpoint" in " ".join(capsys.readouterr().err.split())
    for command, out in (("evaluate", tmp_path / "r"), ("features", tmp_path / "g.h5")):  # timm builds take them
        code = main([command, str(checkpoint), "--set", str(bench_path), "--out", str(out), "model.depth=3"])
        assert code == 2 and "model.KEY=VALUE or --model-args given but" in " ".join(capsys.readouterr().err.split())

    bad_csv = tmp_path / "labels.csv"
    bad_csv.write_text("name,class\nx,y\n")
    code = main(["eval-set", str(tmp_path / "nowhere.tif"), "--labels", str(bad_csv), "--out", str(tmp_path / "s.h5")])
    assert code == 2 and "missing column(s) slide, label" in " ".join(capsys.readouterr().err.split())


@pytest.mark.gpu
def test_gpu_features_match_the_cpu_ones(bench_path: Path, checkpoint: Path, tmp_path: Path) -> None:
    evalset = EvalSet.load(bench_path)
    cpu = FeatureFile.load(featurise_checkpoint(checkpoint, evalset, tmp_path / "c.h5", device="cpu"), evalset)
    gpu = FeatureFile.load(featurise_checkpoint(checkpoint, evalset, tmp_path / "g.h5", device="cuda"), evalset)
    for key, x in cpu.features.items():  # bf16 autocast on the GPU: close, not equal
        cosine = np.sum(x * gpu.features[key], axis=1) / 2  # two unit halves: the full vectors have norm sqrt(2)
        assert cosine.min() > 0.99, key
