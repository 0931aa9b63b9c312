"""Indexing at scale: shards and merge, resuming a killed run, workers that die with their parent, full disks and
unwritable outputs, and an index that loads lazily (one record made per slide asked for)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import psutil
import pytest

from gapless.cli import main
from gapless.errors import InputError
from gapless.pipeline.slides import SlideIndex
from gapless.pipeline.slides.index_file import write_index
from gapless.pipeline.slides.indexer import build_index, in_shard, parse_shard
from gapless.pipeline.slides.merge import merge_indexes


@pytest.fixture
def many(synthetic_slides, tmp_path):
    """Twelve slide files (links to the four synthetic slides) and their labels."""
    folder = tmp_path / "many"
    folder.mkdir()
    rows = ["slide,label,patient"]
    for i in range(12):
        source = synthetic_slides.paths[i % 4]
        os.link(source, folder / f"s{i:02d}.tiff")
        rows.append(f"s{i:02d}.tiff,{synthetic_slides.labels[source.name]},p{i}")
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    return folder, labels


def _contents(path) -> dict[str, tuple]:
    index = SlideIndex.load(path)
    out = {r.path: (r.label, r.patient, r.mpp, r.levels, int(r.tissue_mask().mask.sum())) for r in index.records}
    index.close()
    return out


def test_shards_split_the_slides_and_merge_back_into_the_whole_index(many, tmp_path, capsys) -> None:
    folder, labels = many
    whole = tmp_path / "whole.h5"
    build_index([folder], whole, labels)
    parts = []
    for i in range(3):
        part = tmp_path / f"part{i}.h5"
        assert main(["index", str(folder), "--labels", str(labels), "--out", str(part), "--shard", f"{i}/3",
                     "--workers", "1"]) == 0  # fmt: skip
        assert all(in_shard(p, (i, 3)) for p in _contents(part))
        assert "no slide found" not in capsys.readouterr().err  # rows of other shards' slides are not strays
        parts.append(str(part))
    assert sum(len(_contents(p)) for p in parts) == 12
    merged = tmp_path / "merged.h5"
    assert main(["index", "merge", *parts, "--out", str(merged)]) == 0
    assert _contents(merged) == _contents(whole)
    assert SlideIndex.load(merged).settings == {"mask_mpp": 8.0, "mpp": None, "shard": None}

    with pytest.raises(InputError, match="shard\\(s\\) 2/3 missing: index them .* or merge what there is"):
        merge_indexes(parts[:2], tmp_path / "m2.h5")
    assert merge_indexes(parts[:2], tmp_path / "m2.h5", allow_missing=True).note == " (shards 2/3 missing)"
    with pytest.raises(InputError, match="given twice"):
        merge_indexes([parts[0], parts[0], parts[1]], tmp_path / "m3.h5")
    other = tmp_path / "other.h5"
    build_index([folder], other, labels, mask_mpp=16.0)
    with pytest.raises(InputError, match="built with other settings .*mask_mpp 8.0 vs 16.0"):
        merge_indexes([str(whole), str(other)], tmp_path / "m4.h5")
    build_index([folder / "s00.tiff"], tmp_path / "one.h5", labels)
    with pytest.raises(InputError, match="s00.tiff: in both .*whole.h5 and .*one.h5"):
        merge_indexes([str(whole), str(tmp_path / "one.h5")], tmp_path / "m5.h5")
    assert main(["index", "merge", "--out", str(tmp_path / "m6.h5")]) == 2
    for bad in ("3/3", "1", "a/b"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_an_interrupted_run_resumes_from_its_journal(many, tmp_path) -> None:
    folder, labels = many
    out = tmp_path / "index.h5"

    def stop_after_five(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index([folder], out, labels, on_progress=stop_after_five)
    journal = tmp_path / "index.h5.journal"
    assert journal.is_file() and not out.exists()
    with open(journal, "ab") as f:
        f.write(b"\x10\x00\x00\x00torn")  # a record cut short by a kill
    summary = build_index([folder], out, labels)
    assert (summary.resumed, summary.indexed, summary.total) == (5, 7, 12)
    assert not journal.exists()
    clean = tmp_path / "clean.h5"
    build_index([folder], clean, labels)
    assert _contents(out) == _contents(clean)


def _index_process(folder, out, workers: int) -> subprocess.Popen:
    code = "import sys; from gapless.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["index", str(folder), "--out", str(out), "--workers", str(workers)]
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_index_workers_die_with_their_parent_and_the_run_resumes(many, tmp_path, sig) -> None:
    folder, _ = many
    out = tmp_path / "index.h5"
    proc = _index_process(folder, out, 2)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len([c for c in parent.children(recursive=True) if "spawn" in
                                                " ".join(c.cmdline())]) < 2:  # fmt: skip
        time.sleep(0.1)
    children = parent.children(recursive=True)
    assert children, "the index command started no workers"
    proc.send_signal(sig)
    proc.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"workers outlived their parent: {[c.cmdline() for c in alive]}"
    assert not out.exists()
    summary = build_index([folder], out, workers=1)  # rerun: finishes what the killed run did not
    assert summary.total == 12 and summary.indexed + summary.resumed == 12


def test_a_full_disk_is_one_line_naming_the_path_with_no_temporary_file_left(many, tmp_path, capsys, dev_full) -> None:
    folder, labels = many
    out = tmp_path / "index.h5"
    (tmp_path / "index.h5.tmp").symlink_to(dev_full)  # writing the index runs out of space
    assert main(["index", str(folder), "--out", str(out), "--workers", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "index.h5: cannot write (No space left on device)" in err and "Traceback" not in err
    assert not (tmp_path / "index.h5.tmp").exists() and not out.exists()
    assert (tmp_path / "index.h5.journal").is_file()  # the slides read so far: a rerun resumes from them
    summary = build_index([folder], out, labels)
    assert summary.resumed == 12 and summary.indexed == 0

    journal_full = tmp_path / "j.h5"
    (tmp_path / "j.h5.journal").symlink_to(dev_full)
    progress = []
    with pytest.raises(InputError, match="j.h5.journal: cannot write \\(No space left on device\\)"):
        build_index([folder], journal_full, on_progress=lambda d, t: progress.append(d))
    assert progress == []  # found before any slide was read


def test_an_unwritable_out_is_found_before_any_work(many, tmp_path, capsys) -> None:
    folder, _ = many
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["index", str(folder), "--out", str(blocker / "index.h5"), "--workers", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "file/index.h5.journal: cannot write (Not a directory); choose another --out" in err
    assert "Traceback" not in err and "0/?" in err  # refused before the first slide


def _synthetic_entries(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [dict(path=f"/archive/case{i // 3:06d}/slide{i:07d}.svs", status="ok" if i % 50 else "failed",
                 reason="" if i % 50 else "cannot open", label=("a", "b")[i % 2], patient=f"p{i // 3}", size=i,
                 mtime=1.5, mpp=0.25, tissue_fraction=0.5, mask_mpp=8.0, mask_shape=(4, 8),
                 mask=np.packbits(rng.random((4, 8)) > 0.5), format="aperio-svs", mpp_override=float("nan"),
                 mask_mpp_setting=8.0, levels=[(8000, 6000, 1.0, 0.25), (2000, 1500, 4.0, 1.0)])
            for i in range(n)]  # fmt: skip


def test_a_large_index_loads_lazily_and_pickles_as_its_path(tmp_path) -> None:
    entries = _synthetic_entries(5000)
    path = write_index(tmp_path / "big.h5", entries, {"mpp": None, "mask_mpp": 8.0, "shard": None})
    index = SlideIndex.load(path)
    assert len(index.records) == 4900 and len(index.failed) == 100
    assert not index.columns["mpp"].flags.owndata  # mapped from the file, not read into memory
    record = index.records[1234]
    row = int(index.ok_rows[1234])
    assert record.path == entries[row]["path"] and record.patient == entries[row]["patient"]
    assert [lv.mpp for lv in record.levels] == [0.25, 1.0]
    assert np.array_equal(np.packbits(record.tissue_mask().mask), entries[row]["mask"])
    assert index.records[-1].path == entries[-1]["path"] and len(index.records[10:20]) == 10
    clone = pickle.loads(pickle.dumps(index))
    assert len(pickle.dumps(index)) < 500 and clone.records[1234].path == record.path


def test_an_index_of_the_previous_format_still_loads(tmp_path) -> None:
    path = tmp_path / "v1.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update(format="gapless-slide-index", version=1, mask_mpp=8.0)
        for key, value in dict(path=["/a.svs", "/b.svs"], status=["ok", "failed"], reason=["", "bad"],
                               label=["x", ""], patient=["p", ""]).items():  # fmt: skip
            f[key] = np.array(value, dtype=h5py.string_dtype())
        for key in ("size", "mtime", "mpp", "tissue_fraction", "mask_mpp"):
            f[key] = np.array([1.0, 0.0])
        f["level_start"], f["mask_start"] = np.array([0, 1, 1]), np.array([0, 1, 1])
        f["mask_shape"] = np.array([[2, 4], [0, 0]])
        f["level_width"], f["level_height"] = np.array([100]), np.array([80])
        f["level_downsample"], f["level_mpp"] = np.array([1.0]), np.array([1.0])
        f["masks"] = np.array([0b11110000], np.uint8)
    index = SlideIndex.load(path)
    assert [r.path for r in index.records] == ["/a.svs"] and index.failed == [("/b.svs", "failed", "bad")]
    assert index.records[0].tissue_mask().mask.sum() == 4


def test_the_slurm_array_script_indexes_each_part_and_the_parts_merge(many, tmp_path) -> None:
    """train/slurm_index.sbatch run as two array tasks (SLURM's variables set by hand), then merged."""
    from pathlib import Path

    folder, labels = many
    script = Path(__file__).resolve().parent.parent / "train" / "slurm_index.sbatch"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "SLURM_CPUS_PER_TASK": "1",
           "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}  # fmt: skip
    for task in ("1", "2"):  # an array numbered from 1: parts 0 and 1
        done = subprocess.run(["bash", str(script), str(folder), str(tmp_path / "parts"), str(labels)],
                              env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
    parts = sorted(str(p) for p in (tmp_path / "parts").glob("shard_*.h5"))
    assert [Path(p).name for p in parts] == ["shard_0.h5", "shard_1.h5"]
    merge_indexes(parts, tmp_path / "merged.h5")
    assert len(_contents(tmp_path / "merged.h5")) == 12
    missing = subprocess.run(["bash", str(script), str(folder), str(tmp_path / "x")], env=env, capture_output=True,
                             text=True)  # fmt: skip
    assert missing.returncode != 0 and "array job" in missing.stderr
