"""Loader workers die with the trainer: DALI's source workers, DataLoader workers, the GPU reader's planner pool and
multiprocessing's resource tracker are gone within seconds of a kill -9 of the process that started them. And
``close()`` stops them: a closed loader or GPU reader leaves no worker process and no open file behind, however
often one is made again (``gapless bench`` makes loaders pass after pass)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
from collections import Counter

import psutil
import pytest

from gapless import workers
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.workers import ParentBound

_PR_GET_PDEATHSIG = 2


class _Payload(ParentBound):
    def __init__(self, value: int) -> None:
        self.value = value


def _death_signal() -> int:
    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig))
    return sig.value


def _unpickle_in_child(data: bytes, out: multiprocessing.Queue) -> None:
    payload = pickle.loads(data)
    out.put((payload.value, _death_signal(), workers._bound))


def test_an_unpickled_source_binds_a_child_to_its_parent_and_nothing_else() -> None:
    data = pickle.dumps(_Payload(7))
    assert pickle.loads(data).value == 7 and workers._bound is None  # same process: nothing bound
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_unpickle_in_child, args=(data, out))
    child.start()
    value, death_signal, bound = out.get(timeout=60)
    child.join(timeout=60)
    assert (value, death_signal, bound) == (7, int(signal.SIGKILL), os.getpid())


_TRAINER = """
import sys, time
from gapless.pipeline.batch_read import PlanPrefetcher
from gapless.pipeline.config import AugmentConfig, DataConfig
from gapless.pipeline.loader import build_loader, build_source

cfg = DataConfig(index=sys.argv[1], batch_size=2, workers=1, device="cpu", read_device="cpu",
                 augment=AugmentConfig(local_crops=1), iterations_per_epoch=100)
loaders = [build_loader(cfg.__class__(**{**cfg.__dict__, "loader": name})) for name in ("dali", "baseline")]
for loader in loaders:
    loader.next_batch()
planner = PlanPrefetcher(build_source(cfg)[0], 1)
planner.ahead(0, [0, 1])
planner.plans(0, [0, 1])
print("READY", flush=True)
time.sleep(300)
"""


def test_loader_workers_end_within_seconds_of_a_kill_9_of_the_trainer(synthetic_slides) -> None:
    trainer = subprocess.Popen([sys.executable, "-c", _TRAINER, str(synthetic_slides.index)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    children: list[psutil.Process] = []
    try:
        assert any("READY" in line for line in trainer.stdout)  # cuCIM may print its own lines first
        children = psutil.Process(trainer.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        # One DALI source worker, one DataLoader worker, one planner and the resource tracker.
        assert sum("multiprocessing.spawn" in c for c in commands) == 3, commands
        assert sum("resource_tracker" in c for c in commands) == 1, commands
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
    finally:
        trainer.kill()
        for child in children:  # orphaned by the kill: their parent is no longer the trainer
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def _open_files() -> Counter[str]:
    """What this process's file descriptors point at (each pipe is its own)."""
    out: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[os.readlink(f"/proc/self/fd/{fd}")] += 1
        except OSError:  # the descriptor listdir itself used, closed since
            pass
    return out


def _opened_since(baseline: Counter[str]) -> Counter[str]:
    """Descriptors open now that were not at ``baseline`` (what others' garbage released meanwhile is no matter)."""
    return _open_files() - baseline


def _workers() -> set[int]:
    """This process's worker processes (the resource tracker, which outlives pools by design, left out)."""
    children = psutil.Process().children(recursive=True)
    return {c.pid for c in children if not any("resource_tracker" in part for part in c.cmdline())}


def test_gpu_reader_close_releases_its_files_and_planner_processes(synthetic_slides) -> None:
    """The batched GPU reader (CPU twin) holds open tile files in its decoder and its vetter and a planner pool:
    close() releases all of them, round after round; a reader dropped without close() releases its files too."""
    from gapless.pipeline.dali.gpu_source import GpuBatchReader
    from gapless.pipeline.loader import build_source
    from gapless.pipeline.source import Shard

    cfg = DataConfig(index=str(synthetic_slides.index), batch_size=4, seed=5, augment=AugmentConfig(local_crops=1))
    source, _ = build_source(cfg)

    def round_trip(planners: int, close: bool = True) -> bool:
        """Read two batches; whether planner processes ran while the reader was open."""
        reader = GpuBatchReader(source, 4, Shard(), decode="batched", planners=planners, device="cpu")
        reader(0)
        reader(1)
        planned_elsewhere = bool(_workers() - before)
        if close:
            reader.close()
        del reader
        source.close()  # the source's own slide handles (host reads), not the reader's
        return planned_elsewhere

    before = _workers()
    # What keeps descriptors for the life of the process starts here: the decoder's libraries, multiprocessing's
    # resource tracker.
    round_trip(1)
    baseline = _open_files()
    for planners in (0, 1, 1):
        assert round_trip(planners) == (planners > 0)
        assert not _opened_since(baseline) and not _workers() - before
    round_trip(0, close=False)
    gc.collect()
    assert not _opened_since(baseline)


def test_dali_tile_reader_close_stops_its_pipeline_and_releases_its_files(synthetic_slides) -> None:
    from gapless.pipeline.dali.tile_decode import DaliTileReader
    from gapless.pipeline.loader import build_source
    from gapless.pipeline.source import Shard

    source, _ = build_source(DataConfig(index=str(synthetic_slides.index), batch_size=4, seed=5))
    before = _workers()
    baseline: Counter[str] | None = None
    for processes in (0, 0, 1):  # the first round loads what stays loaded
        reader = DaliTileReader(source, 4, Shard(), workers=processes, device="cpu")
        reader(0)
        assert len(_workers() - before) == processes
        reader.close()
        source.close()
        baseline = baseline or _open_files()
        assert not _opened_since(baseline) and not _workers() - before


def _dali_loader_rounds(cfg: DataConfig, rounds: int = 3) -> None:
    """Make a DALI loader over one source, take a batch, close it: after the first round (which loads what stays
    loaded), every close leaves this process's descriptors and worker processes as they were."""
    from gapless.pipeline.dali.loader import DaliLoader
    from gapless.pipeline.loader import build_source
    from gapless.pipeline.source import Shard

    source, _ = build_source(cfg)  # one source throughout: its index stays mapped, its handles closed each round
    before, baseline = _workers(), None
    for _ in range(rounds):
        loader = DaliLoader(cfg, source, Shard(), cfg.device, cfg.read_device)
        loader.next_batch()
        assert len(_workers() - before) >= cfg.workers
        loader.close()
        source.close()
        baseline = baseline or _open_files()
        assert not _opened_since(baseline) and not _workers() - before


def test_dali_loader_close_stops_its_workers(synthetic_slides) -> None:
    _dali_loader_rounds(DataConfig(index=str(synthetic_slides.index), device="cpu", read_device="cpu", batch_size=2,
                                   workers=1, augment=AugmentConfig(local_crops=1)), rounds=2)  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("decode", ["batched", "cucim", "dali"])
def test_dali_loader_close_stops_the_gpu_readers_workers_and_closes_their_files(synthetic_slides, decode) -> None:
    _dali_loader_rounds(DataConfig(index=str(synthetic_slides.index), device="gpu", read_device="cuda",
                                   gpu_decode=decode, batch_size=2, workers=1,
                                   augment=AugmentConfig(local_crops=1)))  # fmt: skip
