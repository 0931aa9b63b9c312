"""The verdicts of a run, computed from its own measurements: what continuous sampling costs, how the loaders
compare with each other and with the floor, and whether the loader keeps up with the trainer. Arithmetic on the
throughput records (tiles/s and CPU ms per tile per window) and the stage table.

Cost of strategy S relative to DU in the same loader: ``cost = 1 - ratio`` (positive: S is slower). With one
measurement pass, ``ratio = median(S) / median(DU)`` and its spread comes from the repeated windows,
conservatively: the ratio can be as low as ``min(S) / max(DU)`` and as high as ``max(S) / min(DU)``. With several
passes (strategies measured close together in time, pass after pass), each pass gives its own ratio
``median(S_p) / median(DU_p)``; ``ratio`` is their median and the interval their min and max, so load that drifts
between passes does not count as a difference between strategies. ``± spread`` is half the interval.
"CU ≥ 0.98× DU" holds when the ratio is at least 0.98.

Against the floor (the bare plan + read + resize loop, :mod:`gapless.benchmarks.floor`): a loader's median CPU ms per
tile (its process and workers) over the floor's for the same strategy, and, for multi-crop, over the floor plus the
stage table's augmentation time, so that what remains is the loader's own overhead. Cores per GPU: the trainer's
consumption rate times the loader's CPU seconds per tile.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from gapless.benchmarks.config import REFERENCE
from gapless.pipeline.sampling.config import STRATEGY_LABELS

TARGET_RATIO = 0.98  # the target: CU throughput >= 0.98x DU in the same pipeline
TARGET_SPEEDUP = 3.0  # DALI on a GPU >= 3x the DataLoader baselines
TARGET_FLOOR = 1.15  # a loader's CPU time per tile within 1.15x of the floor (+ augmentation, for multi-crop)


@dataclass(frozen=True)
class Cost:
    """Strategy vs reference (DU) in one loader."""

    loader: str
    strategy: str
    reference: str
    metric: str  # "throughput" (tiles/s, wall clock) or "cpu" (tiles per CPU-second of process + workers)
    ratio: float  # median(strategy) / median(reference)
    ratio_low: float
    ratio_high: float
    cost_pct: float  # 100 (1 - ratio)
    spread_pct: float  # 100 (ratio_high - ratio_low) / 2
    meets_target: bool
    passes: int = 1  # > 1: ratio and interval from per-pass ratios

    def sentence(self, labels: dict[str, str] | None = None) -> str:
        name = (labels or {}).get(self.strategy, self.strategy)
        ref = (labels or {}).get(self.reference, self.reference)
        word = "costs" if self.cost_pct >= 0 else "gains"
        what = "throughput" if self.metric == "throughput" else "tiles per CPU-second"
        return (
            f"{self.loader}: {name} {word} {abs(self.cost_pct):.1f} % (± {self.spread_pct:.1f}) {what} relative to "
            f"{ref} ({self.ratio:.3f}×, {self._basis()}; target ≥ {TARGET_RATIO}×: "
            f"{'met' if self.meets_target else 'not met'})"
        )

    def _basis(self) -> str:
        return f"median of {self.passes} paired passes" if self.passes > 1 else "medians of the windows"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost(
    loader: str,
    strategy: str,
    rates: list[float],
    reference_rates: list[float],
    reference: str = "du",
    metric: str = "throughput",
    pass_rates: list[list[float]] | None = None,
    pass_reference_rates: list[list[float]] | None = None,
) -> Cost:
    """The :class:`Cost` of ``rates`` (tiles/s per window) relative to ``reference_rates``; with the windows of
    each pass given too (same number of passes for both), from the per-pass ratios (see the module doc)."""
    if not rates or not reference_rates:
        raise ValueError("cost needs at least one measurement of each strategy")
    passes = 1
    if pass_rates and pass_reference_rates and len(pass_rates) == len(pass_reference_rates) > 1:
        per_pass = [statistics.median(a) / statistics.median(b)
                    for a, b in zip(pass_rates, pass_reference_rates) if a and b]  # fmt: skip
        passes = len(per_pass)
    if passes > 1:
        ratio, low, high = statistics.median(per_pass), min(per_pass), max(per_pass)
    else:
        ratio = statistics.median(rates) / statistics.median(reference_rates)
        low = min(rates) / max(reference_rates)
        high = max(rates) / min(reference_rates)
    return Cost(
        loader=loader,
        strategy=strategy,
        reference=reference,
        metric=metric,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        cost_pct=100.0 * (1.0 - ratio),
        spread_pct=100.0 * (high - low) / 2.0,
        meets_target=ratio >= TARGET_RATIO,
        passes=passes,
    )


def strategy_costs(results: list[dict[str, Any]], reference: str = "du", metric: str = "throughput") -> list[Cost]:
    """Every (loader, strategy != reference) cost among throughput results (dicts with loader, strategy, rates
    and cpu_ms_per_tile). ``metric="cpu"`` compares tiles per CPU-second (1000 / cpu_ms_per_tile) instead."""

    def values(r: dict[str, Any]) -> list[float]:
        if metric == "cpu":
            return [1e3 / v for v in r.get("cpu_ms_per_tile", []) if v > 0]
        return list(r.get("rates", []))

    def per_pass(r: dict[str, Any]) -> list[list[float]] | None:
        if metric == "cpu":
            passes = r.get("pass_cpu_ms_per_tile")
            return [[1e3 / v for v in p if v > 0] for p in passes] if passes else None
        return r.get("pass_rates")

    by_key = {(series(r), r["strategy"]): r for r in results if r["loader"] != "synthetic"}
    costs = []
    for (loader, strategy), r in by_key.items():
        ref = by_key.get((loader, reference))
        if strategy != reference and ref and values(r) and values(ref):
            costs.append(cost(loader, strategy, values(r), values(ref), reference, metric, per_pass(r), per_pass(ref)))
    return costs


def series_name(loader: str, mode: str = "multicrop") -> str:
    """A (loader, mode) series as tables and verdicts name it: the loader, marked "(plain)" for plain tiles."""
    return loader if mode == "multicrop" or loader == REFERENCE else f"{loader} (plain)"


def series(record: dict[str, Any]) -> str:
    return series_name(record["loader"], record.get("mode", "multicrop"))


def speedups(results: list[dict[str, Any]], fast: str = "dali", slow: str = "baseline") -> dict[str, float]:
    """median(fast) / median(slow) per strategy measured for both series (see :func:`series_name`)."""
    med = {(series(r), r["strategy"]): statistics.median(r["rates"]) for r in results if r.get("rates")}
    return {s: med[(fast, s)] / med[(slow, s)] for (loader, s) in med if loader == fast and (slow, s) in med}


def keeps_up(loader_tiles_per_s: float, trainer_tiles_per_s: float) -> dict[str, Any]:
    """Whether a loader delivers tiles at least as fast as the trainer consumes them, and by what factor."""
    ratio = loader_tiles_per_s / trainer_tiles_per_s if trainer_tiles_per_s > 0 else float("inf")
    return {"loader_tiles_per_s": loader_tiles_per_s, "trainer_tiles_per_s": trainer_tiles_per_s,
            "ratio": ratio, "keeps_up": ratio >= 1.0}  # fmt: skip


def stage_costs(stages: dict[str, Any], reference: str = "du") -> list[dict[str, Any]]:
    """CU-vs-DU from the interleaved stage timings: per-worker throughput ratio (plan + read + resize + augment
    per tile, paired, plus each strategy's mean plan and transfer), 5-95 % bootstrap interval over tiles."""
    from gapless.benchmarks.stages import paired_ratio

    ref = stages.get(reference)
    out = []
    for strategy, s in stages.items():
        if strategy == reference or ref is None:
            continue
        extra = s["ms_per_tile"]["plan"] + s["ms_per_tile"]["transfer"]
        extra_ref = ref["ms_per_tile"]["plan"] + ref["ms_per_tile"]["transfer"]
        # Plan and transfer do not depend on the decoded pixels; their mean over both strategies is shared.
        r = paired_ratio(s["tile_ms"], ref["tile_ms"], fixed_ms=(extra + extra_ref) / 2)
        out.append({"strategy": strategy, "reference": reference, **r,
                    "cost_pct": 100 * (1 - r["ratio"]), "spread_pct": 100 * (r["high"] - r["low"]) / 2,
                    "read_resize_ms": s["ms_per_tile"]["read"] + s["ms_per_tile"]["resize"],
                    "reference_read_resize_ms": ref["ms_per_tile"]["read"] + ref["ms_per_tile"]["resize"]})  # fmt: skip
    return out


def floor_figures(results: list[dict[str, Any]], stages: dict[str, Any], trainer_tiles_per_s: float | None) -> None:
    """Add to every loader record its CPU time against the floor and the cores one GPU needs (see the module doc):
    ``floor_cpu_ms``, ``augment_ms`` (multi-crop: the stage table's augmentation, else 0), ``cpu_vs_floor``
    (CPU ms / (floor + augment)) and ``cores_at_trainer_rate``. Figures that were not measured are None."""
    floor = {r["strategy"]: statistics.median(r["cpu_ms_per_tile"])
             for r in results if r["loader"] == REFERENCE and r.get("cpu_ms_per_tile")}  # fmt: skip
    for r in results:
        cpu = statistics.median(r["cpu_ms_per_tile"]) if r.get("cpu_ms_per_tile") else None
        r["cores_at_trainer_rate"] = trainer_tiles_per_s * cpu / 1e3 if trainer_tiles_per_s and cpu else None
        if r["loader"] in (REFERENCE, "synthetic"):
            continue
        augment = 0.0
        if r.get("mode", "multicrop") == "multicrop":
            augment = (stages.get(r["strategy"]) or {}).get("ms_per_tile", {}).get("augment")
        base = floor.get(r["strategy"])
        r["floor_cpu_ms"], r["augment_ms"] = base, augment
        r["cpu_vs_floor"] = cpu / (base + augment) if cpu and base and augment is not None else None


def floor_sentences(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if r.get("cpu_vs_floor") is None:
            continue
        plus = " + augmentation" if r.get("mode", "multicrop") == "multicrop" else ""
        met = "met" if r["cpu_vs_floor"] <= TARGET_FLOOR else "not met"
        out.append(f"{series(r)} ×{r['workers']} under {STRATEGY_LABELS.get(r['strategy'], r['strategy'])}: "
                   f"{r['cpu_vs_floor']:.2f}× the floor's CPU time per tile{plus} "
                   f"(target ≤ {TARGET_FLOOR}×: {met})")  # fmt: skip
    return out


def loader_verdict(main: list[dict[str, Any]], trainer: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    costs = strategy_costs(main)
    cpu_costs = strategy_costs(main, metric="cpu")
    sentences = [c.sentence(STRATEGY_LABELS) for c in [*costs, *cpu_costs]]
    sentences += floor_sentences(main)
    per_stage = stage_costs(stages)
    for c in per_stage:
        sentences.append(
            f"stages (one worker, tiles interleaved): {STRATEGY_LABELS[c['strategy']]} costs {c['cost_pct']:.1f} % "
            f"(± {c['spread_pct']:.1f}) relative to DU; read + resize {c['read_resize_ms']:.2f} vs "
            f"{c['reference_read_resize_ms']:.2f} ms per tile"
        )
    speed = speedups(main)
    gpudecode = speedups(main, fast="dali-gpudecode")
    plain = speedups(main, fast=series_name("dali", "plain"), slow=series_name("baseline", "plain"))
    for fast, factors in (("dali", speed), ("dali-gpudecode", gpudecode), (series_name("dali", "plain"), plain)):
        for strategy, factor in factors.items():
            sentences.append(f"{fast} is {factor:.2f}× the DataLoader baseline under {STRATEGY_LABELS[strategy]}")
    keep = {}
    if trainer.get("tiles_per_s"):
        for r in main:  # the trainer consumes multi-crop tiles
            if r["rates"] and r["loader"] not in ("synthetic", REFERENCE) and r.get("mode", "multicrop") == "multicrop":
                keep[f"{r['loader']}/{r['strategy']}"] = {
                    **keeps_up(r["median"], trainer["tiles_per_s"]),
                    "cores_at_trainer_rate": r.get("cores_at_trainer_rate"),
                }
        for name, k in keep.items():
            if k["cores_at_trainer_rate"] is not None:
                sentences.append(f"{name}: one GPU consuming {k['trainer_tiles_per_s']:.1f} tiles/s needs "
                                 f"{k['cores_at_trainer_rate']:.2f} CPU cores of this loader")  # fmt: skip
        slowest = min(keep.items(), key=lambda kv: kv[1]["ratio"], default=None)
        if slowest:
            name, k = slowest
            sentences.append(
                f"trainer consumes {k['trainer_tiles_per_s']:.1f} tiles/s; slowest loader ({name}) delivers "
                f"{k['ratio']:.2f}× that: {'keeps up' if k['keeps_up'] else 'the trainer waits for data'}"
            )
    return {"costs": [c.as_dict() for c in costs], "cpu_costs": [c.as_dict() for c in cpu_costs],
            "stage_costs": per_stage,
            "speedup_dali_vs_baseline": speed, "speedup_dali_gpudecode_vs_baseline": gpudecode,
            "speedup_dali_vs_baseline_plain": plain,
            "keeps_up": keep, "sentences": sentences}  # fmt: skip
