"""RankMe, folds, k-NN and linear probes, gaps: checked against known spectra and direct computations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

from gapless.eval.config import EvalConfig
from gapless.eval.folds import assign_folds, fold_splits
from gapless.eval.gaps import gaps
from gapless.eval.probes import knn_predict, linear_model, run_probes, scores, summarise
from gapless.eval.rankme import rankme, rankme_per_mpp


def matrix_with_spectrum(singular_values: np.ndarray, n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, len(singular_values))))
    v, _ = np.linalg.qr(rng.normal(size=(d, len(singular_values))))
    return (u * singular_values) @ v.T


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_rankme_of_equal_spectrum_is_the_rank(rank: int) -> None:
    x = matrix_with_spectrum(np.full(rank, 3.0), n=200, d=40)
    assert rankme(x) == pytest.approx(rank, rel=1e-3)


def test_rankme_matches_the_formula_on_a_known_spectrum() -> None:
    sigma = np.array([10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    x = matrix_with_spectrum(sigma, n=300, d=20, seed=1).astype(np.float32)
    p = np.concatenate([sigma / sigma.sum(), np.zeros(20 - len(sigma))]) + 1e-7
    expected = np.exp(-(p * np.log(p)).sum())
    assert rankme(x) == pytest.approx(expected, rel=1e-4)
    assert 1.0 < rankme(x) < len(sigma)


def test_rankme_covariance_variant_uses_centred_eigenvalues() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 8)) * np.array([5, 4, 3, 2, 1, 1, 0.5, 0.1]) + 7.0  # offset: centring matters
    eig = np.linalg.eigvalsh(np.cov(x.T))
    p = eig / eig.sum() + 1e-7
    assert rankme(x, method="cov") == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-6)
    assert abs(rankme(x, method="svd") - rankme(x, method="cov")) > 0.1  # the variants are not interchangeable


def test_rankme_warns_when_samples_are_fewer_than_dimensions() -> None:
    x = np.random.default_rng(3).normal(size=(10, 50))
    with pytest.warns(UserWarning, match="fewer samples than dimensions"):
        value = rankme(x)
    assert value <= 10 + 1e-6


def test_rankme_per_mpp_uses_the_same_number_of_samples() -> None:
    rng = np.random.default_rng(4)
    feats = {"0.25": rng.normal(size=(300, 16)), "0.5": rng.normal(size=(120, 16))}
    out = rankme_per_mpp(feats)
    assert out["n_samples"] == 120 and out["warning"] == ""
    assert set(out["values"]) == {"0.25", "0.5"} and "singular values" in out["method"]
    same = rankme_per_mpp({"a": feats["0.25"], "b": feats["0.25"].copy()}, n_samples=50)
    assert same["values"]["a"] == same["values"]["b"]  # the same rows at every mpp


def grouped_labels(n_patients: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    patient_class = rng.integers(0, 3, n_patients)
    patients, labels = [], []
    for p in range(n_patients):
        for _ in range(rng.integers(1, 6)):
            patients.append(f"p{p}")
            labels.append(patient_class[p])
    return np.array(labels), np.array(patients)


def test_folds_are_patient_disjoint_and_stratified() -> None:
    labels, patients = grouped_labels()
    folds = assign_folds(labels, patients, n_folds=5, seed=0)
    for p in np.unique(patients):
        assert len(np.unique(folds[patients == p])) == 1
    overall = np.bincount(labels, minlength=3) / len(labels)
    for f in range(5):
        share = np.bincount(labels[folds == f], minlength=3) / (folds == f).sum()
        assert np.abs(share - overall).max() < 0.2
    for split in fold_splits(folds):
        parts = [set(patients[split.train]), set(patients[split.val]), set(patients[split.test])]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(split.train) + len(split.val) + len(split.test) == len(labels)
    with pytest.raises(ValueError, match="patients"):
        assign_folds(labels[:3], patients[:3], n_folds=5)


def test_knn_matches_sklearn_majority_vote() -> None:
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(5)
    train, test = rng.normal(size=(200, 12)), rng.normal(size=(60, 12))
    y = rng.integers(0, 4, 200)
    ks = [1, 3, 5, 10, 80, 500]
    preds = knn_predict(train, y, test, ks, 4, chunk=16)
    for k in ks:
        ref = KNeighborsClassifier(n_neighbors=min(k, 200), metric="cosine", algorithm="brute").fit(train, y)
        np.testing.assert_array_equal(preds[k], ref.predict(test))


def test_knn_weighted_vote_matches_a_loop() -> None:
    rng = np.random.default_rng(6)
    train, test = rng.normal(size=(50, 6)), rng.normal(size=(10, 6))
    y = rng.integers(0, 3, 50)
    pred = knn_predict(train, y, test, [7], 3, vote="weighted", temperature=0.1)[7]
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    for i, q in enumerate(test / np.linalg.norm(test, axis=1, keepdims=True)):
        sims = tn @ q
        top = np.argsort(-sims)[:7]
        votes = np.bincount(y[top], weights=np.exp(sims[top] / 0.1), minlength=3)
        assert pred[i] == votes.argmax()


def test_logistic_probe_solves_the_class_weighted_multinomial_objective() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(90, 4))
    y = np.r_[np.zeros(50, int), np.ones(25, int), np.full(15, 2)]
    x += y[:, None] * 0.8
    c = 0.5
    model = linear_model(c, 1000, 0).fit(x, y)
    weights = len(y) / (3 * np.bincount(y))[y]  # class_weight="balanced"

    def objective(theta: np.ndarray) -> float:
        w, b = theta[:12].reshape(3, 4), theta[12:]
        logits = x @ w.T + b
        logp = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return 0.5 * (w**2).sum() - c * (weights * logp[np.arange(len(y)), y]).sum()

    direct = minimize(objective, np.zeros(15), method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    w, b = direct.x[:12].reshape(3, 4), direct.x[12:]
    logits = x @ w.T + b
    probs = np.exp(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(x), probs, atol=2e-3)


def probe_problem(seed: int = 8):
    labels, patients = grouped_labels(30, seed)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 1.5
    feats = {}
    for i, m in enumerate(["0.25", "0.5", "1", "2"]):
        feats[m] = (centres[labels] + rng.normal(size=(len(labels), 16)) * (1 + 0.3 * i)).astype(np.float32)
    return feats, labels, assign_folds(labels, patients, 5, seed)


def test_probes_pick_hyperparameters_on_validation_and_score_tests_directly() -> None:
    from sklearn.linear_model import LogisticRegression

    feats, labels, folds = probe_problem()
    cfg = EvalConfig(protocol="gapless", train_mpps=[0.25, 0.5, 1.0, 2.0], knn_ks=[1, 5, 20], linear_cs=[0.01, 1.0])
    out = run_probes(feats, labels, fold_splits(folds), cfg, [0.25, 0.5, 1.0, 2.0])
    split = fold_splits(folds)[0]
    pool = lambda rows: (np.concatenate([feats[m][rows] for m in feats]), np.tile(labels[rows], 4))  # noqa: E731
    (tx, ty), (vx, vy) = pool(split.train), pool(split.val)
    val = {k: scores(vy, knn_predict(tx, ty, vx, [k], 3)[k], 3)["balanced_accuracy"] for k in cfg.knn_ks}
    best_k = max(cfg.knn_ks, key=lambda k: (val[k], -k))
    assert out["knn"]["chosen"][0] == best_k
    fx, fy = pool(np.concatenate([split.train, split.val]))
    direct = scores(labels[split.test], knn_predict(fx, fy, feats["1"][split.test], [best_k], 3)[best_k], 3)
    assert out["knn"]["folds"][0]["1"] == direct

    best_c = out["linear"]["chosen"][0]
    assert best_c in cfg.linear_cs
    ref = LogisticRegression(C=best_c, class_weight="balanced", max_iter=1000).fit(fx, fy)
    direct = scores(labels[split.test], ref.predict(feats["0.5"][split.test]), 3)
    assert out["linear"]["folds"][0]["0.5"]["balanced_accuracy"] == pytest.approx(direct["balanced_accuracy"], abs=0.02)

    summary = summarise(out["linear"])
    values = [f["2"]["accuracy"] for f in out["linear"]["folds"]]
    assert summary["accuracy"]["2"]["mean"] == pytest.approx(np.mean(values))
    assert summary["accuracy"]["2"]["std"] == pytest.approx(np.std(values))
    assert summary["balanced_accuracy"]["0.25"]["mean"] > 0.6  # separable classes are learnt


def test_gap_is_the_drop_below_the_neighbours_mean() -> None:
    values = {"0.25": 0.8, "0.375": 0.7, "0.5": 0.9, "0.75": 0.85, "1": 0.8, "1.5": 0.9, "2": 0.7}
    drops = gaps(values)
    assert drops == pytest.approx({"0.375": 0.15, "0.75": 0.0, "1.5": -0.15})


def test_scores_are_the_textbook_definitions() -> None:
    y, p = np.array([0, 0, 0, 0, 1, 1, 2, 2]), np.array([0, 0, 0, 1, 1, 0, 2, 2])
    s = scores(y, p, 3)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    f1 = [2 * 3 / (2 * 3 + 1 + 1), 2 * 1 / (2 + 1 + 1), 1.0]
    assert s["macro_f1"] == pytest.approx(np.mean(f1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores(y, np.zeros_like(y), 3)  # a class never predicted: no warning noise


@pytest.mark.parametrize("seed", range(6))
def test_scores_equal_scikit_learns_with_absent_classes(seed: int) -> None:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    y = rng.choice([0, 2, 3], size=40)  # class 1 never in the truth, class 4 only ever predicted
    p = rng.choice([0, 1, 2, 4], size=40) if seed % 2 else rng.choice([0, 2, 3], size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "balanced_accuracy": balanced_accuracy_score(y, p),
            "accuracy": accuracy_score(y, p),
            "weighted_f1": f1_score(y, p, average="weighted"),
        }
        macro_present, macro_all = f1_score(y, p, average="macro"), f1_score(y, p, labels=range(5), average="macro")
    assert scores(y, p, 5, "present") == pytest.approx({**expected, "macro_f1": macro_present}, abs=1e-12)
    assert scores(y, p, 5, "all") == pytest.approx({**expected, "macro_f1": macro_all}, abs=1e-12)


def test_warm_started_sweep_runs_the_same_protocol() -> None:
    feats, labels, folds = probe_problem(9)
    cold = EvalConfig(probes=["linear"], linear_cs=[0.01, 1.0])
    warm = EvalConfig(probes=["linear"], linear_cs=[0.01, 1.0], linear_warm_start=True)
    a = summarise(run_probes(feats, labels, fold_splits(folds), cold, [1.0])["linear"])
    b = summarise(run_probes(feats, labels, fold_splits(folds), warm, [1.0])["linear"])
    assert abs(a["balanced_accuracy"]["1"]["mean"] - b["balanced_accuracy"]["1"]["mean"]) < 0.1


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")  # the point of this test
def test_folds_whose_training_split_holds_one_class_are_refused():
    from gapless.eval.folds import assign_folds

    # Class 1 has one patient: the folds that test or validate that patient would train on class 0 alone.
    labels = np.array([0] * 5 + [1])
    patients = np.array(["a", "b", "c", "d", "e", "f"])
    with pytest.raises(ValueError, match="single class"):
        assign_folds(labels, patients, n_folds=3, seed=0)
