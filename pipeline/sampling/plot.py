"""PNG figure of sampling strategies: the density p(x) and the accumulated signal S(y)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gapless.io import save_figure
from gapless.pipeline.sampling.magnifications import EVAL_MPPS, INTERMEDIATE_MPPS


def plot_strategies(results: dict[str, dict[str, Any]], out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, (ax_p, ax_s) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, r) in enumerate(results.items()):
        color = f"C{i}"
        if any(r["density"]):
            ax_p.plot(r["grid"], r["density"], color=color, label=name)
        if r["points"]:
            # Atoms drawn as stems, heights in probability (right axis would mix units; the label says it).
            ax_p.vlines(
                r["points"],
                0,
                r["weights"],
                color=color,
                lw=3,
                alpha=0.7,
                label=f"{name} (point masses)" if not any(r["density"]) else f"{name} atoms",
            )
        ax_s.plot(r["grid"], r["signal"], color=color, label=name)
    for ax in (ax_p, ax_s):
        ax.set_xscale("log")
        ax.set_xticks(EVAL_MPPS)
        ax.set_xticklabels([f"{m:g}" for m in EVAL_MPPS])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mpp")
        ax.grid(alpha=0.3)
    for m in INTERMEDIATE_MPPS:
        ax_s.axvline(m, color="grey", ls=":", lw=1)
    ax_p.set_ylabel("density p(x)  /  point mass")
    ax_p.set_title("sampling distribution")
    ax_s.set_ylabel("S(y) = ∫ p(x) K(x, y) dx")
    ax_s.set_title("accumulated signal at target mpp (dotted: intermediate mpps)")
    ax_p.legend(fontsize=8)
    ax_s.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out, dpi=110)
    plt.close(fig)
    return out
