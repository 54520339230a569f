"""Online EM: :func:`fit_online` is stochastic EM (Cappe & Moulines 2009) for one pass over
data that cannot be read twice: approximate, and documented as such."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive_int, result_dtype
from .covariance import _params_from_stats, _rank_deficient
from .em import _e_stats, _features, _use_features
from .fitting import fit
from .options import _check_fit_options
from .types import GMM, FitInfo
from .sources import _Source
from .streaming import _stats_zero


# ----------------------------------------------------------------------------- online EM


def _default_step_size(t: int) -> float:
    return (t + 1.0) ** -0.6


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _online_step(g, S, X, w, center, rho, covariance_type, shrinkage, fast, reg_covar):
    """S <- (1 - rho) S + rho * (normalised statistics of the batch under g); g <- M(S)."""
    Xc = X - center
    F = _features(Xc) if fast else None
    ll, st = _e_stats(g, Xc, w, F, covariance_type, shrinkage)
    wb = jnp.sum(w)
    S = jax.tree_util.tree_map(lambda a, b: (1 - rho) * a + rho * b / wb, S, st)
    return _params_from_stats(S, reg_covar, covariance_type, shrinkage), S, ll / wb


def fit_online(key: jax.Array, batches: Any, n_components: int, *, covariance_type: str = "full",
               reg_covar: float = 1e-6, shrinkage: float | str | None = None, shrinkage_target: str = "identity",
               init: Any = "kmeans++", step_size: float | Callable[[int], float] | None = None, n_epochs: int = 1,
               batch_size: int | None = None, dtype: Any = None,
               callback: Callable[[int, float], Any] | None = None) -> tuple[GMM, FitInfo]:
    """Online (stochastic) EM: one M-step per batch, for data seen once (approximate).

    Cappé & Moulines (2009): the running normalised statistics move toward each batch's,
    ``S_t = (1 - rho_t) S_{t-1} + rho_t s(batch_t; theta_{t-1})`` and ``theta_t = M(S_t)``.
    It converges to a stationary point of the likelihood as ``sum rho = inf`` and
    ``sum rho^2 < inf``, but after a finite stream it is only close to the batch EM
    optimum: use :func:`fit_batches` when the data can be read once per iteration.

    Args:
      key: ``jax.random`` key (initialisation).
      batches: as :func:`fit_batches`; a one-shot iterator is accepted when ``n_epochs=1``.
      n_components, covariance_type, reg_covar, shrinkage, shrinkage_target: as :func:`toolkit.gmm.fit`.
      init: a :class:`GMM`, or an init name of :func:`toolkit.gmm.fit` applied to the
        first batch (so the first batch should hold every component).
      step_size: ``rho_t`` for step ``t = 0, 1, ...``: a float in (0, 1] or a function of
        t; default ``(t + 1) ** -0.6`` (rho_0 = 1: the first batch replaces the start).
      n_epochs: passes over the data.
      batch_size, dtype, callback: as :func:`fit_batches` (callback after every batch
        with ``(step, that batch's mean log-likelihood)``).
    Returns:
      ``(GMM, FitInfo)``: ``n_iter`` counts batch steps, ``history`` holds each batch's
      mean log-likelihood under the parameters before its step, ``lower_bound`` the
      last; ``converged`` is always False (no convergence test is made).

    >>> from toolkit import gmm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 6])
    >>> X = X[np.random.default_rng(2).permutation(600)]
    >>> g, info = gmm.fit_online(jax.random.key(0), [X[i:i + 100] for i in range(0, 600, 100)], 2, n_epochs=3)
    >>> sorted(np.asarray(g.means).round(0)[:, 0].tolist())
    [-0.0, 6.0]
    """
    where = "gmm.fit_online"
    check_positive_int(batch_size, "batch_size", where, optional=True)
    check_positive_int(n_epochs, "n_epochs", where)
    if step_size is None:
        step_size = _default_step_size
    elif not callable(step_size):
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 < step_size <= 1:
            raise ValueError(f"{where}: step_size must be a float in (0, 1] or a function of the step, "
                             f"got {step_size!r}")
        step_size = functools.partial(lambda c, t: c, float(step_size))
    if dtype is not None:
        dtype = result_dtype(dtype)
    src = _Source(batches, where, batch_size=batch_size, dtype=dtype, multi_pass=n_epochs > 1)
    g = S = center = None
    hist = []
    t = 0
    fast = False
    for _ in range(int(n_epochs)):
        for ch in src.chunks(first=True):
            jax.block_until_ready(S)  # bounded memory: see fit_batches' run_pass
            X, w = jnp.asarray(ch.X), jnp.asarray(ch.w)
            if g is None:
                shrinkage, gmm_init = _check_fit_options(where, src.d, src.dtype, n_components, covariance_type,
                                                            reg_covar, shrinkage, init, 1, 1, shrinkage_target)
                m = int(np.count_nonzero(ch.rows >= 0))
                if m < n_components:
                    raise ValueError(f"{where}: the first batch has {m} rows; it must hold at least "
                                     f"n_components={n_components} to initialise from")
                # the first chunk initialises; centring on it keeps the moments accurate
                g, _ = fit(key, X[:m], n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                              shrinkage=shrinkage, init=init, max_iter=1, tol=0.0, sample_weight=w[:m])
                center = jnp.sum(w[:, None] * X, 0) / jnp.sum(w)
                g = dataclasses.replace(g, means=g.means - center)
                S = jax.tree_util.tree_map(lambda a: a[0], _stats_zero(1, n_components, src.d, src.dtype,
                                                                      covariance_type, shrinkage))
                fast = _use_features(src.d, n_components, src.dtype, covariance_type, shrinkage)
            rho = float(step_size(t))
            if not 0 < rho <= 1:
                raise ValueError(f"{where}: step_size({t}) = {rho}; it must be in (0, 1]")
            if t == 0:
                rho = 1.0  # nothing to average with yet
            g, S, lb = _online_step(g, S, X, w, center, jnp.asarray(rho, src.dtype), covariance_type, shrinkage,
                                    fast, jnp.asarray(reg_covar, src.dtype))
            hist.append(lb)
            t += 1
            if callback is not None:
                callback(t, float(lb))
    hist = jnp.stack(hist)
    deficient = _rank_deficient(S, covariance_type)
    g = dataclasses.replace(g, means=g.means + center)
    return g, FitInfo(converged=jnp.asarray(False), n_iter=jnp.asarray(t), lower_bound=hist[-1], history=hist,
                         lower_bounds=hist[-1:], rank_deficient=deficient)
