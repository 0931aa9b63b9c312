"""Checkpoints: atomic writes, the last K kept, exact resume, refusal of foreign configs, backbone export (timm's
layout: :mod:`gapless.train.export`).

A checkpoint is a plain dict of tensors and Python scalars (so it loads with ``weights_only=True``): student,
teacher, optimiser, grad scaler, the loss centring buffers, the iteration (which is also the data position and, since
every random draw is seeded from (seed, rank, iteration), the RNG state), the resolved config and its fingerprint.

Writes go to a temporary name through a Python file, so a full disk or an unwritable folder is a one-line error
naming the file (not PyTorch's internal failure) and leaves no temporary file. A resume takes the newest checkpoint
that loads and falls back, with a warning, past any that is truncated or damaged, which it sets aside as
``NAME.damaged``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from torch import nn

from gapless.console import console
from gapless.errors import InputError
from gapless.io import atomic_output, load_tensors, replaceable_file
from gapless.train.config import recipe_fingerprint, recipe_items
from gapless.train.vit import VisionTransformer, build_vit

CHECKPOINT_FORMAT = "gapless-dinov2-checkpoint"
BACKBONE_FORMAT = "gapless-backbone"
FORMAT_VERSION = 2  # 2: the DINO head's prototype layer has trained gains (head.last_layer.weight_g)


def checkpoint_path(run_dir: str | Path, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / "checkpoints").glob("ckpt_*.pt"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def atomic_save(obj: Any, path: Path) -> Path:
    """torch.save to a temporary name in the same directory, flushed to disk, then renamed: readers never see half a
    file. Written through a Python file object, so a failed write raises ``OSError`` with its errno, which
    :func:`gapless.io.atomic_output` turns into a one-line error naming ``path``."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def checkpoint_bytes(student: nn.Module, teacher: nn.Module) -> int:
    """The size of a training checkpoint of these models: the student, its two AdamW moments and the teacher (within
    the loss's small buffers and some kilobytes of metadata)."""

    def size(model: nn.Module) -> int:
        return sum(p.numel() * p.element_size() for p in model.parameters())

    return 3 * size(student) + size(teacher)


def load_resumable(
    run_dir: str | Path, map_location: str | torch.device = "cpu", main: bool = True
) -> tuple[Path, dict] | None:
    """(path, state) of the newest checkpoint of ``run_dir`` that loads; None when there is none.

    A checkpoint that does not load (truncated by a full disk or a bad copy, damaged, or not a training checkpoint)
    is passed over and the next older one tried; when none loads, the error names every file and leaves them as they
    are. When an older one loads, the ``main`` process (rank 0, the one that saves) sets those passed over aside as
    ``NAME.damaged`` and says so: kept, so nothing is lost, but no longer taken for the run's newest checkpoint,
    pruned or resumed from.
    """
    found = list_checkpoints(run_dir)
    problems, passed_over = [], []
    for path in reversed(found):
        try:
            state = load_file(path, map_location)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise InputError(f"{path}: an exported backbone, not a training checkpoint")
        except InputError as exc:
            problems.append(str(exc))
            passed_over.append(path)
            if main:
                message = escape(f"{exc}; trying the previous checkpoint")
                console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
            continue
        if passed_over and main:
            aside = ", ".join(set_aside(p).name for p in passed_over)
            message = escape(f"resuming from {path}, the newest checkpoint that loads; set aside as {aside} (kept)")
            console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
        return path, state
    if problems:
        raise InputError(f"{run_dir}: no checkpoint loads ({'; '.join(problems)}); move them away to start again")
    return None


def set_aside(path: Path) -> Path:
    """Rename a checkpoint that does not load to ``NAME.damaged`` (``NAME.damaged.N`` beside an earlier one)."""
    aside, n = path.with_name(path.name + ".damaged"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.damaged.{n}"), n + 1
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # gone meanwhile: nothing left to set aside
        pass
    except OSError as exc:
        raise InputError(f"{path}: does not load and cannot be set aside ({exc.strerror or exc})") from exc
    return aside


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` as the checkpoint of its iteration, then delete all but the ``keep`` newest of those that sort
    at or before it (a newer file is never deleted for an older one)."""
    path = atomic_save(state, checkpoint_path(run_dir, state["iteration"]))
    older = [p for p in list_checkpoints(run_dir) if p.name <= path.name]
    for old in older[:-keep]:
        old.unlink(missing_ok=True)
    return path


def training_state(
    config: dict[str, Any],
    student: nn.Module,
    teacher: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    iteration: int,
    world_size: int = 1,
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        "iteration": iteration,
        "world_size": world_size,  # the global batch and each rank's tiles depend on it
        "config": config,
        "fingerprint": recipe_fingerprint(config),
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "objective": objective.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
    }


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gapless checkpoint or exported backbone; anything else is a InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint file not found")
    obj = load_tensors(path, "not a gapless checkpoint", map_location)
    if not isinstance(obj, dict) or obj.get("format") not in (CHECKPOINT_FORMAT, BACKBONE_FORMAT):
        raise InputError(f"{path}: not a gapless checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    return obj


def resume(
    run_dir: str | Path,
    config: dict[str, Any],
    parts: tuple[nn.Module, nn.Module, nn.Module, torch.optim.Optimizer, torch.amp.GradScaler],
    map_location: str | torch.device,
    world_size: int,
    allowed: bool = True,
    verbose: bool = True,
) -> int:
    """Load the newest loadable checkpoint of ``run_dir`` into (student, teacher, objective, optimizer, scaler) and
    return the iteration to continue from: 0 when there is none. A checkpoint of another recipe or format is refused,
    and so is any checkpoint when ``allowed`` is false (``--no-resume``); a changed number of processes is a warning.
    """
    if not allowed and list_checkpoints(run_dir):  # refused before any file is read or set aside
        raise InputError(
            f"{run_dir}: already holds checkpoints; drop --no-resume to continue it, or pick another --out"
        )
    found = load_resumable(run_dir, map_location, main=verbose)
    if found is None:
        return 0
    path, state = found
    check_compatible(state, config, path)
    start = restore(state, *parts)
    before = int(state.get("world_size", world_size))
    if before != world_size and verbose:
        batch = config["data"]["batch_size"]
        message = escape(
            f"{path.name} was trained by {before} process(es), this run has {world_size}: the global batch changes "
            f"from {batch * before} to {batch * world_size} (the lr with it, by DINOv2's rule) and the tiles drawn "
            "differ from an uninterrupted run's"
        )
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    return start


def check_compatible(ckpt: dict[str, Any], config: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume from a checkpoint of an older format or whose recipe (model, optimiser, losses, schedules,
    data) differs."""
    if ckpt.get("version", 1) != FORMAT_VERSION:
        raise InputError(
            f"{path}: a checkpoint of format {ckpt.get('version', 1)}, which this version (format {FORMAT_VERSION}) "
            "cannot continue; start a new run in another --out (`gapless export` still reads its backbone)"
        )
    if ckpt.get("fingerprint") == recipe_fingerprint(config):
        return
    old, new = recipe_items(ckpt["config"]), recipe_items(config)
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
    raise InputError(
        f"{path}: this checkpoint was made with another config ({shown}); "
        "resume with the same config, or start a new run in another --out directory"
    )


def restore(
    ckpt: dict[str, Any],
    student: nn.Module,
    teacher: nn.Module,
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> int:
    """Load every piece of training state; returns the iteration to continue from."""
    student.load_state_dict(ckpt["student"])
    teacher.load_state_dict(ckpt["teacher"])
    objective.load_state_dict(ckpt["objective"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    return int(ckpt["iteration"])


def teacher_backbone_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    if ckpt["format"] == BACKBONE_FORMAT:
        return ckpt["backbone"]
    prefix = "backbone."
    return {k[len(prefix) :]: v for k, v in ckpt["teacher"].items() if k.startswith(prefix)}


def save_backbone(
    state: dict[str, torch.Tensor], config: dict[str, Any], iteration: int, config_fingerprint: str, out: str | Path
) -> Path:
    """Write a backbone's weights with the config and iteration they belong to (the export format)."""
    exported = {
        "format": BACKBONE_FORMAT,
        "version": FORMAT_VERSION,
        "iteration": int(iteration),
        "config": config,
        "fingerprint": config_fingerprint,
        "backbone": state,
    }
    return atomic_save(exported, Path(out))


def is_backbone_file(path: str | Path) -> bool:
    """Whether ``path`` holds an exported backbone (its format marker), the one kind of file an export replaces."""
    try:
        return load_file(path).get("format") == BACKBONE_FORMAT
    except InputError:
        return False


def export_backbone(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the teacher backbone (weights, config, iteration) of a checkpoint to ``out``: a new file or an exported
    backbone, never the checkpoint itself or another file (an :class:`InputError`, before the checkpoint is read)."""
    replaceable_file(out, [("the checkpoint", checkpoint)], "an exported backbone", is_backbone_file)
    ckpt = load_file(checkpoint)
    return save_backbone(teacher_backbone_state(ckpt), ckpt["config"], ckpt["iteration"], ckpt.get("fingerprint", ""),
                         out)  # fmt: skip


def load_teacher_backbone(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[VisionTransformer, dict[str, Any], int]:
    """(teacher backbone in eval mode, resolved config dict, iteration) from a checkpoint or an exported backbone."""
    model, config, iteration = backbone_from_checkpoint(load_file(path, map_location), path)
    return model.to(map_location).eval(), config, iteration


def backbone_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> tuple[VisionTransformer, dict[str, Any], int]:
    """(teacher backbone in eval mode, config, iteration) of a loaded checkpoint or backbone (``path`` names it)."""
    config = ckpt["config"]
    model = build_vit(config["model"], config["data"]["augment"]["global_size"], drop_path=0.0)
    try:
        model.load_state_dict(teacher_backbone_state(ckpt))
    except RuntimeError as exc:
        raise InputError(f"{path}: backbone weights do not match its config ({str(exc).splitlines()[0]})") from exc
    return model.eval(), config, int(ckpt["iteration"])
