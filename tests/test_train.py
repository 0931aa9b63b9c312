"""The trainer end to end on the tiny CPU config: synthetic data contract, loss going down, exact resume,
non-finite loss handling, config mistakes, checkpoint export and refusal. (Two ranks under torchrun:
tests/test_train_reliability.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gapless.cli import main as gapless_main
from gapless.config import ConfigError, load_config
from gapless.errors import InputError, NonFiniteLossError
from gapless.pipeline.loader import build_loader
from gapless.pipeline.source import Shard
from gapless.pipeline.synthetic import SyntheticLoader
from gapless.train.checkpoint import export_backbone, latest_checkpoint, list_checkpoints, load_teacher_backbone
from gapless.train.config import PretrainConfig
from gapless.train.export import export_timm
from gapless.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "pretrain_tiny_cpu.yaml"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, TINY, list(overrides))


def losses(run_dir: Path) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_synthetic_loader_contract() -> None:
    cfg = tiny("data.iterations_per_epoch=3")
    loader = build_loader(cfg.data, rank=0, world_size=2, start_iteration=0)
    batches = list(loader)
    assert len(batches) == 3 and len(list(loader)) == 3  # one epoch per pass
    b = batches[0]
    assert b["global_crops"].shape == (2 * 8, 3, 64, 64) and b["global_crops"].dtype == torch.float32
    assert b["local_crops"].shape == (4 * 8, 3, 32, 32)
    assert b["mpp"].shape == (8,) and b["level"].dtype == torch.long
    again = SyntheticLoader(cfg.data, Shard(rank=0, world_size=2, start=1))
    assert torch.equal(next(iter(again))["global_crops"], batches[1]["global_crops"])  # deterministic position
    other_rank = SyntheticLoader(cfg.data, Shard(rank=1, world_size=2))
    assert not torch.equal(next(iter(other_rank))["global_crops"], b["global_crops"])
    assert loader.stats()["batches"] == 6 and loader.stats()["skipped_tiles"] == 0
    resumed = SyntheticLoader(cfg.data, Shard(start=2))
    assert len(list(resumed)) == 3 and resumed.iteration == 5  # every epoch has iterations_per_epoch batches


def test_tiny_run_loss_goes_down(tmp_path: Path) -> None:
    # The shipped tiny config on the synthetic source (crops of 32 textured, coloured images).
    record = train(tiny("epochs=3", "checkpoint.every=100"), tmp_path)
    curve = losses(tmp_path)
    first, last = curve[1], sum(curve[i] for i in range(26, 31)) / 5
    assert last < 0.8 * first, curve
    # not collapsed: the teacher's target depends on the image (the mean target is broader than each one)
    assert record["teacher_marginal_entropy"] > record["teacher_entropy"] + 0.2
    assert record["iteration"] == 30 and 0 < record["data_wait_frac"] < 1 and record["images_per_s"] > 0
    assert record["loader_skipped_tiles"] == 0 and "teacher_temp" in record and "momentum" in record
    assert (tmp_path / "config.yaml").is_file() and latest_checkpoint(tmp_path).name == "ckpt_00000030.pt"


def test_stop_and_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = tiny("epochs=0.8", "checkpoint.every=3", "checkpoint.keep=2")
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", max_steps=5)  # stops after 5 steps (checkpoints at 3 and 5)
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["ckpt_00000003.pt", "ckpt_00000005.pt"]
    train(cfg, tmp_path / "resumed")  # a fresh process would do exactly this: pick up the last checkpoint
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 9))  # metrics of the resumed run continue the file
    for it in (6, 7, 8):  # bit for bit, as the README promises
        assert resumed[it] == straight[it], (it, straight, resumed)
    a = torch.load(latest_checkpoint(tmp_path / "straight"), weights_only=True)
    b = torch.load(latest_checkpoint(tmp_path / "resumed"), weights_only=True)
    for key in ("teacher", "student", "objective"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    for state, other in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(state[k], other[k]) for k in state)


def test_stop_and_resume_through_the_dali_pipeline(tmp_path: Path, synthetic_slides) -> None:
    """The same, fed by real slides through DALI's CPU graph: tiles, mpps and augmentations resume exactly."""
    cfg = tiny(
        "data.loader=dali",
        f"data.index={synthetic_slides.index}",
        "data.workers=0",
        "data.tile_px=96",
        "data.batch_size=4",
        "data.iterations_per_epoch=6",
        "epochs=1",
        "checkpoint.every=3",
    )
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", max_steps=3)
    train(cfg, tmp_path / "resumed")
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 7))
    for it in (4, 5, 6):
        assert resumed[it] == straight[it], (it, straight, resumed)


class NaNAfter:
    """A synthetic loader whose batch number `bad` is NaN, as a corrupt tile would be after normalisation; it counts
    its closes."""

    def __init__(self, loader: SyntheticLoader, bad: int) -> None:
        self.loader, self.bad, self.closes = loader, bad, 0

    def __iter__(self):
        for batch in self.loader:
            if self.loader.iteration - 1 == self.bad:
                batch["global_crops"][0, 0, 0, 0] = float("nan")
            yield batch

    def stats(self) -> dict[str, int]:
        return self.loader.stats()

    def close(self) -> None:
        self.closes += 1
        self.loader.close()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = tiny("checkpoint.every=2", "checkpoint.keep=5")
    loader = NaNAfter(SyntheticLoader(cfg.data), bad=5)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at iteration 5.*ckpt_00000004\.pt"):
        train(cfg, tmp_path, loader=loader)
    assert loader.closes == 1  # a caller's loader is closed once, however the run ends
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    _, _, step = load_teacher_backbone(latest_checkpoint(tmp_path))
    assert step == 4
    clean = NaNAfter(SyntheticLoader(cfg.data), bad=10**9)
    train(tiny("epochs=0.1"), tmp_path / "clean", loader=clean)
    assert clean.closes == 1
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_config_mistakes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optim.base_lrr"):
        tiny("optim.base_lrr=1e-3")
    with pytest.raises(ConfigError, match="model.arch"):
        tiny("model.arch=vit_huge")
    with pytest.raises(ConfigError, match="data.sampling"):
        tiny("data.sampling.strategy=gaussian")
    with pytest.raises(ConfigError, match="loss.centering"):
        tiny("loss.centering=none")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  drop_paht: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.drop_paht"):
        load_config(PretrainConfig, bad, [])


def test_checkpoint_from_other_config_is_refused(tmp_path: Path) -> None:
    train(tiny("epochs=0.2"), tmp_path)
    with pytest.raises(InputError, match=r"another config \(model.head_prototypes: 256 -> 512"):
        train(tiny("epochs=0.2", "model.head_prototypes=512"), tmp_path)
    with pytest.raises(InputError, match="--no-resume"):
        train(tiny("epochs=0.2"), tmp_path, resume=False)
    train(tiny("epochs=0.2", "log_every=5", "data.workers=7"), tmp_path)  # logistics may change


def test_export_and_load_teacher_backbone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "2024"  # a run folder named like a number is a folder, not a number
    assert gapless_main(["pretrain", "--config", str(TINY), "--out", "2024", "epochs=0.2"]) == 0
    assert load_config(PretrainConfig, run / "config.yaml").out == "2024"
    ckpt = latest_checkpoint(run)
    assert gapless_main(["export", str(ckpt), "--out", str(tmp_path / "backbone.pt")]) == 0
    full, config, step = load_teacher_backbone(ckpt)
    exported, config2, step2 = load_teacher_backbone(tmp_path / "backbone.pt")
    assert step == step2 == 2 and config == config2 and config["model"]["arch"] == "vit_tiny_test"
    assert not exported.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = full.forward_features(x), exported.forward_features(x)
    assert torch.equal(a["x_norm_clstoken"], b["x_norm_clstoken"])
    assert (tmp_path / "backbone.pt").stat().st_size < ckpt.stat().st_size
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a gapless checkpoint"):
        load_teacher_backbone(junk)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt: not a gapless checkpoint"):
        load_teacher_backbone(tmp_path / "other.pt")
    assert gapless_main(["export", str(junk), "--out", str(tmp_path / "x.pt")]) == 2


@pytest.mark.slow
def test_compiled_blocks_train_as_eager_ones(tmp_path: Path) -> None:
    """compile=true (torch.compile of each block, off by default) gives the eager run's losses to round-off."""
    eager = train(tiny("epochs=0.3", "checkpoint.every=100"), tmp_path / "eager")
    compiled = train(tiny("epochs=0.3", "checkpoint.every=100", "compile=true"), tmp_path / "compiled")
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)


def test_export_replaces_only_an_export(tmp_path: Path) -> None:
    """--out may be a new file or an earlier export, never the checkpoint or another file; for timm a new folder,
    an empty one or an earlier export, never the checkpoint's folder or a folder of other files."""
    train(tiny("epochs=0.2"), tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    before = ckpt.read_bytes()
    assert gapless_main(["export", str(ckpt), "--out", str(ckpt)]) == 2
    alias = tmp_path / "alias.pt"
    alias.hardlink_to(ckpt)  # the same file by another name
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(InputError, match="alias.pt: is the checkpoint, .*; give another file name for an exported"):
        export_backbone(ckpt, alias)
    with pytest.raises(InputError, match="notes.txt: exists and is not an exported backbone"):
        export_backbone(ckpt, other)
    assert ckpt.read_bytes() == before and other.read_text() == "keep me"
    backbone = tmp_path / "backbone.pt"
    assert gapless_main(["export", str(ckpt), "--out", str(backbone)]) == 0
    assert gapless_main(["export", str(ckpt), "--out", str(backbone)]) == 0  # an export is replaced

    folder = tmp_path / "timm"
    assert gapless_main(["export", str(ckpt), "--format", "timm", "--out", str(folder)]) == 0
    assert gapless_main(["export", str(ckpt), "--format", "timm", "--out", str(folder)]) == 0
    with pytest.raises(InputError, match="is the checkpoint's folder"):
        export_timm(ckpt, ckpt.parent)
    with pytest.raises(InputError, match="exists and is not a folder"):
        export_timm(ckpt, ckpt)
    released = tmp_path / "released"  # a model folder of the same layout that gapless did not write
    released.mkdir()
    (released / "config.json").write_text('{"architecture": "vit_small_patch16_224"}')
    (folder / "README.md").write_text("mine")
    for out in (released, folder):
        with pytest.raises(InputError, match=f"{out.name}: holds other files than a timm export"):
            export_timm(ckpt, out)
    assert (released / "config.json").read_text() == '{"architecture": "vit_small_patch16_224"}'
    assert gapless_main(["export", str(ckpt), "--format", "timm", "--out", str(tmp_path / "run")]) == 2
    assert ckpt.read_bytes() == before
