"""What ``gapless demo`` and ``gapless reproduce`` share: the experiment schema, resumable stages and their steps.

An experiment is synthetic slides -> pretraining -> an evaluation set -> evaluation, described by one
:class:`ExperimentConfig` (``pretrain.data.index`` is set by the slides stage itself). :class:`Stages` runs named,
timed stages in an output folder with a manifest, so a rerun of the same configuration skips what is done and a
run of another configuration is refused; ``fresh`` deletes the experiment's own outputs (:data:`OUTPUTS`, nothing
else) first. A folder of another kind of experiment (a demo's, a reproduction at another budget) is refused whatever
``fresh`` says.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapless.config import fingerprint, load_config, to_dict
from gapless.console import console, progress
from gapless.errors import InputError, RunError
from gapless.eval.config import EvalConfig
from gapless.io import output_folder, write_json
from gapless.pipeline.sampling.config import PAPER_STRATEGIES
from gapless.pipeline.sampling.magnifications import EVAL_MPPS
from gapless.train.config import PretrainConfig

REPRODUCE_STRATEGIES = ("fixed", *PAPER_STRATEGIES)  # what `gapless reproduce` trains by default

OUTPUTS = ("manifest.json", "config.yaml", "sampling.json", "sampling.png", "slides", "pretrain", "evalset.h5",
           "eval", "features", "results", "plots", "untrained", "demo.json", "reproduce.json", "SUMMARY.md")  # fmt: skip


@dataclass
class SlidesConfig:
    count: int = 15
    size_mm: tuple[float, float] = (1.5, 1.2)
    slides_per_patient: int = 1  # one slide per patient: enough patients for 5 patient-disjoint folds
    base_mpp: float = 0.25
    level_step: int = 4
    seed: int = 0


@dataclass
class EvalSetConfig:
    regions_per_slide: int = 16
    folds: int = 5
    seed: int = 0


@dataclass
class ExperimentConfig:
    """Slides -> pretraining -> evaluation set -> evaluation."""

    slides: SlidesConfig = field(default_factory=SlidesConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    evalset: EvalSetConfig = field(default_factory=EvalSetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_experiment(path: str | Path, overrides: list[str]) -> ExperimentConfig:
    return load_config(ExperimentConfig, path, overrides)


class Stages:
    """Timed stages with a manifest in ``out``: a rerun of the same kind and config skips what is done; another config
    of the same kind is refused unless ``fresh``; another kind is always refused."""

    def __init__(self, out: Path, cfg: Any, fresh: bool, kind: str) -> None:
        from gapless.config import save_config

        self.out, self.path, self.timings = out, out / "manifest.json", {}
        digest = fingerprint(to_dict(cfg))
        manifest = json.loads(self.path.read_text()) if self.path.is_file() else None
        if manifest is None and out.is_dir() and any(out.iterdir()):
            raise InputError(f"{out}: exists, is not empty and holds no {kind} manifest; choose another --out")
        if manifest and manifest.get("kind") != kind:  # another experiment's outputs: never deleted, never reused
            raise InputError(f"{out}: holds a {manifest.get('kind')} run, not a {kind} run; choose another --out")
        if manifest and fresh:
            for name in OUTPUTS:  # only what an experiment writes; anything else in the folder stays
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            manifest = None
        if manifest and manifest.get("config") != digest:
            raise InputError(
                f"{out}: holds a {kind} run of another configuration; rerun with --fresh to start it again (deletes "
                "only the run's own outputs), or choose another --out"
            )
        self.manifest = manifest or {"kind": kind, "config": digest, "done": {}}
        output_folder(out)
        save_config(cfg, out / "config.yaml")
        write_json(self.manifest, self.path)

    def done(self, name: str) -> bool:
        return name in self.manifest["done"]

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as stage ``name`` unless a previous run finished it; prints and records the seconds."""
        if self.done(name):
            self.timings[name] = 0.0
            console.print(f"[dim]{name}: done in an earlier run ({self.manifest['done'][name]:.1f} s), reused")
            return None
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        self.manifest["done"][name] = round(self.timings[name], 2)
        write_json(self.manifest, self.path)
        console.print(f"[dim]{name}: {self.timings[name]:.1f} s")
        return result


def make_slides(cfg: SlidesConfig, out: Path) -> None:
    """Write the synthetic slides and their index into ``out``."""
    from gapless.pipeline.slides.indexer import build_index
    from gapless.pipeline.synth.writer import make_dataset

    with console.status(f"writing {cfg.count} synthetic slides of {cfg.size_mm[0]:g} x {cfg.size_mm[1]:g} mm"):
        result = make_dataset(out, cfg.count, tuple(cfg.size_mm), cfg.base_mpp, "tiff", cfg.seed, cfg.level_step,
                              slides_per_patient=cfg.slides_per_patient)  # fmt: skip
    with progress() as bar:
        task = bar.add_task("indexing", total=len(result.paths))
        summary = build_index([out], out / "index.h5", result.labels_csv, workers=2,
                              on_progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    console.print(f"{summary.usable} of {summary.total} slides usable -> {out / 'index.h5'}")


def pretrain(cfg: PretrainConfig, index: Path, run_dir: Path, processes: int = 1) -> Path:
    """Train (resuming from the run's last checkpoint) and export the teacher backbone; returns the backbone file.

    One process trains here; more run under torchrun (:func:`launch_torchrun`), one per GPU of this machine.
    """
    from gapless.train.checkpoint import export_backbone, latest_checkpoint
    from gapless.train.loop import train

    data = dataclasses.replace(cfg.data, index=str(index))
    cfg = dataclasses.replace(cfg, data=data, out=str(run_dir))
    if processes > 1:
        launch_torchrun(cfg, run_dir, processes)
    else:
        train(cfg, run_dir, resume=True)
    return export_backbone(latest_checkpoint(run_dir), run_dir / "backbone.pt")


def launch_torchrun(cfg: PretrainConfig, run_dir: Path, processes: int) -> None:
    """``gapless pretrain`` under torchrun with ``processes`` ranks on this machine, its config written beside the
    run. SIGTERM to this process is passed on (the ranks save a checkpoint and stop); a run that does not finish is a
    :class:`RunError` naming the folder, and rerunning continues it."""
    import signal
    import subprocess
    import sys

    from gapless.config import save_config

    config = save_config(cfg, run_dir.parent / f"{run_dir.name}.yaml")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "gapless.cli", "pretrain", "--config", str(config), "--out", str(run_dir)]  # fmt: skip
    console.print(f"[dim]{' '.join(command)}", highlight=False, soft_wrap=True)
    proc = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.kill()
    if code != 0:
        raise RunError(
            f"{run_dir}: training under torchrun ended with status {code} (its message is above); rerun the same "
            "command to continue from the run's last checkpoint"
        )


def untrained_backbone(cfg: PretrainConfig, path: Path) -> Path:
    """The teacher backbone every strategy's run starts from (seeded as the trainer seeds it), in export format."""
    import torch

    from gapless.train.checkpoint import save_backbone
    from gapless.train.ssl import build_models

    torch.manual_seed(cfg.seed)
    _, teacher = build_models(cfg)
    return save_backbone(teacher.backbone.state_dict(), to_dict(cfg), 0, "", path)


def make_evalset(cfg: ExperimentConfig, index: Path, out: Path) -> None:
    """The multi-scale evaluation set of the experiment's slides, at the size the model saw its global crops."""
    from gapless.eval.sets.build import build_set

    mpps = sorted({*cfg.eval.train_mpps, *(cfg.eval.test_mpps or EVAL_MPPS)})
    tile_px = cfg.pretrain.data.augment.global_size
    with progress() as bar:
        path, stats = build_set([str(index)], out, None, mpps, cfg.evalset.regions_per_slide, cfg.evalset.folds,
                                cfg.evalset.seed, tile_px=tile_px, progress=bar)  # fmt: skip
    console.print(f"{stats.regions} regions x {len(mpps)} mpps at {tile_px} px -> {path}")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def protocol_words(protocol: dict) -> str:
    """How the report's splits were made, in words."""
    if protocol["split"] == "nested":
        how = f"{protocol['nested_folds']} outer folds of the paper's nested patient split"
    else:
        how = "the set's patient-disjoint folds"
    refit = "refitted on train + validation" if protocol["refit"] else "fitted on train only"
    return f"{how} (protocol {protocol['protocol']}; final probes {refit})"
