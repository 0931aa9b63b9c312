"""Load time and memory of a large slide index: the main process and the workers that reload it.

Run as ``python -m gapless.benchmarks.index_load [--records 200000] [--workers 4]``. It writes a synthetic index of
``--records`` slides (paths of archive depth, four pyramid levels each, small tissue masks; one in fifty failed)
into a temporary folder, then measures in fresh processes: ``SlideIndex.load`` (wall time, and the growth of the
resident set), touching every record, the loader's ``load_slides`` (which makes an entry object per slide), and
workers that each unpickle the index as DALI workers do and then read 10,000 random records and 1,000 tissue masks
(resident and unique set sizes: the index's mapped pages are shared between processes, so the unique set is what
each worker costs). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import queue as queues
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_entries(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    mask = np.packbits(rng.random((40, 50)) > 0.4)
    levels = [(96000, 72000, 1.0, 0.25), (24000, 18000, 4.0, 1.0), (6000, 4500, 16.0, 4.0), (1500, 1125, 64.0, 16.0)]
    return [
        dict(path=f"/data/archive/site{i % 7}/case{i // 3:06d}/slide_{i:07d}.svs", status="failed" if i % 50 == 0
             else "ok", reason="cannot open" if i % 50 == 0 else "", label=("tumour", "normal")[i % 2],
             patient=f"patient{i // 3:06d}", size=1_500_000_000 + i, mtime=1.7e9 + i, mpp=0.25, tissue_fraction=0.4,
             mask_mpp=8.0, mask_shape=(40, 50), mask=mask, format="aperio-svs", mpp_override=float("nan"),
             mask_mpp_setting=8.0, levels=levels)
        for i in range(n)
    ]  # fmt: skip


def _mb(value: float) -> float:
    return value / 2**20


def _load_main(path: str, queue: multiprocessing.Queue) -> None:
    import h5py  # noqa: F401  (imports are not the index's cost)
    import psutil

    from gapless.pipeline.slides import SlideIndex

    proc = psutil.Process()
    before = proc.memory_info().rss
    start = time.perf_counter()
    index = SlideIndex.load(path)
    load_s = time.perf_counter() - start
    after_load = proc.memory_info().rss
    start = time.perf_counter()
    count = sum(1 for _ in index.records)
    iterate_s = time.perf_counter() - start
    iterate_mb = _mb(proc.memory_info().rss - before)
    import logging

    from gapless.pipeline.loader import load_slides

    logging.disable(logging.WARNING)  # it logs every failed slide

    start = time.perf_counter()
    load_slides(path, check=False)  # the loader's view: an entry object per slide (its own code, measured here)
    queue.put(dict(load_s=load_s, load_mb=_mb(after_load - before), records=count, iterate_s=iterate_s,
                   iterate_mb=iterate_mb, pickled=len(pickle.dumps(index)), load_slides_s=time.perf_counter() - start,
                   load_slides_mb=_mb(proc.memory_info().rss - before)))  # fmt: skip


def _worker(payload: bytes, barrier: Any, queue: multiprocessing.Queue) -> None:
    import psutil

    proc = psutil.Process()
    import h5py  # noqa: F401  (imports are not the index's cost)

    import gapless.pipeline.slides  # noqa: F401

    before = proc.memory_full_info()
    start = time.perf_counter()
    index = pickle.loads(payload)
    unpickle_s = time.perf_counter() - start
    rng = np.random.default_rng(proc.pid)
    start = time.process_time()
    levels = 0
    for i in rng.integers(0, len(index.records), 10_000):
        levels += len(index.records[int(i)].levels)
    for i in rng.integers(0, len(index.records), 1_000):
        index.records[int(i)].tissue_mask()
    access_s = time.process_time() - start
    barrier.wait()  # measure while every worker maps the index: shared pages count as shared
    after = proc.memory_full_info()
    barrier.wait()
    queue.put(dict(unpickle_s=unpickle_s, access_s=access_s, rss_mb=_mb(after.rss - before.rss),
                   uss_mb=_mb(after.uss - before.uss)))  # fmt: skip


def _results(queue: multiprocessing.Queue, procs: list) -> list[dict]:
    """One result per process in ``procs``; a process that ends without sending its result stops the benchmark."""
    results: list[dict] = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=5))
        except queues.Empty:
            ended = [p.exitcode for p in procs if p.exitcode is not None]
            if any(ended) or len(ended) == len(procs):
                raise SystemExit(f"index_load: a process ended (exit codes {ended}) without its figures") from None
    return results


def _run(target, args: tuple) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue), daemon=True)
    proc.start()
    (result,) = _results(queue, [proc])
    proc.join()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="slides in the synthetic index")
    parser.add_argument("--workers", type=int, default=4, help="worker processes that reload the index")
    args = parser.parse_args(argv)
    from gapless.pipeline.slides import SlideIndex
    from gapless.pipeline.slides.index_file import write_index

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.h5"
        start = time.perf_counter()
        write_index(path, synthetic_entries(args.records), {"mpp": None, "mask_mpp": 8.0, "shard": None})
        print(f"index of {args.records} slides: written in {time.perf_counter() - start:.1f} s, "
              f"{_mb(path.stat().st_size):.1f} MB")  # fmt: skip
        main_result = _run(_load_main, (str(path),))
        print(f"SlideIndex.load: {1000 * main_result['load_s']:.1f} ms, resident set +{main_result['load_mb']:.1f} MB; "
              f"all {main_result['records']} records made one by one: {main_result['iterate_s']:.2f} s "
              f"(+{main_result['iterate_mb']:.1f} MB); pickled: {main_result['pickled']} bytes")  # fmt: skip
        print(f"the loader's load_slides(check=False) on it: {main_result['load_slides_s']:.2f} s, resident set "
              f"+{main_result['load_slides_mb']:.1f} MB in all")  # fmt: skip
        payload = pickle.dumps(SlideIndex.load(path))
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        barrier = ctx.Barrier(args.workers)
        workers = [
            ctx.Process(target=_worker, args=(payload, barrier, queue), daemon=True) for _ in range(args.workers)
        ]
        for w in workers:
            w.start()
        results = _results(queue, workers)  # daemons: the others, waiting at the barrier, end with the benchmark
        for w in workers:
            w.join()
        for key, label in (("unpickle_s", "unpickle (s)"), ("access_s", "10k records + 1k masks (CPU-s)"),
                           ("rss_mb", "resident set growth (MB)"), ("uss_mb", "unique set growth (MB)")):  # fmt: skip
            values = [r[key] for r in results]
            print(f"worker {label:28}: " + "  ".join(f"{v:8.3f}" for v in values))


if __name__ == "__main__":
    main()
