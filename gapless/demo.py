"""`gapless demo`: the main job on built-in defaults, from nothing to figures, on any machine.

Stages, each timed and each skipped when a previous run of the same configuration in ``--out`` finished it:
the sampling analysis; synthetic slides and their index; a short DINOv2 pretraining with continuous sampling through
the DALI pipeline (CPU operators without a GPU); the teacher's export; the multi-scale evaluation set; features,
RankMe, k-NN and linear probes per mpp. Everything lands in ``--out`` (default ``runs/demo``): ``SUMMARY.md``,
``demo.json``, ``eval/`` (``report.json`` and plots), the run and the slides.

A folder is resumed only when its ``manifest.json`` records the same configuration; ``--fresh`` deletes the demo's
own outputs (the names in :data:`OUTPUTS`, nothing else) and starts again. The helpers here (the experiment schema,
:class:`Stages`, the slide/bench/train steps) are shared with ``gapless reproduce``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.config import EvalConfig
from train.config import PretrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OUTPUTS = ("manifest.json", "config.yaml", "sampling.json", "sampling.png", "slides", "pretrain", "bench.h5", "eval",
           "features", "results", "plots", "untrained", "demo.json", "reproduce.json", "SUMMARY.md")  # fmt: skip


@dataclass
class SlidesConfig:
    count: int = 15
    size_mm: tuple[float, float] = (1.5, 1.2)
    slides_per_patient: int = 1  # one slide per patient: enough patients for 5 patient-disjoint folds
    base_mpp: float = 0.25
    level_step: int = 4
    seed: int = 0


@dataclass
class BenchConfig:
    regions_per_slide: int = 16
    folds: int = 5
    seed: int = 0


@dataclass
class ExperimentConfig:
    """Slides -> pretraining -> evaluation set -> evaluation; ``pretrain.data.index`` is set by the stage itself."""

    slides: SlidesConfig = field(default_factory=SlidesConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def fingerprint(cfg: Any) -> str:
    from gapless.config import to_dict

    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Timed stages with a manifest in ``out``: a rerun of the same config skips what is done, any other refuses."""

    def __init__(self, out: Path, cfg: Any, fresh: bool, kind: str) -> None:
        from gapless.cli import UserError
        from gapless.config import save_config

        self.out, self.path, self.timings = out, out / "manifest.json", {}
        digest = fingerprint(cfg)
        manifest = json.loads(self.path.read_text()) if self.path.is_file() else None
        if manifest is None and out.is_dir() and any(out.iterdir()):
            raise UserError(f"{out}: exists, is not empty and holds no {kind} manifest; choose another --out")
        if manifest and fresh:
            for name in OUTPUTS:  # only what this command writes; anything else in the folder stays
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            manifest = None
        if manifest and (manifest.get("kind") != kind or manifest.get("config") != digest):
            raise UserError(
                f"{out}: holds a {manifest.get('kind')} run of another configuration; rerun with --fresh to start it "
                "again (deletes only the run's own outputs), or choose another --out"
            )
        self.manifest = manifest or {"kind": kind, "config": digest, "done": {}}
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        self._save()

    def _save(self) -> None:
        from gapless.console import write_json

        write_json(self.manifest, self.path)

    def done(self, name: str) -> bool:
        return name in self.manifest["done"]

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as stage ``name`` unless a previous run finished it; prints and records the seconds."""
        from gapless.console import console

        if self.done(name):
            self.timings[name] = 0.0
            console.print(f"[dim]{name}: done in an earlier run ({self.manifest['done'][name]:.1f} s), reused")
            return None
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = time.perf_counter() - t0
        self.manifest["done"][name] = round(self.timings[name], 2)
        self._save()
        console.print(f"[dim]{name}: {self.timings[name]:.1f} s")
        return result


def load_experiment(path: Path, overrides: list[str]) -> ExperimentConfig:
    from gapless.config import load_config

    return load_config(ExperimentConfig, path, overrides)


def make_slides(cfg: SlidesConfig, out: Path) -> None:
    from gapless.console import console, progress
    from pipeline.slides.indexer import build_index
    from pipeline.slides.synth import make_dataset

    with console.status(f"writing {cfg.count} synthetic slides of {cfg.size_mm[0]:g} x {cfg.size_mm[1]:g} mm"):
        result = make_dataset(out, cfg.count, tuple(cfg.size_mm), cfg.base_mpp, "tiff", cfg.seed, cfg.level_step,
                              slides_per_patient=cfg.slides_per_patient)  # fmt: skip
    with progress() as bar:
        task = bar.add_task("indexing", total=len(result.paths))
        summary = build_index([out], out / "index.h5", result.labels_csv, workers=2,
                              on_progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    console.print(f"{summary.usable} of {summary.total} slides usable -> {out / 'index.h5'}")


def pretrain(cfg: PretrainConfig, index: Path, run_dir: Path) -> Path:
    """Train (resuming from the run's last checkpoint) and export the teacher backbone; returns the backbone file."""
    import dataclasses

    from train.checkpoint import export_backbone, latest_checkpoint
    from train.loop import train

    data = dataclasses.replace(cfg.data, index=str(index))
    train(dataclasses.replace(cfg, data=data, out=str(run_dir)), run_dir, resume=True)
    return export_backbone(latest_checkpoint(run_dir), run_dir / "backbone.pt")


def untrained_backbone(cfg, path: Path) -> Path:
    """The teacher backbone every strategy's run starts from (seeded as the trainer seeds it), in export format."""
    import torch

    from gapless.config import to_dict
    from train.checkpoint import BACKBONE_FORMAT, FORMAT_VERSION, atomic_save
    from train.ssl import build_models

    torch.manual_seed(cfg.seed)
    _, teacher = build_models(cfg)
    state = {"format": BACKBONE_FORMAT, "version": FORMAT_VERSION, "iteration": 0, "config": to_dict(cfg),
             "fingerprint": "", "backbone": teacher.backbone.state_dict()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(state, path)


def make_bench(cfg: ExperimentConfig, index: Path, out: Path) -> None:
    from eval.benchset import build_set
    from gapless.console import console, progress

    mpps = sorted({*cfg.eval.train_mpps, *(cfg.eval.test_mpps or (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0))})
    tile_px = cfg.pretrain.data.augment.global_size  # the size the model saw its global crops at
    with progress() as bar:
        path, stats = build_set([str(index)], out, None, mpps, cfg.bench.regions_per_slide, cfg.bench.folds,
                                cfg.bench.seed, tile_px=tile_px, progress=bar)  # fmt: skip
    console.print(f"{stats.regions} regions x {len(mpps)} mpps at {tile_px} px -> {path}")


def training_figures(run_dir: Path) -> dict[str, float]:
    """First and last loss, images/s, tiles read and the teacher's entropies at the end, from metrics.jsonl."""
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return {
        "iterations": lines[-1]["iteration"],
        "loss_first": lines[0]["loss"],
        "loss_last": lines[-1]["loss"],
        "images_per_s": lines[-1]["images_per_s"],
        "tiles_read": lines[-1].get("loader_reads", 0),
        "tiles_skipped": lines[-1].get("loader_skipped_tiles", 0),
        # The collapse monitors at the end: a healthy teacher keeps the marginal clearly above the per-sample one.
        "teacher_entropy": lines[-1].get("teacher_entropy", float("nan")),
        "teacher_marginal_entropy": lines[-1].get("teacher_marginal_entropy", float("nan")),
    }


def per_mpp_rows(run: dict) -> tuple[list[str], list[list[str]]]:
    """(mpps, rows): RankMe and mean ± std balanced accuracy of each probe per mpp, as markdown cells."""
    mpps = sorted(run["rankme"]["values"], key=float)
    rows = [["RankMe", *(f"{run['rankme']['values'][m]:.2f}" for m in mpps)]]
    for probe, result in run["probes"].items():
        ba = result["summary"]["balanced_accuracy"]
        rows.append([f"{probe} balanced accuracy", *(f"{ba[m]['mean']:.3f} ± {ba[m]['std']:.3f}" for m in mpps)])
    return mpps, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def demo_markdown(cfg: ExperimentConfig, result: dict, out: Path) -> str:
    p, run, train = cfg.pretrain, result["run"], result["training"]
    mpps, rows = per_mpp_rows(run)
    if "untrained" in result:  # the control: the same probes on the weights the run started from
        rows += [[f"untrained: {r[0]}", *r[1:]] for r in per_mpp_rows(result["untrained"])[1]]
    gap_rows = [[name, *(f"{g.get(k, float('nan')):+.3f}" for k in ("0.375", "0.75", "1.5")), f"{g['mean']:+.3f}"]
                for name, g in run["gap"].items() if name == "rankme" or name.endswith("balanced_accuracy")]  # fmt: skip
    stage_rows = [[n, f"{s:.1f}"] for n, s in result["earlier_runs_s"].items()]
    return "\n\n".join(
        [
            "# gapless demo",
            f"What ran: {cfg.slides.count} synthetic slides of {cfg.slides.size_mm[0]:g} x {cfg.slides.size_mm[1]:g} mm "
            f"(classes regular / atypia / lobular; {cfg.slides.base_mpp:g} mpp base), a {p.model.arch} "
            f"(patch {p.model.patch_size}) pretrained with DINOv2 for {train['iterations']} iterations of "
            f"{p.data.batch_size} tiles, sampling **{p.data.sampling.strategy}** on [{p.data.sampling.low:g}, "
            f"{p.data.sampling.high:g}] mpp through the `{p.data.loader}` loader ({train['tiles_read']} tiles read, "
            f"{train['tiles_skipped']} skipped; loss {train['loss_first']:.3f} -> {train['loss_last']:.3f}; teacher "
            f"entropy per sample {train['teacher_entropy']:.2f} vs of the mean {train['teacher_marginal_entropy']:.2f} "
            f"nats, log K = {math.log(p.model.head_prototypes):.2f}); then "
            f"a set of {result['regions']} regions at {len(mpps)} mpps, probes trained on "
            f"{', '.join(f'{m:g}' for m in cfg.eval.train_mpps)} mpp and tested at every mpp over "
            f"{cfg.bench.folds} patient-disjoint folds (RankMe: {run['rankme']['method']}).",
            "## Per magnification (mean ± std over folds)",
            markdown_table(["metric", *(f"{m} mpp" for m in mpps)], rows),
            "## Gap at the intermediate mpps (mean of the neighbours minus the value; positive = dip)",
            markdown_table(["series", "0.375", "0.75", "1.5", "mean"], gap_rows),
            "## Time per stage (seconds, when each stage ran)",
            markdown_table(["stage", "seconds"], stage_rows),
            f"Files: `{out}/demo.json`, `{out}/eval/report.json`, plots `{out}/eval/*.png`, sampling analysis "
            f"`{out}/sampling.png`. A model this small, trained this briefly, says little about magnification: "
            "`gapless reproduce` compares the sampling strategies under one budget.\n",
        ]
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on built-in synthetic data",
        description="Synthetic slides -> index -> short DINOv2 pretraining with continuous sampling through DALI -> "
        "multi-scale evaluation set -> per-mpp RankMe, k-NN and linear probes; tables, plots, JSON, SUMMARY.md.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--preset", choices=("cpu", "gpu"), default="cpu", help="configs/demo_<preset>.yaml")
    p.add_argument("--config", type=Path, help="a demo YAML instead of the preset's")
    p.add_argument("--fresh", action="store_true", help="delete this demo's earlier outputs in --out and start again")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. pretrain.data.sampling.strategy=minmax")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eval.evaluate import evaluate
    from eval.report import print_tables
    from gapless.cli import UserError
    from gapless.cli import main as gapless
    from gapless.console import console, progress, table, write_json

    cfg = load_experiment(args.config or CONFIGS / f"demo_{args.preset}.yaml", args.overrides)
    out: Path = args.out
    stages = Stages(out, cfg, args.fresh, "demo")
    started = time.perf_counter()
    plots = ["--json", str(out / "sampling.json"), "--plot", str(out / "sampling.png")]

    def sampling() -> None:
        if gapless(["sampling", *plots]) != 0:
            raise UserError("the sampling analysis failed (see its message above)")

    stages.run("sampling analysis", sampling)
    stages.run("synthetic slides + index", lambda: make_slides(cfg.slides, out / "slides"))
    index = out / "slides" / "index.h5"
    stages.run("pretraining (DALI)", lambda: pretrain(cfg.pretrain, index, out / "pretrain"))
    stages.run("evaluation set", lambda: make_bench(cfg, index, out / "bench.h5"))
    # The control: the weights the run started from, through the same probes. Pretraining helped only where the
    # trained teacher beats it.
    untrained = out / "untrained" / "backbone.pt"
    stages.run("untrained network", lambda: untrained_backbone(cfg.pretrain, untrained))

    def evaluation() -> None:
        backbones = [str(out / "pretrain" / "backbone.pt"), str(untrained)]
        with progress() as bar:
            evaluate(backbones, out / "bench.h5", out / "eval", cfg.eval,
                     [cfg.pretrain.data.sampling.strategy, "untrained"], progress=bar)  # fmt: skip

    stages.run("features + probes", evaluation)
    report = json.loads((out / "eval" / "report.json").read_text())
    print_tables(report["runs"], console)
    timings = {name: stages.timings.get(name, 0.0) for name in stages.manifest["done"]}
    result = {
        "config": str(out / "config.yaml"),
        "timings_s": timings,
        "earlier_runs_s": stages.manifest["done"],
        "total_s": time.perf_counter() - started,
        "training": training_figures(out / "pretrain"),
        "report": str(out / "eval" / "report.json"),
        "regions": report["regions"],
        "run": report["runs"][0],
        "untrained": report["runs"][1],
    }
    write_json(result, out / "demo.json")
    (out / "SUMMARY.md").write_text(demo_markdown(cfg, result, out))
    console.print(
        table("Demo stages", ["stage", "seconds (this run)"], [*timings.items(), ("total", result["total_s"])])
    )
    console.print(f"results in {out}/: SUMMARY.md, demo.json, eval/report.json, eval/*.png")
    return 0
