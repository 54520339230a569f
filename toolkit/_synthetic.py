"""Synthetic Gaussian-mixture data, shared by the tests, the experiments and the benchmarks."""
from __future__ import annotations

import numpy as np

__all__ = ["mixture_data"]


def mixture_data(rng: np.random.Generator, n: int, d: int, k: int, *, center_scale: float = 4.0,
                 factor_offset: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X (n, d), labels (n,))``: k Gaussian clusters with random centres and shapes.

    Centres are ``N(0, center_scale^2)``; cluster j is ``center_j + A_j z`` with
    ``z ~ N(0, I)`` and ``A_j`` a random ``(d, d)`` factor: ``N(0, 1) / sqrt(d)`` entries,
    or ``0.5 N(0, 1) + factor_offset * I`` when ``factor_offset`` is given (clusters that
    are never close to flat). The draws happen in that order, so a seed gives the same
    data to every caller.

    >>> X, y = mixture_data(np.random.default_rng(0), 100, 2, 3)
    >>> X.shape, y.shape, int(y.max()) <= 2
    ((100, 2), (100,), True)
    """
    centers = rng.normal(scale=center_scale, size=(k, d))
    labels = rng.integers(0, k, size=n)
    if factor_offset is None:
        A = rng.normal(size=(k, d, d)) / np.sqrt(d)
    else:
        A = rng.normal(size=(k, d, d)) * 0.5 + factor_offset * np.eye(d)
    return centers[labels] + np.einsum("nij,nj->ni", A[labels], rng.normal(size=(n, d))), labels
