"""Loader workers die with the trainer: DALI's source workers, DataLoader workers, the GPU reader's planner pool and
multiprocessing's resource tracker are gone within seconds of a kill -9 of the process that started them."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import time

import psutil

from gapless import workers
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
    try:
        assert any("READY" in line for line in trainer.stdout)  # cuCIM may print its own lines first
        children = psutil.Process(trainer.pid).children(recursive=True)
        commands = [" ".join(child.cmdline()) for child in children]
        # One DALI source worker, one DataLoader worker, one planner and the resource tracker.
        assert sum("multiprocessing.spawn" in c for c in commands) == 3, commands
        assert sum("resource_tracker" in c for c in commands) == 1, commands
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=30)
        start = time.monotonic()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert time.monotonic() - start < 5.0
    finally:
        trainer.kill()
        for child in psutil.Process().children(recursive=True):
            if child.pid != trainer.pid and child.ppid() == trainer.pid:
                child.kill()
