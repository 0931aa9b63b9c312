"""``gapless demo`` and ``gapless reproduce``: the applications built on every subsystem."""

from __future__ import annotations

import argparse
from pathlib import Path

from gapless.apps.experiment import REPRODUCE_STRATEGIES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on built-in synthetic data",
        description="Synthetic slides -> index -> short DINOv2 pretraining with continuous sampling (DALI on a GPU, "
        "the DataLoader on a CPU) -> multi-scale evaluation set -> per-mpp RankMe, k-NN and linear probes; tables, "
        "plots, JSON, SUMMARY.md.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu", help="the shipped config demo_<preset>.yaml")
    p.add_argument("--config", type=Path, help="a demo YAML instead of the preset's")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete this demo's earlier outputs in --out and start again (a folder of another command is refused)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. pretrain.data.sampling.strategy=minmax")
    p.set_defaults(func=_demo)

    p = subparsers.add_parser(
        "reproduce",
        help="compare sampling strategies under one budget: per-mpp accuracy, gaps, verdict",
        description="Train the same model with each sampling strategy on synthetic slides, evaluate each per mpp "
        "over folds (and seeds), and report whether DU dips at 0.375/0.75/1.5 mpp and whether continuous sampling "
        "closes it. Reruns continue where a run stopped.",
    )
    p.add_argument("--budget", choices=("tiny", "small", "full"), default="tiny", help="reproduce_<budget>.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/reproduce"), help="output folder (default runs/reproduce)")
    p.add_argument("--strategies", default=None,
                   help="comma-separated, from " + ",".join(REPRODUCE_STRATEGIES) + ",fixed_<mpp> (default: the "
                   "budget's: full trains du,cu,maxavg,minmax,fixed_0.25,fixed_0.5,fixed_1,fixed_2)")  # fmt: skip
    p.add_argument("--seeds", default=None, help="comma-separated training seeds, e.g. 0,1,2 (default: the config's)")
    p.add_argument("--gpus", type=int, default=None,
                   help="GPUs (torchrun processes) per training run (default: every visible GPU; 1 when "
                   "pretrain.device is cpu)")  # fmt: skip
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete this command's earlier outputs in --out first (a folder of another command or budget is refused)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. pretrain.epochs=4 slides.count=21")
    p.set_defaults(func=_reproduce)


def _demo(args: argparse.Namespace) -> int:
    from gapless.apps.demo import run_demo

    return run_demo(args)


def _reproduce(args: argparse.Namespace) -> int:
    from gapless.apps.reproduce import run_reproduce

    return run_reproduce(args)
