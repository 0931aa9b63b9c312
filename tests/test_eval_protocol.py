"""The paper's protocol, checked against an independent computation written the way the paper's code does it.

The reference below follows the public evaluation code step by step (its split over a patient list, its k-NN and
logistic-regression sweeps, its final models fitted on train only, its metrics) using scikit-learn directly; the
project's probes must choose the same k and C in every fold and give the same numbers. RankMe and the tile filter
are checked against direct computations the same way.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from gapless.eval.config import EvalConfig, protocol_settings
from gapless.eval.folds import nested_splits
from gapless.eval.probes import run_probes, summarise
from gapless.eval.rankme import rankme_paper
from gapless.eval.sets.tiles import gaussian_bicubic, halving_steps, multiscale_tiles

TRAIN = ["0.25", "0.5", "1", "2"]
TEST = ["0.25", "0.375", "0.5", "0.75", "1", "1.5", "2"]


def synthetic_problem(seed: int = 0):
    """45 patients of 3 classes, 1-4 regions each (ids unsorted, as a file listing would give them), 16-dim features
    per mpp whose noise grows with the mpp."""
    rng = np.random.default_rng(seed)
    ids = [f"P{n:03d}" for n in rng.permutation(45)]
    patients, labels = [], []
    for i, p in enumerate(ids):
        for _ in range(rng.integers(1, 5)):
            patients.append(p)
            labels.append(i % 3)
    labels, patients = np.array(labels), np.array(patients)
    centres = rng.normal(size=(3, 16))
    features = {m: (centres[labels] + rng.normal(size=(len(labels), 16)) * (0.8 + float(m))).astype(np.float32)
                for m in TEST}  # fmt: skip
    return features, labels, patients


def paper_reference(features, labels, patients, seed: int = 42) -> list[dict]:
    """Per outer fold: the chosen k and C and the test metrics per mpp, computed the way the paper's code does."""
    patient_list, patient_label = [], {}
    for p, y in zip(patients, labels):  # one label per patient: its first region's
        if p not in patient_label:
            patient_label[p] = y
    patient_list = sorted(patient_label)
    patient_labels = [patient_label[p] for p in patient_list]
    folds = []
    for train_val_idx, test_idx in StratifiedKFold(5, shuffle=True, random_state=seed).split(
        patient_list, patient_labels
    ):
        tv_patients = [patient_list[i] for i in train_val_idx]
        tv_labels = [patient_labels[i] for i in train_val_idx]
        inner = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(tv_patients, tv_labels))
        train_p = {tv_patients[i] for i in inner[0][0]}
        val_p = {tv_patients[i] for i in inner[0][1]}
        test_p = {patient_list[i] for i in test_idx}
        rows = {name: np.array([i for i, p in enumerate(patients) if p in part])
                for name, part in (("train", train_p), ("val", val_p), ("test", test_p))}  # fmt: skip
        x_train = np.concatenate([features[m][rows["train"]] for m in TRAIN])
        y_train = np.concatenate([labels[rows["train"]] for _ in TRAIN])
        x_val = np.concatenate([features[m][rows["val"]] for m in TRAIN])
        y_val = np.concatenate([labels[rows["val"]] for _ in TRAIN])

        def metrics(model, rows=rows):
            out = {}
            for m in TEST:
                y, pred = labels[rows["test"]], model.predict(features[m][rows["test"]])
                out[m] = {"accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
                          "macro_f1": f1_score(y, pred, average="macro"),
                          "weighted_f1": f1_score(y, pred, average="weighted")}  # fmt: skip
            return out

        k_results = [(k, balanced_accuracy_score(y_val, KNeighborsClassifier(n_neighbors=k, metric="cosine")
                      .fit(x_train, y_train).predict(x_val))) for k in [1, 3, 5, 10, 20, 40, 80]]  # fmt: skip
        best_k = max(k_results, key=lambda x: x[1])[0]
        knn = KNeighborsClassifier(n_neighbors=best_k, metric="cosine").fit(x_train, y_train)

        def logreg(c):  # the paper's multi_class="multinomial" is lbfgs's only mode in this scikit-learn
            return LogisticRegression(C=c, max_iter=1000, solver="lbfgs", random_state=42, class_weight="balanced")

        c_results = [(c, balanced_accuracy_score(y_val, logreg(c).fit(x_train, y_train).predict(x_val)))
                     for c in np.logspace(-4, 4, 9)]  # fmt: skip
        best_c = max(c_results, key=lambda x: x[1])[0]
        folds.append({"rows": rows, "k": best_k, "knn": metrics(knn), "C": best_c,
                      "linear": metrics(logreg(best_c).fit(x_train, y_train))})  # fmt: skip
    return folds


@pytest.fixture(scope="module")
def problem_and_reference():
    features, labels, patients = synthetic_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # large C: lbfgs stops at max_iter in both computations alike
        return (features, labels, patients), paper_reference(features, labels, patients)


def test_nested_split_is_the_papers(problem_and_reference) -> None:
    (_, labels, patients), reference = problem_and_reference
    splits = nested_splits(labels, patients)
    assert len(splits) == 5
    for split, ref in zip(splits, reference):
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(split, part), ref["rows"][part])
    tested = np.concatenate([s.test for s in splits])
    assert sorted(tested) == list(range(len(labels)))  # every region tested exactly once
    shares = [len(np.unique(patients[s.train])) for s in splits]
    assert all(25 <= n <= 30 for n in shares)  # about 64 % of 45 patients train


def test_probes_choose_the_same_k_and_c_and_give_the_same_numbers(problem_and_reference) -> None:
    (features, labels, patients), reference = problem_and_reference
    cfg = EvalConfig()  # the defaults are the paper's protocol
    assert protocol_settings(cfg)["refit"] is False and protocol_settings(cfg)["split"] == "nested"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_probes(features, labels, nested_splits(labels, patients), cfg, [float(m) for m in TEST])
    assert out["knn"]["chosen"] == [ref["k"] for ref in reference]
    assert out["linear"]["chosen"] == pytest.approx([ref["C"] for ref in reference])
    for probe in ("knn", "linear"):
        for ours, ref in zip(out[probe]["folds"], reference):
            for m in TEST:
                assert ours[m] == pytest.approx(ref[probe][m], abs=1e-12), (probe, m)
        summary = summarise(out[probe])
        for metric in ("balanced_accuracy", "weighted_f1"):
            values = [ref[probe]["1.5"][metric] for ref in reference]
            assert summary[metric]["1.5"]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert summary[metric]["1.5"]["std"] == pytest.approx(np.std(values), abs=1e-12)  # population std


def test_protocol_keys_override_one_by_one() -> None:
    assert protocol_settings(EvalConfig(protocol="gapless")) == {
        "protocol": "gapless", "split": "folds", "refit": True, "f1_labels": "all"}  # fmt: skip
    mixed = protocol_settings(EvalConfig(protocol="paper", refit=True, nested_folds=3))
    assert mixed["split"] == "nested" and mixed["refit"] is True and mixed["nested_folds"] == 3


def test_too_few_patients_are_refused_with_the_class_named() -> None:
    labels = np.array([0] * 10 + [1] * 6)
    patients = np.array([f"p{i}" for i in range(16)])
    with pytest.raises(ValueError, match="class b has 6 patients, and outer fold \\d leaves 4 of them"):
        nested_splits(labels, patients, names=["a", "b"])
    with pytest.raises(ValueError, match="patients per class: b has 3; .* needs more than 5"):
        nested_splits(labels[:13], patients[:13], names=["a", "b"])
    assert len(nested_splits(labels, patients, n_folds=3)) == 3  # fewer folds: the way out


def test_rankme_paper_is_the_papers_formula() -> None:
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(300, 24)) * np.linspace(3, 0.01, 24)).float() + 2.0
    eigenvalues = torch.linalg.eigh(torch.cov(x.T))[0].clamp(min=1e-12)  # the paper's code, in float32
    p = eigenvalues / eigenvalues.sum()
    assert rankme_paper(x.numpy()) == pytest.approx(float((-(p * p.log()).sum()).exp()), rel=1e-4)
    collapsed = np.repeat(np.random.default_rng(4).normal(size=(300, 1)), 24, axis=1)  # one direction
    assert rankme_paper(collapsed) == pytest.approx(1.0, abs=0.01)


def reference_filter(image: np.ndarray, sigma: float) -> np.ndarray:
    """The paper's per-channel uint8 Gaussian written with OpenCV: SciPy's kernel (radius int(4 sigma + 0.5)),
    reflected edges, rows then columns, each pass truncated to uint8 as SciPy's integer output is."""
    import cv2

    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    one = np.ones(1)
    down = cv2.sepFilter2D(image.astype(np.float64), -1, one, kernel, borderType=cv2.BORDER_REFLECT)
    down = np.floor(down + 1e-9).astype(np.uint8)
    return np.floor(cv2.sepFilter2D(down.astype(np.float64), -1, kernel, one, borderType=cv2.BORDER_REFLECT) + 1e-9)


@pytest.mark.parametrize("side", [336, 448, 672, 1344])  # 224 px tiles at 0.375, 0.5, 0.75 and 1.5 mpp from 0.25
def test_paper_filter_is_gaussian_then_bicubic_in_steps_of_at_most_2x(side: int) -> None:
    from PIL import Image

    image = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    steps = halving_steps(side, 224)
    assert steps[-1] == 224 and all(a / b <= 2 for a, b in zip([side, *steps], steps))
    expected = image
    for step in steps:
        filtered = reference_filter(expected, expected.shape[0] / step / 2.5)
        filtered = np.clip(filtered, 0, 255).astype(np.uint8)
        expected = np.asarray(Image.fromarray(filtered).resize((step, step), Image.Resampling.BICUBIC))
    got = gaussian_bicubic(image, 224)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01  # floating-point order only


def test_the_two_filters_differ_most_at_intermediate_factors() -> None:
    region = np.random.default_rng(7).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    mpps = [0.25, 0.375, 0.5]
    paper, area = (multiscale_tiles(region, mpps, 0.25, 224, r) for r in ("paper", "area"))
    np.testing.assert_array_equal(paper[0], area[0])  # 0.25 mpp: no resampling at all
    assert np.abs(paper[1].astype(int) - area[1]).mean() > 1.0  # a 1.5x step: the filters disagree
