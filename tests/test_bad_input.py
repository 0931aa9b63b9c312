"""Every subcommand against a corpus of bad input: exit status 2, one error line naming the file or key, no traceback.

Missing, empty, truncated and wrong-kind files, values of the wrong type or out of range, unknown keys, and output
paths that exist as a file or a folder. Each case runs the console script's ``main`` in this process, so a traceback
would fail the test as the exception itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gapless.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, synthetic_slides) -> Path:
    """A folder of bad inputs beside one real slide folder (``slides/``)."""
    root = tmp_path_factory.mktemp("bad")
    (root / "notes.txt").write_text("not a slide\n")
    (root / "empty.svs").write_bytes(b"")
    (root / "trunc.tiff").write_bytes(b"II*\x00garbage")
    (root / "bad.csv").write_text("a,b\n1,2\n")
    (root / "latin1.csv").write_bytes("slide,label\nslide_000.tiff,tumeur \xe9\n".encode("latin-1"))
    (root / "mpp.csv").write_text("slide,label,mpp\nslide_000.tiff,regular,fast\n")
    (root / "broken.yaml").write_text("x: [\n")
    (root / "unknown.yaml").write_text("nope: 1\n")
    (root / "folder").mkdir()
    (root / "empty_folder").mkdir()
    slides = root / "slides"
    slides.mkdir()
    shutil.copy(synthetic_slides.paths[0], slides / synthetic_slides.paths[0].name)
    shutil.copy(synthetic_slides.labels_csv, root / "labels.csv")
    shutil.copy(synthetic_slides.index, root / "index.h5")
    _regions_set_and_model(root)
    INPUTS.update({p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()})
    return root


def _regions_set_and_model(root: Path) -> None:
    """``regions.csv`` (labelled region images), ``set.h5`` (an evaluation set of them) and ``model.pt`` (a tiny
    exported backbone): inputs that work, so a command refused for its --out is refused for that alone."""
    import cv2
    import numpy as np
    import torch

    from gapless.config import to_dict
    from gapless.eval.sets.build import build_set
    from gapless.train.checkpoint import BACKBONE_FORMAT, FORMAT_VERSION
    from gapless.train.config import ModelConfig
    from gapless.train.vit import build_vit

    rows = ["path,label,patient,mpp"]
    for i in range(12):  # two regions per patient, three patients per class
        cv2.imwrite(str(root / f"r{i}.png"), np.full((64, 64, 3), 60 + 15 * i, np.uint8))
        rows.append(f"r{i}.png,{('a', 'b')[(i // 2) % 2]},p{i // 2},0.5")
    (root / "regions.csv").write_text("\n".join(rows) + "\n")
    build_set([str(root / "regions.csv")], root / "set.h5", mpps=REGION_MPPS, n_folds=3, tile_px=32)
    model = to_dict(ModelConfig(arch="vit_tiny_test", drop_path=0.0))
    config = {"model": model, "data": {"augment": {"global_size": 32}}}
    state = build_vit(model, 32, drop_path=0.0).state_dict()
    torch.save({"format": BACKBONE_FORMAT, "version": FORMAT_VERSION, "iteration": 0, "config": config,
                "backbone": state}, root / "model.pt")  # fmt: skip


REGION_MPPS = [0.5, 1.0]
REGIONS = ["eval-set", "regions.csv", "--mpps", "0.5,1", "--tile-px", "32", "--folds", "3"]
FEATURES = ["features", "model.pt", "--set", "set.h5", "--device", "cpu"]
INPUTS: dict[Path, int] = {}  # the files the fixture made, and when: no bad command may change them


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """(exit status, what was printed on stderr) of ``gapless ARGS``; argparse's own exits included."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


PRETRAIN = ["pretrain", "--config", "pretrain_tiny_cpu", "--out", "run"]
FROM_SLIDES = [*PRETRAIN, "data.loader=baseline", "data.index=index.h5"]  # tiles read from the slides of the index
CASES = [
    (["sampling", "--range", "2", "1"], "high"),
    (["sampling", "--grid", "3"], "grid"),
    (["sampling", "--strategies", "nope"], "nope"),
    (["sampling", "--lam", "-1"], "lam"),
    (["sampling", "--json", "folder"], "folder"),
    (["sampling", "--plot", "folder"], "folder"),
    (["sampling", "draw", "--strategy", "cu", "-n", "0", "--out", "x.npy"], "-n"),
    (["sampling", "draw", "--strategy", "cu", "-n", "10", "--out", "folder"], "folder"),
    (
        ["sampling", "draw", "--strategy", "file", "-n", "9", "--out", "x.npy", "--density-file", "notes.txt"],
        "notes.txt",
    ),
    (["synth", "--out", "notes.txt"], "notes.txt"),
    (["synth", "--out", "s", "--slides", "-1"], "--slides"),
    (["synth", "--out", "s", "--size-mm", "0", "1"], "--size-mm"),
    (["synth", "--out", "s", "--format", "ndpi"], "ndpi"),
    (["index", "missing_folder", "--out", "i.h5"], "missing_folder"),
    (["index", "empty_folder", "--out", "i.h5"], "no slides found"),
    (["index", "notes.txt", "--out", "i.h5", "--workers", "1"], "usable"),
    (["index", "slides", "--out", "labels.csv", "--workers", "1"], "labels.csv"),
    (["index", "slides", "--out", "folder", "--workers", "1"], "folder"),
    (["index", "slides", "--out", "i.h5", "--labels", "missing.csv"], "missing.csv"),
    (["index", "slides", "--out", "i.h5", "--labels", "bad.csv"], "bad.csv"),
    (["index", "slides", "--out", "i.h5", "--labels", "latin1.csv"], "latin1.csv"),
    (["index", "slides", "--out", "i.h5", "--labels", "mpp.csv"], "mpp.csv"),
    (["index", "slides", "--out", "i.h5", "--workers", "0"], "--workers"),
    (["index", "merge", "labels.csv", "--out", "m.h5"], "labels.csv: not a gapless slide index (not an HDF5 file)"),
    ([*PRETRAIN, "data.loader=baseline", "data.index=notes.txt"], "notes.txt: not a gapless slide index (not an HDF5"),
    (["tiles", "missing.svs", "--mpp", "0.5", "--out", "t.png"], "missing.svs"),
    (["tiles", "notes.txt", "--mpp", "0.5", "--out", "t.png"], "notes.txt"),
    (["tiles", "empty.svs", "--mpp", "0.5", "--out", "t.png"], "empty.svs"),
    (["tiles", "trunc.tiff", "--mpp", "0.5", "--out", "t.png"], "trunc.tiff"),
    (["tiles", "notes.txt", "--mpp", "-1", "--out", "t.png"], "--mpp"),
    (["tiles", "notes.txt", "--mpp", "0.5", "--out", "t.jpg"], "t.jpg"),
    (["tiles", "notes.txt", "--mpp", "0.5", "--n", "0", "--out", "t.png"], "--n"),
    (["tiles", "slides/slide_000.tiff", "--mpp", "0.5", "--tile-px", "8", "--out", "t.png"], "--tile-px"),
    (["tiles", "slides/slide_000.tiff", "--mpp", "0.5", "--tissue-threshold", "2", "--out", "t.png"], "--tissue"),
    (["tiles", "slides/slide_000.tiff", "--mpp", "0.5", "--tissue-threshold", "-1", "--out", "t.png"], "--tissue"),
    (["pretrain", "--config", "missing.yaml", "--out", "run"], "missing.yaml"),
    (["pretrain", "--config", "broken.yaml", "--out", "run"], "broken.yaml"),
    (["pretrain", "--config", "unknown.yaml", "--out", "run"], "nope"),
    ([*PRETRAIN, "data.augment.global_size=70"], "global_size"),
    ([*PRETRAIN, "data.augment.local_crops=-1"], "local_crops"),
    ([*PRETRAIN, "data.augment.global_crops=0"], "global_crops"),
    ([*PRETRAIN, "data.augment.local_scale=[0.5, 0.2]"], "local_scale"),
    ([*PRETRAIN, "model.patch_size=7"], "patch_size"),
    ([*PRETRAIN, "data.batch_size=0"], "batch_size"),
    ([*PRETRAIN, "data.batch_size=many"], "batch_size"),
    ([*PRETRAIN, "epochs=-1"], "epochs"),
    ([*PRETRAIN, "data.max_read_retries=-1"], "max_read_retries"),
    ([*PRETRAIN, "data.handle_cache=0"], "handle_cache"),
    ([*PRETRAIN, "nope=1"], "nope"),
    ([*FROM_SLIDES, "data.sampling.strategy=file", "data.sampling.density_file=/nonexistent.csv"], "nonexistent.csv"),
    ([*FROM_SLIDES, "data.sampling.strategy=file", "data.sampling.density_file=notes.txt"], "notes.txt"),
    ([*FROM_SLIDES, "data.sampling.strategy=file", "data.sampling.density_file=bad.csv"], "bad.csv"),
    ([*FROM_SLIDES, "data.sampling.strategy=file"], "density_file"),
    (["pretrain", "--config", "pretrain_tiny_cpu", "--out", "notes.txt"], "notes.txt"),
    ([*PRETRAIN, "data.loader=dali", "data.index=notes.txt"], "notes.txt"),
    ([*PRETRAIN, "data.loader=dali", "data.index=missing.h5"], "missing.h5"),
    ([*PRETRAIN, "--max-steps", "0"], "--max-steps"),
    (["export", "missing.pt", "--out", "b.pt"], "missing.pt"),
    (["export", "notes.txt", "--out", "b.pt"], "notes.txt"),
    (["eval-set", "missing.h5", "--out", "e.h5"], "missing.h5"),
    (["eval-set", "notes.txt", "--out", "e.h5"], "notes.txt"),
    (["eval-set", "empty_folder", "--out", "e.h5"], "empty_folder"),
    (["eval-set", "bad.csv", "--out", "e.h5"], "bad.csv"),
    (["eval-set", "slides", "--out", "e.h5", "--labels", "bad.csv"], "bad.csv"),
    (["eval-set", "slides", "--out", "e.h5", "--labels", "labels.csv", "--folds", "1"], "fold"),
    (["eval-set", "slides", "--out", "e.h5", "--mpps", "0,1"], "--mpps"),
    ([*REGIONS, "--out", "regions.csv"], "regions.csv"),
    ([*REGIONS, "--out", "r0.png"], "r0.png"),
    ([*REGIONS, "--out", "notes.txt"], "notes.txt"),
    ([*REGIONS, "--out", "folder"], "folder"),
    (["eval-set", "index.h5", "--out", "index.h5"], "index.h5"),
    (["eval-set", "slides", "--labels", "labels.csv", "--out", "labels.csv"], "labels.csv"),
    (["eval-set", "slides", "--labels", "labels.csv", "--out", "folder"], "folder"),
    (["features", "missing.pt", "--set", "e.h5", "--out", "f.h5"], "e.h5"),
    ([*FEATURES, "--out", "set.h5"], "set.h5"),
    ([*FEATURES, "--out", "model.pt"], "model.pt"),
    ([*FEATURES, "--out", "notes.txt"], "notes.txt"),
    ([*FEATURES, "--out", "folder"], "folder"),
    (["features", "notes.txt", "--set", "notes.txt", "--out", "f.h5"], "notes.txt"),
    (["evaluate", "notes.txt", "--set", "notes.txt", "--out", "report"], "notes.txt"),
    (["evaluate", "missing.h5", "--set", "missing.h5", "--out", "report"], "missing.h5"),
    (["evaluate", "timm:vit_small_patch16_224", "--set", "notes.txt", "--out", "report"], "notes.txt"),
    (["features", "timm:vit_small_patch16_224", "--set", "notes.txt", "--out", "f.h5"], "notes.txt"),
    (["bench", "--index", "notes.txt", "--out", "b"], "notes.txt"),
    (["bench", "--index", "missing.h5", "--out", "b"], "missing.h5"),
    (["bench", "workers=-1"], "workers"),
    (["bench", "nope=1"], "nope"),
    (["bench", "--compare", "notes.txt", "missing.json"], "notes.txt"),
    (["demo", "--out", "notes.txt"], "notes.txt"),
    (["demo", "--config", "missing.yaml"], "missing.yaml"),
    (["demo", "--out", "d", "nope=1"], "nope"),
    (["reproduce", "--out", "r", "--strategies", "nope"], "nope"),
    (["reproduce", "--out", "r", "nope.x=1"], "nope"),
]


@pytest.mark.parametrize(("args", "named"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line_and_status_2(args: list[str], named: str, bad: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(bad)
    code, err = run(args, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert code == 2, err
    assert len(errors) == 1 and named in errors[0], err
    assert "Traceback" not in err
    after = {p: p.stat().st_mtime_ns for p in INPUTS if p.exists()}
    assert after == INPUTS, "a bad command changed or removed an input"  # nothing the user gave is touched


def test_eval_set_and_features_replace_an_earlier_output_of_their_own(bad: Path, tmp_path: Path, capsys, monkeypatch):
    """What the refusals above leave allowed: writing over a set or a features file, as a rebuild does."""
    from gapless.eval.features import FeatureFile
    from gapless.eval.sets.file import EvalSet

    monkeypatch.chdir(bad)
    out, feats = tmp_path / "set.h5", tmp_path / "feats.h5"
    ids = []
    for _ in range(2):
        assert run([*REGIONS, "--out", str(out)], capsys)[0] == 0
        ids.append(EvalSet.load(out).set_id)
        assert run(["features", "model.pt", "--set", str(out), "--out", str(feats)], capsys)[0] == 0
    assert ids[0] != ids[1] and FeatureFile.load(feats, EvalSet.load(out)).source == "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats.h5", "set.h5"]  # no temporary file left
