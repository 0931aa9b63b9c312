"""`gapless reproduce`: the paper's comparison of sampling strategies on synthetic slides, at a chosen budget.

The same model is trained under the same budget (``configs/reproduce_<budget>.yaml``) once per strategy and seed on
one set of synthetic slides, and each teacher is evaluated per mpp on one multi-scale set over patient-disjoint
folds with the evaluation's default protocol. Strategies: DU, CU, CU-MAXAVG, CU-MINMAX, ``fixed`` (the config's
``fixed_mpp``) and ``fixed_<mpp>`` (one fixed mpp each); the ``full`` budget trains the four continuous and discrete
ones and the fixed baselines at 0.25, 0.5, 1 and 2 mpp, the smaller budgets ``fixed`` in place of the four. The
untrained network (``init``, the weights every run starts from) is evaluated too: the probes train at the four
standard mpps only, so part of any dip at the others is the protocol's own and needs no pretraining.

``--seeds 0,1,2`` repeats every training with those seeds (model initialisation, tiles, masks); the verdict is then
given over seeds as well as per seed (:mod:`gapless.apps.reproduce_report`). ``--gpus N`` trains each run under
torchrun on N GPUs (default: every visible GPU; one process when ``pretrain.device`` is cpu, which refuses more).
Every training resumes from its checkpoints and every finished
stage is reused on a rerun, so a stopped or preempted reproduction continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from gapless.apps import experiment as xp
from gapless.apps.reproduce_report import (
    INTERMEDIATE,
    NEAR_CHANCE,
    fold_values,
    plot_reproduction,
    seed_values,
    strategy_verdict,
    verdicts,
)
from gapless.config import resolve_config_path
from gapless.console import console, progress
from gapless.errors import InputError
from gapless.io import write_json, write_text
from gapless.pipeline.sampling.config import PAPER_STRATEGIES, SamplingConfig
from gapless.pipeline.sampling.magnifications import STANDARD_MPPS, mpp_key

__all__ = ["fold_values", "run_reproduce", "strategy_verdict"]

FULL_STRATEGIES = (*PAPER_STRATEGIES, *(f"fixed_{mpp_key(m)}" for m in STANDARD_MPPS))
# The trainer's rate on one H100 (ViT-S/16, bf16, batch 128, synthetic source; benchmarks/results/RESULTS.md),
# measured on an earlier form of the recipe (before LayerScale, stochastic depth on a batch subset and the prototype
# layer's trained gains): an estimate for the recipe as it is.
H100_TILES_PER_S = 669.0


def default_strategies(budget: str) -> tuple[str, ...]:
    return FULL_STRATEGIES if budget == "full" else xp.REPRODUCE_STRATEGIES


def sampling_for(sampling: SamplingConfig, name: str) -> SamplingConfig:
    """The sampling config of strategy ``name`` (``fixed_<mpp>``: fixed at that mpp)."""
    if name.startswith("fixed_"):
        try:
            mpp = float(name[len("fixed_") :])
        except ValueError:
            mpp = math.nan
        if not mpp > 0:
            raise InputError(f"--strategies: '{name}' needs a positive mpp after 'fixed_' (e.g. fixed_0.5)")
        return dataclasses.replace(sampling, strategy="fixed", fixed_mpp=mpp)
    if name not in xp.REPRODUCE_STRATEGIES:
        choices = ", ".join([*xp.REPRODUCE_STRATEGIES, "fixed_<mpp>"])
        raise InputError(f"--strategies: unknown strategy '{name}'; choose from {choices}")
    return dataclasses.replace(sampling, strategy=name)


def parse_list(text: str | None, flag: str, kind: type) -> list:
    try:
        values = [kind(v.strip()) for v in (text or "").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag}: expected a comma-separated list, got '{text}'") from None
    if text is not None and not values:
        raise InputError(f"{flag}: empty list")
    return values


def run_name(name: str, seed: int, base_seed: int) -> str:
    return name if seed == base_seed else f"{name}-seed{seed}"


def estimate_gpu_hours(cfg, runs: int, gpus: int) -> str | None:
    """GPU-hours of the training from the H100 rate (an estimate: measured on an earlier form of the recipe), for the
    model that rate was measured on."""
    p = cfg.pretrain
    if p.model.arch != "vit_small" or p.model.patch_size != 16:
        return None
    tiles = p.total_iterations * p.data.batch_size * max(gpus, 1)
    hours = runs * tiles / H100_TILES_PER_S / 3600
    return (
        f"{runs} training run(s) of {p.total_iterations:,} iterations x {p.data.batch_size * max(gpus, 1):,} tiles: "
        f"about {hours:.1f} GPU-hours at {H100_TILES_PER_S:.0f} tiles/s per H100 (measured on an earlier form of "
        "the recipe), "
        f"{hours / max(gpus, 1):.1f} h on {max(gpus, 1)} GPU(s), if the loader keeps up"
    )


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_processes(requested: int | None, device: str) -> int:
    """Processes per training run: ``--gpus`` (``requested``), else every visible GPU; one on the CPU (``device``
    cpu), where more would split the same cores and change the global batch and the lr with them."""
    if requested is not None and requested < 0:
        raise InputError(f"--gpus must be >= 0, got {requested}")
    if device != "cpu":
        return requested if requested is not None else visible_gpus()
    if requested is not None and requested > 1:
        raise InputError(f"--gpus {requested}: pretrain.device is cpu, which trains in one process; drop --gpus or "
                         "set pretrain.device=cuda")  # fmt: skip
    return 1 if requested is None else requested


def run_reproduce(args: argparse.Namespace) -> int:
    from gapless.eval.config import protocol_settings
    from gapless.eval.evaluate import evaluate_features
    from gapless.eval.features import FeatureFile, featurise_checkpoint
    from gapless.eval.report import plot_gaps, plot_series, print_tables
    from gapless.eval.sets.file import EvalSet

    names = parse_list(getattr(args, "strategies", None), "--strategies", str) or list(default_strategies(args.budget))
    cfg = xp.load_experiment(resolve_config_path(f"reproduce_{args.budget}"), args.overrides)
    samplings = {n: sampling_for(cfg.pretrain.data.sampling, n) for n in names}
    base_seed = cfg.pretrain.seed
    seeds = parse_list(getattr(args, "seeds", None), "--seeds", int) or [base_seed]
    gpus = training_processes(getattr(args, "gpus", None), cfg.pretrain.device)
    out: Path = args.out
    stages = xp.Stages(out, cfg, args.fresh, f"reproduce-{args.budget}")
    started = time.perf_counter()
    estimate = estimate_gpu_hours(cfg, len(names) * len(seeds), gpus)
    if estimate:
        console.print(f"[bold]estimate:[/] {estimate}", highlight=False, soft_wrap=True)
    index = out / "slides" / "index.h5"
    stages.run("synthetic slides + index", lambda: xp.make_slides(cfg.slides, out / "slides"))
    stages.run("evaluation set", lambda: xp.make_evalset(cfg, index, out / "evalset.h5"))
    evalset = EvalSet.load(out / "evalset.h5")
    runs_by_seed: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        data = dataclasses.replace(cfg.pretrain.data, seed=seed)
        seeded = dataclasses.replace(cfg.pretrain, seed=seed, data=data)
        init = run_name("init", seed, base_seed)
        stages.run(init if init != "init" else "untrained network",
                   lambda c=seeded, n=init: xp.untrained_backbone(c, out / "pretrain" / n / "backbone.pt"))  # fmt: skip
        for name, sampling in samplings.items():
            train_cfg = dataclasses.replace(seeded, data=dataclasses.replace(data, sampling=sampling))
            run = run_name(name, seed, base_seed)
            stages.run(f"train {run}", lambda c=train_cfg, r=run: xp.pretrain(c, index, out / "pretrain" / r, gpus))
        for name in ["init", *samplings]:
            run = run_name(name, seed, base_seed)

            def evaluation(run: str = run) -> None:
                with progress() as bar:
                    path = featurise_checkpoint(out / "pretrain" / run / "backbone.pt", evalset,
                                                out / "features" / f"{run}.h5", batch_size=cfg.eval.batch_size,
                                                device=cfg.eval.device, progress=bar)  # fmt: skip
                    result = evaluate_features(FeatureFile.load(path, evalset), evalset, cfg.eval, run, bar)
                write_json(result, out / "results" / f"{run}.json")

            stages.run(f"evaluate {run}", evaluation)
            runs_by_seed.setdefault(seed, {})[name] = json.loads((out / "results" / f"{run}.json").read_text())
    first = runs_by_seed[seeds[0]]
    print_tables(list(first.values()), console)
    plots = [str(p) for p in plot_series(list(first.values()), out / "plots")]
    plots.append(str(plot_gaps(list(first.values()), out / "plots")))
    judged = verdicts(runs_by_seed, list(cfg.eval.probes))
    for probe, v in judged.items():
        per_strategy = seed_values(runs_by_seed, probe) if len(seeds) > 1 else fold_values_by_strategy(first, probe)
        title = f"{probe} probe, {len(seeds)} seed(s), budget {args.budget}"
        plots.append(str(plot_reproduction(per_strategy, v["main"], out / "plots" / f"reproduce_{probe}.png", title)))
    result = {
        "budget": args.budget,
        "config": str(out / "config.yaml"),
        "strategies": names,
        "seeds": seeds,
        "gpus": gpus,
        "estimate": estimate,
        "regions": len(evalset),
        "chance": 1.0 / len(evalset.classes),
        "mpps": len(evalset.mpps),
        "protocol": protocol_settings(cfg.eval),
        "verdict": {p: v["main"] for p, v in judged.items()},
        "verdict_per_seed": {p: v["per_seed"] for p, v in judged.items()},
        "balanced_accuracy": {
            p: {r["name"]: r["probes"][p]["summary"]["balanced_accuracy"] for r in first.values()}
            for p in cfg.eval.probes
        },
        "stages_s": stages.manifest["done"],
        "total_s_this_run": time.perf_counter() - started,
        "figure": str(out / "plots" / "reproduce_linear.png"),
        "plots": plots,
    }
    write_json(result, out / "reproduce.json")
    write_text(summary_markdown(cfg, result), out / "SUMMARY.md")
    for probe, v in result["verdict"].items():
        console.print(f"[bold]{probe} probe:[/] " + " ".join(v["text"]))
    console.print(f"results in {out}/: SUMMARY.md, reproduce.json, plots/ (figure: {result['figure']})")
    return 0


def fold_values_by_strategy(runs: dict[str, dict], probe: str) -> dict[str, dict[str, list[float]]]:
    return {name: fold_values(run, probe) for name, run in runs.items()}


def summary_markdown(cfg, result: dict) -> str:
    p = cfg.pretrain
    seeds = result["seeds"]
    parts = [
        f"# gapless reproduce (budget {result['budget']})",
        f"Same model and budget for every strategy: {p.model.arch} (patch {p.model.patch_size}), "
        f"{p.total_iterations} iterations of {p.data.batch_size} tiles per process at {p.data.tile_px} px through "
        f"the `{p.data.loader}` loader, {max(result['gpus'], 1)} process(es) per run; {cfg.slides.count} synthetic "
        f"slides of {cfg.slides.size_mm[0]:g} x {cfg.slides.size_mm[1]:g} mm (regular vs atypia differ in nuclei "
        f"only, lobular in architecture only); {result['regions']} regions at {result['mpps']} mpps; probes trained "
        f"on {', '.join(f'{m:g}' for m in cfg.eval.train_mpps)} mpp, tested at every mpp over "
        f"{xp.protocol_words(result['protocol'])}. Strategies: {', '.join(result['strategies'])}; seeds: "
        f"{', '.join(map(str, seeds))}"
        + (f"; fixed = {p.data.sampling.fixed_mpp:g} mpp" if "fixed" in result["strategies"] else "")
        + ".",  # fmt: skip
        f"Figure: `{result['figure']}` (balanced accuracy vs mpp per strategy with ± SE bands, and each strategy's "
        f"gap with ± 2 SE).",
    ]
    if result.get("estimate"):
        parts.append(f"Training budget: {result['estimate']}.")
    for probe, v in result["verdict"].items():
        unit = "over seeds" if v["unit"] == "seeds" else "over folds"
        parts.append(f"## {probe} probe\n\n**Verdict ({unit}).** " + " ".join(v["text"]))
        if len(seeds) > 1:
            per_seed = result["verdict_per_seed"][probe]
            lines = [f"- seed {k}: " + ("DU dips" if s["du_dips"] else "DU does not dip") +
                     f"; effect {'seen' if s['effect'] else 'not seen'}" for k, s in per_seed.items()]  # fmt: skip
            parts.append("Each seed on its own folds:\n\n" + "\n".join(lines))
        table = result["balanced_accuracy"][probe]
        best = max(cell["mean"] for t in table.values() for cell in t.values())
        if best < result["chance"] + NEAR_CHANCE:
            parts.append(
                f"**Caution:** the best balanced accuracy, {best:.3f}, is within {100 * NEAR_CHANCE:g} points of chance "
                f"({result['chance']:.3f}): these features barely tell the classes apart, so gaps of a few points are "
                "noise-level, whatever the standard errors say."
            )
        mpps = sorted(next(iter(table.values())), key=float)
        rows = [[s, *(f"{t[m]['mean']:.3f} ± {t[m]['std']:.3f}" for m in mpps)] for s, t in table.items()]
        parts.append(f"Balanced accuracy, seed {seeds[0]} (mean ± std over folds):\n\n"
                     + xp.markdown_table(["strategy", *mpps], rows))  # fmt: skip
        gap_rows = [[s, *(f"{100 * t['per_mpp'].get(m, math.nan):+.1f}" for m in INTERMEDIATE),
                     f"{100 * t['gap']:+.1f} ± {100 * t['se']:.1f}", "yes" if t["dips"] else "no"]
                    for s, t in v["strategies"].items()]  # fmt: skip
        header = ["strategy", *(f"gap {m}" for m in INTERMEDIATE), "mean ± SE", "dips"]
        parts.append(f"Gaps in balanced-accuracy points (positive = dip; SE {unit}):\n\n"
                     + xp.markdown_table(header, gap_rows))  # fmt: skip
    rows = [[n, f"{s:.1f}"] for n, s in result["stages_s"].items()]
    parts.append("## Time per stage (seconds, when each ran)\n\n" + xp.markdown_table(["stage", "seconds"], rows))
    return "\n\n".join(parts) + "\n"
