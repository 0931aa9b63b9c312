"""``gapless index``: the slide index."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="index slides: geometry, mpps, tissue masks, labels",
        description="Index slides into one HDF5 file. Unreadable slides are reported and skipped; re-running "
        "updates changed files only.",
    )
    p.add_argument("inputs", nargs="+", metavar="SLIDES_OR_DIRS", help="slide files or directories")
    p.add_argument("--out", required=True, help="index file (.h5)")
    p.add_argument("--labels", help="labels.csv with columns slide,label[,patient][,mpp]")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="worker processes")
    p.add_argument("--mpp", type=float, help="mpp of every slide (overrides the files' metadata)")
    p.add_argument("--mask-mpp", type=float, default=8.0, help="tissue mask resolution (um per pixel)")
    p.set_defaults(func=_index)


def _index(args: argparse.Namespace) -> int:
    from gapless.console import console, progress, table
    from gapless.pipeline.slides.indexer import build_index

    with progress() as bar:
        task = bar.add_task("indexing", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = build_index(args.inputs, args.out, args.labels, args.workers, args.mpp, args.mask_mpp, update)
    console.print(
        f"{summary.total} slides: {summary.usable} usable, {len(summary.failed)} skipped "
        f"({summary.indexed} read, {summary.reused} unchanged) -> {args.out}"
    )
    if summary.failed:
        console.print(table("skipped slides", ("slide", "status", "reason"), summary.failed))
    return 0
