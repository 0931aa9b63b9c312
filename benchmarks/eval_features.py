"""Feature extraction rate of the evaluation: ``python -m gapless.benchmarks.eval_features``.

Tiles per second through the exact path ``gapless features`` takes (uint8 tiles -> normalise -> the model's final
tokens -> ``L2(CLS) ⊕ L2(mean patch token)``) for timm's ViT-S/16 and ViT-L/14 at 224 px, with random weights (the
rate does not depend on them), on the CPU and, where there is one, on the GPU (bf16 autocast, as ``features`` runs
there). Each model is warmed up with one batch, then timed over ``--batches`` batches; the forward FLOPs of one
image give the arithmetic rate achieved. ``--json`` writes the figures with the machine, versions and git commit.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from gapless.benchmarks.machine import git_commit, machine, versions
from gapless.eval.models.timm_models import backbone_of
from gapless.io import write_json
from gapless.train.vit import vit_flops_per_image

MODELS = {  # name -> (timm architecture, width, depth, patch)
    "ViT-S/16": ("vit_small_patch16_224", 384, 12, 16),
    "ViT-L/14": ("vit_large_patch14_224", 1024, 24, 14),
}


def measure(name: str, device: torch.device, batch: int, batches: int, size: int = 224) -> dict:
    """Tiles per second of one model on one device (the first batch is a warm-up)."""
    import timm

    arch, width, depth, patch = MODELS[name]
    module = timm.create_model(arch, pretrained=False, num_classes=0, img_size=size).to(device).eval()
    backbone = backbone_of(module, name, "timm", None, "")
    tiles = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    backbone.embed(tiles, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        backbone.embed(tiles, device)  # returns numpy arrays: every batch is finished when it returns
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    rate = batch * batches / seconds
    flops = vit_flops_per_image(width, depth, (size // patch) ** 2 + 1, patch)
    return {
        "model": name,
        "arch": arch,
        "device": str(device),
        "tile_px": size,
        "batch": batch,
        "batches": batches,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "tiles_per_s": round(rate, 3),
        "gflop_per_tile": round(flops / 1e9, 2),
        "gflop_per_s": round(rate * flops / 1e9, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--batch", type=int, default=16, help="tiles per batch on the CPU (x8 on a GPU)")
    p.add_argument("--batches", type=int, default=3, help="timed batches per model (after one warm-up batch)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (0: torch's default)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        p.error(f"--models: unknown {', '.join(sorted(unknown))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    with torch.inference_mode():
        for device in devices:
            batch = args.batch * (8 if device.type == "cuda" else 1)
            for name in names:
                r = measure(name, device, batch, args.batches)
                results.append(r)
                print(
                    f"{name} on {device}: {r['tiles_per_s']:.2f} tiles/s ({r['gflop_per_s']:.0f} GFLOP/s; "
                    f"{r['batches']} batches of {batch}, {r['seconds']:.1f} s, cpu {r['cpu_seconds']:.1f} s)"
                )
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.1f} (wall times are inflated when it exceeds the cores)")
    if args.json:
        write_json({"results": results, "load_average_end": load, "torch_threads": torch.get_num_threads(),
                    "machine": machine(), "versions": versions(), "git": git_commit()}, args.json)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
