"""The trainer under what breaks runs: a second run on one folder, kill -9, SIGTERM, a loader that fails to close,
slides that go bad under a run (the run folder's own cases: ``test_train_run_folder.py``). Cases about processes run
real ``gapless pretrain`` processes and real signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from gapless.apps.experiment import launch_torchrun
from gapless.config import ConfigError, load_config
from gapless.errors import RunError
from gapless.pipeline.loader import build_loader
from gapless.train.checkpoint import checkpoint_path, latest_checkpoint, list_checkpoints
from gapless.train.config import PretrainConfig
from gapless.train.health import HealthConfig, LoaderWatch
from gapless.train.loop import train
from gapless.train.run_lock import LOCK_NAME, RunLock
from gapless.train.schedules import build_schedules
from gapless.train.stopping import TrainingStopped

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LONG = ["epochs=1000", "log_every=1", "checkpoint.every=1000000"]  # runs until stopped


def tiny(*overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, "pretrain_tiny_cpu", list(overrides))


def start(run: Path, *args: str) -> subprocess.Popen:
    """`gapless pretrain` on the tiny config in a process (and process group) of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "gapless.cli", "pretrain", "--config", "pretrain_tiny_cpu", "--out", str(run)]
    return subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def iterations(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for_steps(run: Path, proc: subprocess.Popen, steps: int = 3, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(iterations(run)) < steps:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the run did not start in time"
        time.sleep(0.2)


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_lock_sigterm_and_kill_9_on_one_run_folder(tmp_path: Path, synthetic_slides) -> None:
    """One folder through a run's life: a second run is refused; SIGTERM to the run's process group (the trainer and
    its loader's workers) saves the last step and exits, leaving no process; the rerun continues; kill -9 leaves a
    lock that the next run recognises as stale."""
    run = tmp_path / "run"
    data = [f"data.index={synthetic_slides.index}", "data.loader=baseline", "data.workers=2", "data.tile_px=96"]
    synthetic = ["data.tile_px=96"]  # the same recipe from the in-memory source: the later runs start faster
    first = start(run, *LONG, *data)
    try:
        wait_for_steps(run, first)
        workers = psutil.Process(first.pid).children(recursive=True)
        assert workers, "the loader should run worker processes"
        rc, err = finish(start(run, *LONG, *synthetic))
        assert rc == 1 and f"pid {first.pid}" in one_line_error(err) and "another run uses this folder" in err
        os.killpg(first.pid, signal.SIGTERM)  # as SLURM signals a job step: the trainer and its loader's workers
        rc, err = finish(first, timeout=60)
    finally:
        first.kill()
    stopped = iterations(run)[-1]
    line = one_line_error(err)
    assert rc == 1 and "stopped by SIGTERM" in line and checkpoint_path(run, stopped).name in line
    assert latest_checkpoint(run) == checkpoint_path(run, stopped) and not (run / LOCK_NAME).exists()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, [p.pid for p in alive]

    second = start(run, *LONG, *synthetic)  # continues from the checkpoint ...
    try:
        wait_for_steps(run, second, steps=len(iterations(run)) + 2)
    finally:
        second.send_signal(signal.SIGKILL)  # ... until killed as the out-of-memory killer would: no checkpoint
        second.wait()
    assert (run / LOCK_NAME).exists() and iterations(run)[-1] > stopped + 1
    rc, err = finish(start(run, *LONG, *synthetic, "--max-steps", "2"))
    assert rc == 0, err
    assert "replaced a stale lock" in " ".join(err.split()) and not (run / LOCK_NAME).exists()
    # The killed run's steps after the checkpoint are taken again: the metrics continue from the checkpoint.
    assert iterations(run)[-3:] == [stopped, stopped + 1, stopped + 2]


def test_sigterm_before_the_first_step_after_a_resume_names_the_checkpoint(tmp_path: Path, synthetic_slides) -> None:
    """SIGTERM to the run's process group while the resumed run waits for its first batch: the loader's workers die
    of it too, and the run ends as any stopped run does, naming the checkpoint to continue from (nothing new to
    save), never with the loader's traceback."""
    run = tmp_path / "run"
    train(tiny(*LONG, "data.tile_px=96"), run, max_steps=2)  # the same recipe from the in-memory source
    data = [f"data.index={synthetic_slides.index}", "data.loader=baseline", "data.workers=2", "data.tile_px=96"]
    proc = start(run, *LONG, *data)
    try:
        deadline = time.monotonic() + 90
        while len(psutil.Process(proc.pid).children(recursive=True)) < 2:  # its loader's workers
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the loader's workers did not start in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        rc, err = finish(proc, timeout=60)
    finally:
        proc.kill()
    line = one_line_error(err)
    assert rc == 1 and "stopped by SIGTERM" in line and checkpoint_path(run, 2).name in line, err
    assert latest_checkpoint(run) == checkpoint_path(run, 2) and not (run / LOCK_NAME).exists()


class WorkersKilledBySigterm:
    """The in-memory loader, signalled as a job step is: SIGTERM reaches this process at batch ``at`` and, as it
    reaches the workers of a DataLoader too, closing the loader then fails as PyTorch's does joining killed workers."""

    def __init__(self, cfg: PretrainConfig, at: int) -> None:
        self.loader, self.at = build_loader(cfg.data), at

    def __iter__(self):
        for batch in self.loader:
            if self.loader.iteration == self.at:
                os.kill(os.getpid(), signal.SIGTERM)  # recorded by the run's handler: a stop after this step
            yield batch

    def stats(self) -> dict[str, int]:
        return self.loader.stats()

    def close(self) -> None:
        self.loader.close()
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated.")


def test_a_loader_that_fails_to_close_never_hides_why_the_run_stopped(tmp_path: Path) -> None:
    cfg = tiny(*LONG)
    with pytest.raises(TrainingStopped, match=r"stopped by SIGTERM after iteration 3: saved .*ckpt_00000003\.pt"):
        train(cfg, tmp_path, loader=WorkersKilledBySigterm(cfg, at=3))
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 3) and not (tmp_path / LOCK_NAME).exists()


def test_the_heartbeat_outlives_a_failed_write_and_stops_for_another_runs_lock(tmp_path: Path, capsys) -> None:
    """A lock moved away for a moment (a failed renewal) keeps its heartbeat; a lock another run took is left alone."""

    def renewed(path: Path, timeout: float = 5.0) -> bool:
        os.utime(path, (0, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.stat().st_mtime > 0:
                return True
            time.sleep(0.02)
        return False

    lock = RunLock(tmp_path, heartbeat_s=0.05)
    lock.acquire()
    try:
        path, aside = tmp_path / LOCK_NAME, tmp_path / "moved"
        assert renewed(path)
        path.rename(aside)
        err, deadline = "", time.monotonic() + 30
        while "cannot renew" not in " ".join(err.split()) and time.monotonic() < deadline:  # a beat fails
            time.sleep(0.05)
            err += capsys.readouterr().err
        aside.rename(path)
        assert "cannot renew" in " ".join(err.split())
        assert renewed(path), "the heartbeat stopped after a failed write"
        taken = json.loads(path.read_text())
        path.write_text(json.dumps({**taken, "token": "another run's"}))
        lock._thread.join(timeout=5)
        assert not lock._thread.is_alive() and not renewed(path, timeout=0.3)
    finally:
        lock.release()
    assert json.loads(path.read_text())["token"] == "another run's"  # its lock is not removed


def test_settings_that_make_every_read_fail_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"data\.max_read_retries: must be >= 0"):
        tiny("data.max_read_retries=-1")
    with pytest.raises(ConfigError, match=r"data\.handle_cache: must be >= 1"):
        tiny("data.handle_cache=0")
    with pytest.raises(ConfigError, match=r"health\.warn_skipped"):
        tiny("health.warn_skipped=0.5", "health.stop_skipped=0.1")


def test_loader_watch_warns_then_stops_over_its_window() -> None:
    watch = LoaderWatch(HealthConfig(window=10, min_tiles=100), start_iteration=0)
    assert watch.observe(5, {"reads": 50, "retries": 0, "skipped_tiles": 0}).level == "ok"  # too few tiles
    assert watch.observe(10, {"reads": 100, "retries": 0, "skipped_tiles": 0}).level == "ok"
    warn = watch.observe(20, {"reads": 197, "retries": 30, "skipped_tiles": 3})  # 3 % skipped in 20 iterations
    assert warn.level == "warn" and warn.first_iteration == 10 and warn.tiles == 100
    assert warn.skipped == pytest.approx(0.03) and "health.warn_skipped" in warn.message
    stop = watch.observe(30, {"reads": 287, "retries": 130, "skipped_tiles": 13})  # 10 % in the last window
    assert stop.level == "stop" and stop.first_iteration == 20 and "health.stop_skipped = 5 %" in stop.message


def test_slides_that_go_bad_under_a_run_stop_it_after_a_checkpoint(tmp_path: Path, synthetic_slides) -> None:
    slides = tmp_path / "slides"
    shutil.copytree(synthetic_slides.dir, slides)
    (slides / "index.h5").unlink()  # re-indexing would keep the originals' records beside the copies'
    from gapless.pipeline.slides.indexer import build_index

    build_index([slides], slides / "index.h5", slides / "labels.csv", workers=1)
    cfg = tiny(f"data.index={slides / 'index.h5'}", "data.loader=baseline", "data.workers=0", "data.tile_px=96",
               "health.window=4", "health.min_tiles=32", "log_every=2", "checkpoint.every=100")  # fmt: skip
    loader = build_loader(cfg.data)  # opens and checks every slide: all good here
    for path in sorted(slides.glob("*.tif*"))[:3]:  # then three of four are cut short under the run
        os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(RunError, match=r"the data went bad: .*% of tiles skipped .*health\.stop_skipped") as info:
        train(cfg, tmp_path / "run", loader=loader)
    stopped = latest_checkpoint(tmp_path / "run")
    assert stopped is not None and stopped.name in str(info.value)
    records = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loader_skipped_share"] > 0.05 and records[-1]["iteration"] < cfg.total_iterations


def test_two_ranks_under_torchrun_stop_together_on_sigterm(tmp_path: Path, capsys) -> None:
    """`gapless reproduce --gpus 2`'s launcher, gloo on a CPU: ranks draw their own tiles, the lr follows the global
    batch, and SIGTERM to the launcher reaches both ranks, which stop after the same step with one checkpoint."""
    cfg = tiny(*LONG)
    run = tmp_path / "run"
    launched = threading.Event()

    def stop_when_running() -> None:
        deadline = time.monotonic() + 120
        while len(iterations(run)) < 3 and time.monotonic() < deadline and launched.is_set():
            time.sleep(0.2)
        if launched.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # launch_torchrun passes it on to torchrun while it waits

    launched.set()
    threading.Thread(target=stop_when_running, daemon=True).start()
    try:
        with pytest.raises(RunError, match="training under torchrun ended with status"):
            launch_torchrun(cfg, run, processes=2)
    finally:
        launched.clear()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    sums = records[0]["rank_batch_sums"]
    assert len(sums) == 2 and sums[0] != sums[1]  # each rank drew its own tiles
    stopped = records[-1]["iteration"]
    assert records[-1]["lr"] == pytest.approx(build_schedules(cfg, 2).lr[stopped - 1])  # global batch 16
    state = torch.load(latest_checkpoint(run), weights_only=True)
    assert state["iteration"] == stopped and len(list_checkpoints(run)) == 1 and not (run / LOCK_NAME).exists()
    capsys.readouterr()
    assert train(cfg, run, max_steps=1)["iteration"] == stopped + 1  # continued by one process: said so
    assert "was trained by 2 process(es), this run has 1" in " ".join(capsys.readouterr().err.split())
