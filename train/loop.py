"""The training loop (``gapless pretrain``): one function, read top to bottom.

Every random draw of iteration ``i`` on rank ``r`` (data, iBOT masks, drop path) is seeded from (seed, r, i), so a
run resumed from a checkpoint at iteration ``k`` takes exactly the steps an uninterrupted run would have taken.

Before training starts, rank 0 takes the run folder's lock (:mod:`gapless.train.run_lock`) and, once the models are
built on the host (their size is a checkpoint's), checks that the folder can take checkpoints
(:mod:`gapless.train.run_folder`), before anything is moved to the device, read or trained. A run stops for a stated
reason, with a checkpoint where one is worth keeping: SIGTERM (:mod:`gapless.train.stopping`), a loader that delivers
too many skipped tiles or failed reads (:mod:`gapless.train.health`), or a non-finite loss (without saving: the last
checkpoint is the good one). Every rank learns each of these in a collective, so all ranks stop after the same step;
the loader is closed, the lock released and the process group left on every way out, and the run's own reason is
the one reported (a loader whose workers died of the same signal neither ends the run early nor hides it).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from torch.nn.parallel import DistributedDataParallel

from gapless.config import save_config, to_dict
from gapless.console import console, progress
from gapless.errors import InputError, NonFiniteLossError, RunError
from gapless.pipeline.loader import build_loader
from gapless.seeding import derived_seed
from gapless.train import checkpoint as ckpt_io
from gapless.train.config import PretrainConfig
from gapless.train.distributed import (
    DistEnv,
    all_gather_floats,
    all_reduce_mean,
    cleanup,
    init_distributed,
    on_main,
    sum_counters,
)
from gapless.train.health import LoaderWatch
from gapless.train.masking import make_masks
from gapless.train.optim import apply_schedule, build_optimizer
from gapless.train.recipe import print_explanation
from gapless.train.run_folder import MetricsLog, check_writable
from gapless.train.run_lock import RunLock
from gapless.train.schedules import Schedules, build_schedules
from gapless.train.ssl import DINOv2Objective, SSLModel, build_models, compile_blocks, update_teacher
from gapless.train.stopping import StopRequests, TrainingStopped, closing, stopped_while_starting


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
    run_dir, lock = Path(run_dir), RunLock(run_dir)
    try:
        with StopRequests() as stop, closing(loader), stopped_while_starting(stop, run_dir):
            on_main(env, lock.acquire, "lock the run folder")
            return _train(cfg, run_dir, env, stop, resume, max_steps, loader)
    finally:
        lock.release()
        cleanup()


@dataclass
class Trainee:
    """What a step updates and a checkpoint holds; ``model`` is the student as the forward pass calls it (DDP)."""

    student: SSLModel
    teacher: SSLModel
    objective: DINOv2Objective
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    model: torch.nn.Module

    world_size: int

    def state(self, config: dict[str, Any], iteration: int) -> dict[str, Any]:
        t = self
        return ckpt_io.training_state(config, t.student, t.teacher, t.objective, t.optimizer, t.scaler, iteration,
                                      t.world_size)  # fmt: skip


def _train(
    cfg: PretrainConfig,
    run_dir: Path,
    env: DistEnv,
    stop: StopRequests,
    resume: bool,
    max_steps: int | None,
    loader: Any,
) -> dict[str, Any]:
    config = to_dict(cfg)
    amp_dtype = autocast_dtype(cfg.precision, env.device)
    a, o = cfg.data.augment, cfg.optim
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (the teacher is never broadcast)
    student, teacher = build_models(cfg)
    size = ckpt_io.checkpoint_bytes(student, teacher)
    on_main(env, lambda: check_writable(run_dir, size, cfg.checkpoint.keep), "write in the run folder")
    objective = DINOv2Objective(cfg.loss, cfg.model.head_prototypes, a.global_crops, a.local_crops)
    student, teacher, objective = student.to(env.device), teacher.to(env.device), objective.to(env.device)
    optimizer = build_optimizer(
        student, student.backbone.depth, o.layerwise_decay, o.patch_embed_lr_mult, o.betas, fused=o.fused
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp_dtype == torch.float16)

    start = ckpt_io.resume(run_dir, config, (student, teacher, objective, optimizer, scaler), env.device,
                           env.world_size, allowed=resume, verbose=env.is_main)  # fmt: skip
    starts = [s[0] for s in all_gather_floats([start], env.device)]
    if min(starts) != max(starts):
        raise RunError(f"{run_dir}: the ranks found different checkpoints to resume from ({starts}); is it shared?")
    if env.is_main:
        save_config(cfg, run_dir / "config.yaml")
        console.print(
            f"[bold]pretrain[/] {run_dir}: {env.world_size} process(es) on {env.device.type}, "
            f"{amp_dtype}, iteration {start} of {cfg.total_iterations}"
        )
        print_explanation(cfg, env.world_size, console)
    if cfg.compile:
        compile_blocks(student, teacher)
    model = student
    if env.world_size > 1:
        model = DistributedDataParallel(student, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    trainee = Trainee(student, teacher, objective, optimizer, scaler, model, env.world_size)
    end = min(cfg.total_iterations, start + max_steps) if max_steps else cfg.total_iterations
    built = build_loader(cfg.data, env.rank, env.world_size, start) if loader is None else None
    with closing(built):  # the loader built here; a caller's is closed by train(), on every way out
        return _steps(cfg, config, amp_dtype, run_dir, env, stop, (start, end), loader if built is None else built,
                      trainee, build_schedules(cfg, env.world_size))  # fmt: skip


def _steps(
    cfg: PretrainConfig,
    config: dict[str, Any],
    amp_dtype: torch.dtype,
    run_dir: Path,
    env: DistEnv,
    stop: StopRequests,
    span: tuple[int, int],
    loader: Any,
    t: Trainee,
    schedules: Schedules,
) -> dict[str, Any]:
    """The steps of ``span`` (first, end exclusive), with their logging, checks and checkpoints."""
    start, end = span
    a, B = cfg.data.augment, cfg.data.batch_size
    batches = endless(loader)
    log = MetricsLog(run_dir / "metrics.jsonl", start) if env.is_main else None
    watch = LoaderWatch(cfg.health, start)
    grid = (a.global_size // cfg.model.patch_size,) * 2
    window = {"time": 0.0, "data": 0.0, "steps": 0}
    record: dict[str, Any] = {}
    completed, saved, updating = start, start, False

    def save(done: int) -> Path:
        state = t.state(config, done)
        return on_main(env, lambda: ckpt_io.save_checkpoint(run_dir, state, cfg.checkpoint.keep), "save a checkpoint")

    try:
        bar = progress() if env.is_main else contextlib.nullcontext()
        with bar:
            task = bar.add_task("pretrain", total=cfg.total_iterations, completed=start) if env.is_main else None
            for it in range(start, end):
                t0 = time.perf_counter()
                batch = next(batches)
                t_data = time.perf_counter() - t0
                updating = True
                sched = schedules.at(it)
                apply_schedule(t.optimizer, sched["lr"], sched["last_layer_lr"], sched["wd"])
                masks = make_masks(
                    cfg.seed, env.rank, it, a.global_crops * B, grid, cfg.loss.mask_probability, cfg.loss.mask_ratio
                ).to(env.device)
                torch.manual_seed(derived_seed(cfg.seed, env.rank, it, 1))  # drop path draws, reproducible on resume
                with torch.autocast(env.device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32):
                    teacher_out = t.teacher.teacher_forward(batch["global_crops"], masks)
                    student_out = t.model(batch["global_crops"], batch["local_crops"], masks)
                    loss, parts = t.objective(student_out, teacher_out, masks, sched["teacher_temp"])
                names = ["loss", *parts]  # the loss parts, then the teacher's collapse monitors
                # One collective per step carries the reported values and any rank's stop request.
                flag = loss.new_tensor(float(stop.requested), dtype=torch.float32)
                reported = all_reduce_mean(torch.stack([loss.detach().float(), *parts.values(), flag]))
                stopping, reported = bool(reported[-1] > 0), reported[:-1]
                if not torch.isfinite(reported).all():
                    kept = ckpt_io.latest_checkpoint(run_dir)
                    values = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, reported.tolist()))
                    raise NonFiniteLossError(
                        f"non-finite loss at iteration {it} ({values}); stopped without saving. Last good checkpoint: "
                        f"{kept or 'none'}. Lower optim.base_lr, use precision=bf16/fp32, or check the data."
                    )
                t.optimizer.zero_grad(set_to_none=True)
                t.scaler.scale(loss).backward()
                t.scaler.unscale_(t.optimizer)
                # Clipped per module (backbone, head) as in DINOv2.
                grad_norm = max(
                    torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.optim.clip_grad or math.inf)
                    for m in (t.student.backbone, t.student.head)
                )
                t.scaler.step(t.optimizer)
                t.scaler.update()
                update_teacher(t.teacher, t.student, sched["momentum"])
                updating, completed = False, it + 1

                step_time = time.perf_counter() - t0
                window["time"] += step_time
                window["data"] += t_data
                window["steps"] += 1
                done, first = it + 1, it == start
                sums = all_gather_floats([batch["global_crops"].double().sum().item()], env.device) if first else None
                verdict = None
                if done % cfg.log_every == 0 or done == end or first or stopping:
                    counters = sum_counters(loader.stats(), env.device)  # a collective: every rank joins
                    verdict = watch.observe(done, counters)
                    if env.is_main:
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
                            "loader_skipped_share": verdict.skipped,  # over the health window
                            "loader_failed_read_share": verdict.failed_reads,
                        }
                        if sums is not None:
                            record["rank_batch_sums"] = [s[0] for s in sums]  # ranks must draw different tiles
                        log.write(record)
                        window = {"time": 0.0, "data": 0.0, "steps": 0}
                        bar.update(task, completed=done, description=f"pretrain loss {record['loss']:.3f}")
                        if verdict.level == "warn":
                            console.print(
                                f"[yellow]warning:[/] the loader's data: {escape(verdict.message)}",
                                highlight=False,
                                soft_wrap=True,
                            )
                bad_data = verdict is not None and verdict.level == "stop"
                if done % cfg.checkpoint.every == 0 or done == end or stopping or bad_data:
                    path, saved = save(done), done
                if stopping:
                    who = stop.signal or "a signal to another rank"
                    raise TrainingStopped(
                        f"stopped by {who} after iteration {done}: saved {path}; rerun the same command to continue"
                    )
                if bad_data:
                    raise RunError(f"stopped at iteration {done}, the data went bad: {verdict.message}; saved {path}")
    except (TrainingStopped, NonFiniteLossError, InputError, RunError):
        raise
    except BaseException:
        # A signal can also end a run through its loader (workers that got the same signal): rank 0 keeps the last
        # completed step, whole whenever the failure came between steps (no collective: the other ranks may be gone).
        # With nothing done since the last checkpoint (the first step after a resume, or one just after a checkpoint)
        # there is nothing to save: the run names the checkpoint it continues from.
        if stop.requested and not updating:
            if completed > saved:
                where = "rank 0 saved a checkpoint"
                if env.is_main:
                    where = f"saved {ckpt_io.save_checkpoint(run_dir, t.state(config, completed), cfg.checkpoint.keep)}"
            else:
                kept = ckpt_io.latest_checkpoint(run_dir)
                where = f"nothing new to save, the last checkpoint is {kept}" if kept else "no checkpoint yet"
            raise TrainingStopped(
                f"stopped by {stop.signal} after iteration {completed} (its loader's workers got the signal too): "
                f"{where}; rerun the same command to continue"
            ) from None
        raise
    return record
