"""`gapless demo`: the main job on built-in defaults, from nothing to figures, on any machine.

Stages, each timed and each skipped when a previous run of the same configuration in ``--out`` finished it
(:class:`~gapless.apps.experiment.Stages`): the sampling analysis; synthetic slides and their index; a short DINOv2
pretraining with continuous sampling through the loader ``data.loader`` names (``auto``: DALI with a GPU, the
DataLoader without one); the teacher's export; the multi-scale evaluation set; features, RankMe, k-NN and linear
probes per mpp under the paper's protocol, for the trained teacher and for the untrained network as a control.
Everything lands in ``--out`` (default ``runs/demo``): ``SUMMARY.md``, ``demo.json``, ``eval/`` (``report.json`` and
plots), the run and the slides.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from gapless.apps.experiment import (
    ExperimentConfig,
    Stages,
    load_experiment,
    make_evalset,
    make_slides,
    markdown_table,
    pretrain,
    protocol_words,
    untrained_backbone,
)
from gapless.config import resolve_config_path
from gapless.console import console, progress, table
from gapless.io import write_json, write_text


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
    if run.get("rankme_paper", {}).get("values"):
        rows.append(["RankMe (paper)", *(f"{run['rankme_paper']['values'][m]:.2f}" for m in mpps)])
    for probe, result in run["probes"].items():
        ba = result["summary"]["balanced_accuracy"]
        rows.append([f"{probe} balanced accuracy", *(f"{ba[m]['mean']:.3f} ± {ba[m]['std']:.3f}" for m in mpps)])
    return mpps, rows


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
            f"{protocol_words(result['protocol'])} (RankMe: {run['rankme']['method']}; RankMe (paper): "
            f"{run['rankme_paper']['method']}).",
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


def run_demo(args: argparse.Namespace) -> int:
    from gapless.eval.evaluate import evaluate
    from gapless.eval.report import print_tables
    from gapless.pipeline.sampling.cli import compare_strategies

    cfg = load_experiment(args.config or resolve_config_path(f"demo_{args.preset}"), args.overrides)
    out: Path = args.out
    stages = Stages(out, cfg, args.fresh, "demo")
    started = time.perf_counter()
    stages.run("sampling analysis", lambda: compare_strategies(json_path=out / "sampling.json",
                                                               plot_path=out / "sampling.png"))  # fmt: skip
    stages.run("synthetic slides + index", lambda: make_slides(cfg.slides, out / "slides"))
    index = out / "slides" / "index.h5"
    stages.run("pretraining", lambda: pretrain(cfg.pretrain, index, out / "pretrain"))
    stages.run("evaluation set", lambda: make_evalset(cfg, index, out / "evalset.h5"))
    # The control: the weights the run started from, through the same probes. Pretraining helped only where the
    # trained teacher beats it.
    untrained = out / "untrained" / "backbone.pt"
    stages.run("untrained network", lambda: untrained_backbone(cfg.pretrain, untrained))

    def evaluation() -> None:
        backbones = [str(out / "pretrain" / "backbone.pt"), str(untrained)]
        with progress() as bar:
            evaluate(backbones, out / "evalset.h5", out / "eval", cfg.eval,
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
        "protocol": report["protocol"],
        "run": report["runs"][0],
        "untrained": report["runs"][1],
    }
    write_json(result, out / "demo.json")
    write_text(demo_markdown(cfg, result, out), out / "SUMMARY.md")
    console.print(
        table("Demo stages", ["stage", "seconds (this run)"], [*timings.items(), ("total", result["total_s"])])
    )
    console.print(f"results in {out}/: SUMMARY.md, demo.json, eval/report.json, eval/*.png")
    return 0
