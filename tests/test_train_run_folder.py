"""The run folder under what breaks it: an unwritable ``--out``, a full disk while checkpointing, a truncated
checkpoint (set aside, never deleted), and pruning past a damaged newer checkpoint."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from gapless.cli import main as gapless_main
from gapless.config import load_config
from gapless.train.checkpoint import checkpoint_path, latest_checkpoint, list_checkpoints
from gapless.train.config import PretrainConfig
from gapless.train.loop import train
from gapless.train.run_lock import LOCK_NAME

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, "pretrain_tiny_cpu", list(overrides))


def test_unwritable_out_is_refused_before_training(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "results.csv"
    blocker.write_text("a file, not a folder")
    assert gapless_main(["pretrain", "--config", "pretrain_tiny_cpu", "--out", str(blocker / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "results.csv" in err and "Traceback" not in err and blocker.read_text() == "a file, not a folder"


def test_a_full_disk_while_checkpointing_is_one_line_and_leaves_no_temporary_file(
    tmp_path: Path, capsys, dev_full: str
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    # The checkpoint of iteration 2 is written under this temporary name: on /dev/full, the kernel's ENOSPC.
    target = checkpoint_path(run, 2)
    target.with_name(target.name + ".tmp").symlink_to(dev_full)
    assert gapless_main(["pretrain", "--config", "pretrain_tiny_cpu", "--out", str(run), "checkpoint.every=2"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{target}: cannot write (No space left on device)" in err and "Traceback" not in err
    assert not list((run / "checkpoints").iterdir()) and not (run / LOCK_NAME).exists()


def test_a_truncated_latest_checkpoint_falls_back_with_a_warning(tmp_path: Path, capsys) -> None:
    cfg = tiny("epochs=0.6", "checkpoint.every=2", "checkpoint.keep=3")
    train(cfg, tmp_path, max_steps=4)
    newest = latest_checkpoint(tmp_path)
    size = newest.stat().st_size // 2
    os.truncate(newest, size)  # as a full disk or an interrupted copy leaves it
    record = train(cfg, tmp_path)
    err = " ".join(capsys.readouterr().err.split())
    assert f"{newest}: not a gapless checkpoint" in err and "resuming from" in err and "ckpt_00000002.pt" in err
    assert record["iteration"] == 6 and [p.name for p in list_checkpoints(tmp_path)][-1] == "ckpt_00000006.pt"
    assert torch.load(checkpoint_path(tmp_path, 4), weights_only=True)["iteration"] == 4  # rewritten whole
    damaged = newest.with_name(newest.name + ".damaged")  # set aside, never deleted
    assert damaged.stat().st_size == size and f"set aside as {damaged.name}" in err


def test_pruning_never_deletes_the_checkpoint_just_written_past_a_damaged_newer_one(tmp_path: Path, capsys) -> None:
    """Resumed from iteration 2 past a damaged iteration 4 and keeping one checkpoint: the checkpoint of iteration 3
    is the one kept, the damaged file is set aside, and the next run resumes from 3."""
    train(tiny("epochs=0.6", "checkpoint.every=2", "checkpoint.keep=2"), tmp_path, max_steps=4)
    damaged = checkpoint_path(tmp_path, 4)
    size = damaged.stat().st_size // 2
    os.truncate(damaged, size)
    cfg = tiny("epochs=0.6", "checkpoint.every=2", "checkpoint.keep=1")
    assert train(cfg, tmp_path, max_steps=1)["iteration"] == 3
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000003.pt"]
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 3)
    aside = damaged.with_name(damaged.name + ".damaged")
    assert aside.stat().st_size == size  # kept as it was: nothing the user did not ask to drop is lost
    capsys.readouterr()
    assert train(cfg, tmp_path, max_steps=1)["iteration"] == 4
    assert "warning" not in capsys.readouterr().err


def test_a_folder_where_the_lock_cannot_be_linked_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """The lock is taken with a hard link; a file system without them (EPERM) is named, not a traceback."""

    def no_hard_links(src: str, dst: str) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), src)

    monkeypatch.setattr(os, "link", no_hard_links)
    run = tmp_path / "run"
    assert gapless_main(["pretrain", "--config", "pretrain_tiny_cpu", "--out", str(run), "epochs=0.1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{run}: cannot take the run folder's lock (Operation not permitted)" in err and "Traceback" not in err
    assert not list(run.glob(f"{LOCK_NAME}*"))  # the temporary lock file is removed too
