"""RankMe (Garrido et al., ICML 2023): the effective rank of a matrix of embeddings.

``RankMe(X) = exp(-Σ_k p_k log p_k)`` with ``p_k = σ_k / Σ_j σ_j + ε``, σ the singular values of the N x D
embedding matrix (uncentred, as in the paper) and ε = 1e-7 (the paper's value for float32). It lies in [1, min(N, D)]
and is only meaningful with N well above D; the paper used 25,600 samples.

The ``cov`` variant instead uses the eigenvalues of the D x D covariance matrix (centred embeddings), as the paper's
public repository does. Its numbers differ (eigenvalues are squared singular values of the centred matrix), so every
output names the method it reports.

:func:`rankme_paper` is RankMe exactly as the paper's public code computes it for its figures: on the raw class
token alone, from the eigenvalues of ``torch.cov(X.T)`` clamped at 1e-12, ``p = λ / Σλ`` (no ε added), over all N
embeddings. It is reported under its own name (``rankme_paper``) beside the variant above.

Per magnification, the comparison is only fair with the same N everywhere: :func:`rankme_per_mpp` subsamples every
mpp to the smallest count, with the same row indices (the same regions) at every mpp.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

METHOD_NAMES = {"svd": "singular values of the N x D matrix", "cov": "eigenvalues of the D x D covariance"}


def spectrum(features: np.ndarray | torch.Tensor, method: str = "svd") -> torch.Tensor:
    """The non-negative spectrum RankMe is computed from, in float64, largest first."""
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    x = x.to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"RankMe needs an N x D matrix, got shape {tuple(x.shape)}")
    if method == "svd":
        values = torch.linalg.svdvals(x)
    elif method == "cov":
        centred = x - x.mean(dim=0, keepdim=True)
        cov = centred.T @ centred / max(x.shape[0] - 1, 1)
        values = torch.linalg.eigvalsh(cov).flip(0)
    else:
        raise ValueError(f"unknown RankMe method '{method}' (choose from svd, cov)")
    # Round-off can make tiny eigenvalues slightly negative; they carry no mass.
    return values.clamp_min(0.0)


def rankme(features: np.ndarray | torch.Tensor, eps: float = 1e-7, method: str = "svd") -> float:
    """RankMe of an N x D matrix; warns when N < D (the estimate is then capped by N)."""
    n, d = features.shape
    if n < d:
        warnings.warn(
            f"RankMe on {n} samples of dimension {d}: with fewer samples than dimensions the rank is capped at {n}",
            stacklevel=2,
        )
    values = spectrum(features, method)
    total = values.sum()
    if total <= 0:
        return 1.0  # an all-zero matrix: a single (degenerate) direction
    p = values / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def rankme_per_mpp(
    features: dict[str, np.ndarray],
    n_samples: int = 0,
    eps: float = 1e-7,
    method: str = "svd",
    seed: int = 0,
) -> dict:
    """RankMe at every mpp on the same number of samples (and the same rows when counts agree).

    ``n_samples`` 0 takes the smallest count over mpps. Returns ``{"values": {mpp: rankme}, "n_samples", "dim",
    "method", "eps", "warning"}``.
    """
    counts = {m: len(x) for m, x in features.items()}
    n = min(counts.values())
    if n_samples:
        n = min(n, n_samples)
    dim = next(iter(features.values())).shape[1]
    rng = np.random.default_rng(seed)
    equal_counts = len(set(counts.values())) == 1
    # Equal counts: the rows are the same regions at every mpp, so take the same subsample everywhere.
    shared_rows = None
    if equal_counts:
        shared_rows = np.sort(rng.choice(next(iter(counts.values())), n, replace=False))
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning for the whole sweep, below, instead of one per mpp
        for m, x in features.items():
            rows = shared_rows if shared_rows is not None else np.sort(rng.choice(len(x), n, replace=False))
            values[m] = rankme(x[rows], eps=eps, method=method)
    warning = ""
    if n < dim:
        warning = f"RankMe used {n} samples for dimension {dim}: fewer samples than dimensions caps the rank at {n}"
        warnings.warn(warning, stacklevel=2)
    return {
        "values": values,
        "n_samples": n,
        "dim": dim,
        "method": METHOD_NAMES[method],
        "eps": eps,
        "warning": warning,
    }


PAPER_METHOD = "eigenvalues of the raw class token's covariance, clamped at 1e-12, all N (the paper's code)"
PAPER_CLAMP = 1e-12


def rankme_paper(cls_tokens: np.ndarray | torch.Tensor) -> float:
    """RankMe of raw class tokens ``[N, D]`` as the paper's code computes it (covariance eigenvalues, clamped)."""
    x = torch.as_tensor(np.asarray(cls_tokens) if not isinstance(cls_tokens, torch.Tensor) else cls_tokens)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.to(torch.float64).T)).clamp(min=PAPER_CLAMP)
    p = eigenvalues / eigenvalues.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def rankme_paper_per_mpp(cls_tokens: dict[str, np.ndarray]) -> dict:
    """:func:`rankme_paper` at every mpp: ``{"values": {mpp: value}, "n_samples", "dim", "method"}``."""
    values = {m: rankme_paper(x) for m, x in cls_tokens.items()}
    first = next(iter(cls_tokens.values()))
    return {"values": values, "n_samples": int(len(first)), "dim": int(first.shape[1]), "method": PAPER_METHOD}
