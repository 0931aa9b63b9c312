"""Training-step throughput: images/s and the share of step time spent waiting for data.

    python -m gapless.benchmarks.train_step                       # tiny and ViT-S/16, synthetic source
    python -m gapless.benchmarks.train_step --index slides.h5     # also through the real pipeline (data.loader=auto)
    python -m gapless.benchmarks.train_step --model vits16 --gpu  # on a GPU: SDPA vs xFormers, bf16, and MFU
    python -m gapless.benchmarks.train_step data.workers=8        # key=value overrides for every measurement

Each figure is measured by running the real training loop (``gapless.train.loop.train``) for 2 x ``--steps`` iterations
and reading its last logged window (the first ``--steps`` are warm-up). "Images" are source tiles, each giving
2 global + n local crops. The synthetic source has no I/O: its figure is the trainer's upper bound.
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import torch

from gapless.config import load_config, split_overrides
from gapless.console import console
from gapless.io import write_json
from gapless.train.config import PretrainConfig
from gapless.train.loop import train
from gapless.train.vit import ARCH_SIZES, vit_flops_per_image

CONFIGS = {"tiny": "pretrain_tiny_cpu", "vits16": "pretrain_vits16"}  # shipped configs
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense tensor-core peaks


def step_flops(cfg: PretrainConfig) -> float:
    """FLOPs of one training step per image: student forward+backward (3x) on all crops, teacher forward on the
    global crops, and the head's prototype layer on the CLS and (about 15 % of) global patch tokens."""
    dim, depth, _ = ARCH_SIZES[cfg.model.arch]
    a, p = cfg.data.augment, cfg.model.patch_size
    g_tokens, l_tokens = 1 + (a.global_size // p) ** 2, 1 + (a.local_size // p) ** 2
    g = vit_flops_per_image(dim, depth, g_tokens, p) * a.global_crops
    local = vit_flops_per_image(dim, depth, l_tokens, p) * a.local_crops
    m = cfg.model
    head_per_token = 2 * (dim * m.head_hidden + m.head_hidden**2 + m.head_hidden * m.head_bottleneck)
    head_per_token += 2 * m.head_bottleneck * m.head_prototypes
    masked = 0.5 * 0.3 * (g_tokens - 1) * a.global_crops  # mask probability x mean ratio
    student_head = head_per_token * (a.global_crops + a.local_crops + masked)
    teacher_head = head_per_token * (a.global_crops + masked)
    return 3 * (g + local + student_head) + g + teacher_head


def measure(model: str, steps: int, overrides: list[str], loader: str = "synthetic") -> dict[str, Any]:
    cfg = load_config(
        PretrainConfig,
        CONFIGS[model],
        [
            f"data.loader={loader}",
            f"log_every={steps}",
            "checkpoint.every=1000000",
            "epochs=1",
            f"data.iterations_per_epoch={2 * steps}",
            *overrides,
        ],
    )
    with tempfile.TemporaryDirectory() as run_dir:
        record = train(cfg, run_dir)
    result = {
        "model": model,
        "loader": loader,
        "device": "cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu",
        "batch": cfg.data.batch_size,
        "precision": cfg.precision,
        "attention": cfg.model.attention,
        "images_per_s": record["images_per_s"],
        "data_wait_frac": record["data_wait_frac"],
        "step_time_s": record["step_time_s"],
        "tflops_per_s": record["images_per_s"] * step_flops(cfg) / 1e12,
    }
    if result["device"] == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
        result["gpu"] = name
        result["mfu"] = result["tflops_per_s"] * 1e12 / peak if peak else None
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gapless.benchmarks.train_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("tiny", "vits16", "both"), default="both")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default: 20 tiny, 3 ViT-S on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="per-process batch (default: the config's; 8 on CPU)")
    ap.add_argument("--index", help="slide index: also measure with the real pipeline")
    ap.add_argument("--loader", default="auto", help="pipeline loader for --index: auto | dali | baseline")
    ap.add_argument("--gpu", action="store_true", help="GPU comparisons: SDPA vs xFormers in bf16, with MFU")
    ap.add_argument("--out", help="also write the figures to this JSON file")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config override for every measurement")
    args, extra = ap.parse_known_args(argv)
    rest, more = split_overrides(extra)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    args.overrides += more
    cuda = torch.cuda.is_available()
    if args.gpu and not cuda:
        console.print("[yellow]--gpu: no CUDA device here; the GPU comparisons are skipped[/]")
    rows = []
    for model in ("tiny", "vits16") if args.model == "both" else (args.model,):
        steps = args.steps or (20 if model == "tiny" or cuda else 3)
        common = [] if args.batch is None and cuda else [f"data.batch_size={args.batch or 8}"]
        if not cuda:
            common += ["device=cpu", "precision=fp32"]
        common += args.overrides
        rows.append(measure(model, steps, common))
        if args.index:
            rows.append(measure(model, steps, [*common, f"data.index={args.index}"], loader=args.loader))
        if args.gpu and cuda:
            for attention in ("sdpa", "xformers"):
                try:
                    rows.append(measure(model, steps, [*common, "precision=bf16", f"model.attention={attention}"]))
                except RuntimeError as exc:  # xformers not installed
                    console.print(f"[yellow]{attention}: skipped ({exc})[/]")
    for r in rows:
        mfu = f", MFU {r['mfu']:.1%}" if r.get("mfu") else ""
        print(
            f"{r['model']:>6} {r['loader']:>9} {r.get('gpu', r['device'])} batch {r['batch']} {r['precision']} "
            f"attention={r['attention']}: {r['images_per_s']:.1f} images/s, data wait {r['data_wait_frac']:.1%}, "
            f"{r['tflops_per_s']:.3g} TFLOP/s{mfu}"
        )
    if args.out:
        write_json(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
