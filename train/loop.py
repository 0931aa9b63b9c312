"""The training loop (``gapless pretrain``): one function, read top to bottom.

Every random draw of iteration ``i`` on rank ``r`` (data, iBOT masks, drop path) is seeded from (seed, r, i), so a
run resumed from a checkpoint at iteration ``k`` takes exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from gapless.config import save_config, to_dict
from gapless.console import console, progress
from gapless.errors import InputError, NonFiniteLossError
from gapless.pipeline.loader import build_loader
from gapless.seeding import derived_seed
from gapless.train import checkpoint as ckpt_io
from gapless.train.config import PretrainConfig
from gapless.train.distributed import (
    all_gather_floats,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    sum_counters,
)
from gapless.train.masking import make_masks
from gapless.train.optim import apply_schedule, build_optimizer
from gapless.train.schedules import build_schedules
from gapless.train.ssl import DINOv2Objective, build_models, update_teacher


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def endless(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    """The loader's batches, epoch after epoch."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError("the data loader produced an empty epoch")


class MetricsLog:
    """metrics.jsonl in the run directory; on resume, lines after the checkpoint's iteration are dropped."""

    def __init__(self, path: Path, resume_from: int) -> None:
        self.path = path
        if path.exists():
            kept = [ln for ln in path.read_text().splitlines() if self._iteration(ln) <= resume_from]
            path.write_text("".join(ln + "\n" for ln in kept))

    @staticmethod
    def _iteration(line: str) -> float:
        try:
            return json.loads(line)["iteration"]
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill: drop it
            return math.inf

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def train(
    cfg: PretrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = True,
    max_steps: int | None = None,
    loader: Any = None,
) -> dict[str, Any]:
    """Train (or continue training) in ``run_dir``; returns the last logged metrics."""
    env = init_distributed(cfg.device)
    run_dir, config = Path(run_dir), to_dict(cfg)
    amp_dtype = autocast_dtype(cfg.precision, env.device)
    a, B = cfg.data.augment, cfg.data.batch_size
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (the teacher is never broadcast)
    student, teacher = build_models(cfg)
    objective = DINOv2Objective(cfg.loss, cfg.model.head_prototypes, a.global_crops, a.local_crops)
    student, teacher, objective = student.to(env.device), teacher.to(env.device), objective.to(env.device)
    o = cfg.optim
    optimizer = build_optimizer(student, student.backbone.depth, o.layerwise_decay, o.patch_embed_lr_mult, o.betas)
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp_dtype == torch.float16)

    start, last_ckpt = 0, ckpt_io.latest_checkpoint(run_dir)
    if last_ckpt is not None:
        if not resume:
            raise InputError(
                f"{run_dir}: already holds checkpoints; drop --no-resume to continue it, or pick another --out"
            )
        state = ckpt_io.load_file(last_ckpt, env.device)
        ckpt_io.check_compatible(state, config, last_ckpt)
        start = ckpt_io.restore(state, student, teacher, objective, optimizer, scaler)
        del state
    if env.is_main:
        save_config(cfg, run_dir / "config.yaml")
        console.print(
            f"[bold]pretrain[/] {run_dir}: {env.world_size} process(es) on {env.device.type}, "
            f"{amp_dtype}, iteration {start} of {cfg.total_iterations}"
        )
    model = student
    if env.world_size > 1:
        model = DistributedDataParallel(student, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    schedules = build_schedules(cfg, env.world_size)
    total = cfg.total_iterations
    stop = min(total, start + max_steps) if max_steps else total
    loader = loader if loader is not None else build_loader(cfg.data, env.rank, env.world_size, start)
    batches = endless(loader)
    log = MetricsLog(run_dir / "metrics.jsonl", start) if env.is_main else None
    grid = (a.global_size // cfg.model.patch_size,) * 2
    window = {"time": 0.0, "data": 0.0, "steps": 0}
    record: dict[str, Any] = {}
    try:
        bar = progress() if env.is_main else contextlib.nullcontext()
        with bar:
            task = bar.add_task("pretrain", total=total, completed=start) if env.is_main else None
            for it in range(start, stop):
                t0 = time.perf_counter()
                batch = next(batches)
                t_data = time.perf_counter() - t0
                sched = schedules.at(it)
                apply_schedule(optimizer, sched["lr"], sched["last_layer_lr"], sched["wd"])
                masks = make_masks(
                    cfg.seed, env.rank, it, a.global_crops * B, grid, cfg.loss.mask_probability, cfg.loss.mask_ratio
                ).to(env.device)
                torch.manual_seed(derived_seed(cfg.seed, env.rank, it, 1))  # drop path draws, reproducible on resume
                with torch.autocast(env.device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                    teacher_out = teacher.teacher_forward(batch["global_crops"], masks)
                    student_out = model(batch["global_crops"], batch["local_crops"], masks)
                    loss, parts = objective(student_out, teacher_out, masks, sched["teacher_temp"])
                names = ["loss", *parts]  # the loss parts, then the teacher's collapse monitors
                reported = all_reduce_mean(torch.stack([loss.detach().float(), *parts.values()]))
                if not torch.isfinite(reported).all():
                    kept = ckpt_io.latest_checkpoint(run_dir)
                    values = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, reported.tolist()))
                    raise NonFiniteLossError(
                        f"non-finite loss at iteration {it} ({values}); stopped without saving. Last good checkpoint: "
                        f"{kept or 'none'}. Lower optim.base_lr, use precision=bf16/fp32, or check the data."
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                # Clipped per module (backbone, head) as in DINOv2.
                grad_norm = max(
                    torch.nn.utils.clip_grad_norm_(m.parameters(), o.clip_grad or math.inf)
                    for m in (student.backbone, student.head)
                )
                scaler.step(optimizer)
                scaler.update()
                update_teacher(teacher, student, sched["momentum"])

                step_time = time.perf_counter() - t0
                window["time"] += step_time
                window["data"] += t_data
                window["steps"] += 1
                done = it + 1
                first = it == start
                sums = all_gather_floats([batch["global_crops"].double().sum().item()], env.device) if first else None
                if done % cfg.log_every == 0 or done == stop or first:
                    counters = sum_counters(loader.stats(), env.device)  # a collective: every rank joins
                if env.is_main and (done % cfg.log_every == 0 or done == stop or first):
                    record = {
                        "iteration": done,
                        "epoch": it // cfg.data.iterations_per_epoch,
                        **dict(zip(names, reported.tolist())),
                        **sched,
                        "grad_norm": float(grad_norm),
                        "images_per_s": window["steps"] * B * env.world_size / window["time"],
                        "data_wait_frac": window["data"] / window["time"],
                        "step_time_s": step_time,
                        "mpp_mean": float(batch["mpp"].float().mean()),
                        **{f"loader_{k}": v for k, v in counters.items()},  # summed over ranks
                    }
                    if sums is not None:
                        record["rank_batch_sums"] = [s[0] for s in sums]  # ranks must draw different tiles
                    log.write(record)
                    window = {"time": 0.0, "data": 0.0, "steps": 0}
                    bar.update(task, completed=done, description=f"pretrain loss {record['loss']:.3f}")
                if done % cfg.checkpoint.every == 0 or done == stop:
                    if env.is_main:
                        state = ckpt_io.training_state(config, student, teacher, objective, optimizer, scaler, done)
                        ckpt_io.save_checkpoint(run_dir, state, cfg.checkpoint.keep)
                    barrier()
    finally:
        loader.close()
        cleanup()
    return record
