"""Configuration schema of the evaluation: the protocol, which mpps, how RankMe is computed, the probe grids.

Two protocols, chosen with ``protocol`` and adjustable key by key:

- ``paper`` (the default) follows the paper's public evaluation code: a nested split over the sorted patient ids
  (one label per patient; outer ``StratifiedKFold(nested_folds, shuffle, split_seed)``, the first split of an inner
  one over the outer-training patients gives train and validation, about 64/16/20), the final probe fitted on train
  only, macro-F1 over the classes present in a fold (scikit-learn's default).
- ``gapless``: the set's stored patient-disjoint folds (validation is the next fold, 60/20/20), the chosen probe
  refitted on train + validation, macro-F1 over every class.

``split``, ``refit`` and ``f1_labels`` left unset (null) take the protocol's value; set, they override it.
:func:`protocol_settings` gives the values in force. Probes train on embeddings pooled from the four standard mpps
and are tested at all seven; k and C are chosen on validation balanced accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gapless.pipeline.sampling.magnifications import STANDARD_MPPS

KNN_KS = (1, 3, 5, 10, 20, 40, 80)
# The paper's grid, logspace(-4, 4, 9). A full sweep is slow on a CPU; `linear_cs` takes any list.
LINEAR_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


PROTOCOLS = {
    "paper": {"split": "nested", "refit": False, "f1_labels": "present"},
    "gapless": {"split": "folds", "refit": True, "f1_labels": "all"},
}


@dataclass
class EvalConfig:
    """Evaluation settings. ``test_mpps`` empty means every mpp the set holds."""

    protocol: str = "paper"  # paper | gapless: the defaults of split, refit and f1_labels
    split: str | None = None  # nested (outer/inner StratifiedKFold over patients) | folds (the set's folds)
    refit: bool | None = None  # refit the chosen k / C on train + validation before testing
    f1_labels: str | None = None  # present (classes in the fold's truth or predictions) | all (every class)
    nested_folds: int = 5  # outer and inner folds of the nested split
    split_seed: int = 42  # random_state of the nested split's StratifiedKFolds
    train_mpps: list[float] = field(default_factory=lambda: list(STANDARD_MPPS))
    test_mpps: list[float] = field(default_factory=list)
    knn_ks: list[int] = field(default_factory=lambda: list(KNN_KS))
    knn_vote: str = "majority"  # majority (sklearn's uniform weights) | weighted (DINO: exp(cos / 0.07))
    knn_temperature: float = 0.07
    linear_cs: list[float] = field(default_factory=lambda: list(LINEAR_CS))
    linear_max_iter: int = 1000
    linear_warm_start: bool = False  # True: each C starts from the previous C's weights (faster, see eval.probes)
    rankme_method: str = "svd"  # svd (singular values of the N x D matrix) | cov (covariance eigenvalues)
    rankme_eps: float = 1e-7
    rankme_samples: int = 0  # 0: the smallest count over mpps (the same N at every mpp)
    probes: list[str] = field(default_factory=lambda: ["knn", "linear"])
    seed: int = 0
    batch_size: int = 64  # feature extraction
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol: '{self.protocol}' is not one of {', '.join(PROTOCOLS)}")
        if self.split not in (None, "nested", "folds"):
            raise ValueError(f"split: '{self.split}' is not one of nested, folds")
        if self.f1_labels not in (None, "present", "all"):
            raise ValueError(f"f1_labels: '{self.f1_labels}' is not one of present, all")
        if self.nested_folds < 2:
            raise ValueError(f"nested_folds: needs at least 2, got {self.nested_folds}")
        if self.knn_vote not in ("majority", "weighted"):
            raise ValueError(f"knn_vote: '{self.knn_vote}' is not one of majority, weighted")
        if self.rankme_method not in ("svd", "cov"):
            raise ValueError(f"rankme_method: '{self.rankme_method}' is not one of svd, cov")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: '{self.device}' is not one of auto, cpu, cuda")
        unknown = set(self.probes) - {"knn", "linear"}
        if unknown:
            raise ValueError(f"probes: unknown probe(s) {sorted(unknown)} (choose from knn, linear)")
        if not self.train_mpps:
            raise ValueError("train_mpps: needs at least one mpp")
        if any(k < 1 for k in self.knn_ks) or not self.knn_ks:
            raise ValueError(f"knn_ks: every k must be >= 1, got {self.knn_ks}")
        if any(c <= 0 for c in self.linear_cs) or not self.linear_cs:
            raise ValueError(f"linear_cs: every C must be > 0, got {self.linear_cs}")
        if self.rankme_eps < 0 or self.rankme_samples < 0 or self.batch_size < 1 or self.linear_max_iter < 1:
            raise ValueError("rankme_eps, rankme_samples must be >= 0; batch_size, linear_max_iter >= 1")


def protocol_settings(cfg: EvalConfig) -> dict:
    """The split, refit and F1 settings in force: each one set in ``cfg``, else the protocol's."""
    chosen = {key: getattr(cfg, key) for key in PROTOCOLS[cfg.protocol]}
    settings = {k: default if chosen[k] is None else chosen[k] for k, default in PROTOCOLS[cfg.protocol].items()}
    if settings["split"] == "nested":
        settings.update(nested_folds=cfg.nested_folds, split_seed=cfg.split_seed)
    return {"protocol": cfg.protocol, **settings}
