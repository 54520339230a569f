"""``fit``: EM on an in-memory (or row-sharded) array, restarts vectorised."""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._buckets import pad_to, padded_size, unpad
from .._checks import as_float_array, as_scalar, check_real, check_weights, is_readable
from .._xla import tuned_jit
from .em import _em, _m_step, _small
from .init import _init_resp
from .options import _check_fit_options
from .types import GMM, FitInfo, RegularizationWarning, _check_X, _raise_for_rows, _row_summary


# ----------------------------------------------------------------------------- fit


def _best_restart(gs, its, lbs, hists, convs, deficient, center, data_ok):
    """The restart with the highest finite lower bound, moved back to the data's frame."""
    finite = jnp.isfinite(lbs)
    best = jnp.argmax(jnp.where(finite, lbs, -jnp.inf))
    g = jax.tree_util.tree_map(lambda a: a[best], gs)
    g = dataclasses.replace(g, means=g.means + center)
    info = FitInfo(converged=convs[best] & data_ok & finite[best], n_iter=its[best], lower_bound=lbs[best],
                   history=hists[best], lower_bounds=lbs, rank_deficient=deficient[best])
    return g, info


def _restarts_impl(key, X, sw, gmm_init, reg_covar, tol, k, covariance_type, shrinkage, init, max_iter, lb0,
                   restarts, hist_len):
    """EM from the initialisations of restarts ``start, ..., start + count - 1`` (restart i
    seeded by ``fold_in(key, i)``), with ``restarts = (start, count, batched)``:
    ``((g, n_iter, lb, history, converged, rank_deficient) with a leading restart axis,
    centre, data_ok, checks)``. ``batched=False`` runs one restart without vmap and also
    picks the result (``_pick``'s output in place of the runs): the whole n_init=1 fit is
    one executable. ``reg_covar``, ``tol`` and ``max_iter`` are traced (one executable
    serves every value); ``hist_len >= max_iter``, static, is the history's length."""
    start, count, batched = restarts
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(start, start + count))
    center = jnp.sum(sw[:, None] * X, 0) / jnp.sum(sw)
    Xc = X - center  # centring keeps the uncentred second-moment formulas accurate

    def one(key):
        if gmm_init is not None:
            g0 = dataclasses.replace(gmm_init, means=gmm_init.means - center)
        else:
            resp = _init_resp(key, Xc, sw, k, init)
            g0 = _m_step(Xc, resp * sw[:, None], reg_covar, covariance_type, shrinkage)
        return _em(g0, Xc, sw, reg_covar, tol, covariance_type, shrinkage, max_iter, lb0, hist_len)

    # data the fit cannot use (NaN/inf, bad weights) when traced: flagged, never "converged"
    data_ok = jnp.all(jnp.isfinite(X)) & jnp.all(jnp.isfinite(sw)) & jnp.all(sw >= 0) & (jnp.sum(sw) > 0)
    runs = jax.vmap(one)(keys) if batched else jax.tree_util.tree_map(lambda a: a[None], one(keys[0]))
    if not batched:
        runs = (runs, _best_restart(*runs, center, data_ok))
    # what fit() checks on concrete data, computed here rather than by separate executables
    # (each would compile once more per size): X's first bad row, largest value, mean variance
    variance = jnp.mean(sw @ (Xc * Xc)) / jnp.sum(sw)
    return runs, center, data_ok, (*_row_summary(X), variance)


_STATIC = (6, 7, 8, 9, 12, 13)
_restarts = jax.jit(_restarts_impl, static_argnums=_STATIC)
# the one-pass small path gains from XLA's fast-math reductions (and only it: the GEMM
# path runs slower with those options); small inputs of either path compile with light
# optimisation (2-3x faster to compile, and the run takes milliseconds anyway)
_restarts_tuned = tuned_jit(_restarts_impl, static_argnums=_STATIC)
_LIGHT_MAX = 1 << 16  # rows x features x components


def _runner(m, d, k, dtype, covariance_type, shrinkage):
    """The jitted restarts for ``m`` padded rows: light, fast-math or plain compilation."""
    if m * d * k <= _LIGHT_MAX:
        return functools.partial(_restarts_tuned, light_compile=True)
    return _restarts_tuned if _small(d, k, dtype, covariance_type, shrinkage) else _restarts


@jax.jit
def _pick(first, rest, center, data_ok):
    """The best of restart 0 and the others (None when n_init = 1)."""
    runs = first if rest is None else jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, rest)
    return _best_restart(*runs, center, data_ok)


def fit(key: jax.Array, X: ArrayLike, n_components: int, *, covariance_type: str = "full", reg_covar: float = 1e-6,
        shrinkage: float | str | None = None, shrinkage_target: str = "identity",
        init: Any = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
        sample_weight: ArrayLike | None = None, prev_lower_bound: float | None = None) -> tuple[GMM, FitInfo]:
    """Fit a Gaussian mixture by EM (one jitted ``lax.while_loop``; restarts vmapped).

    Args:
      key: ``jax.random`` key (initialisation).
      X: ``(n, d)`` data.
      n_components: k.
      covariance_type: "full" | "tied" | "diag" | "spherical".
      reg_covar: added to the diagonal of every covariance (>= 0).
      shrinkage: None, a float in [0, 1], "ledoit_wolf" or "oas": shrink each covariance
        toward the target (the intensity estimated per component from its weighted scatter).
      shrinkage_target: "identity" (``(tr S / d) I``) or "diagonal" (``diag(S)``: only the
        off-diagonal entries shrink, each feature keeps its own variance; the better prior
        for features of very different scales). The named rules' intensities are derived
        for each target (:mod:`toolkit.gmm.covariance`). Diagonal covariance types are their
        own diagonal target (unchanged by it).
      init: "kmeans++" (seeding + 5 Lloyd steps), "kmeans" (100 Lloyd steps),
        "random", "random_from_data", or a :class:`GMM` to warm-start from.
      n_init: restarts (vectorised); the best final lower bound wins.
      max_iter: EM iterations at most. tol: stop when the lower bound changes by < tol.
      sample_weight: ``(n,)`` non-negative weights.
      prev_lower_bound: when continuing an earlier fit (``init`` its mixture), its lower
        bound: the first iteration's change is measured from it, so a converged fit stops
        after one iteration (scikit-learn's ``warm_start``). Default: -inf.
    Returns:
      ``(GMM, FitInfo)``.
    Raises:
      ValueError: X not 2-D or empty, fewer samples than components, NaN/inf in concrete
        X or values too large for its dtype, sample_weight negative, non-finite or all
        zero, bad options (reg_covar or tol NaN or negative, ...). Under jit, where
        values cannot raise, such data gives ``info.converged == False`` instead.
      Half-precision X is computed in float32.

    >>> X = jax.random.normal(jax.random.key(0), (500, 2))
    >>> g, info = fit(jax.random.key(1), X, 2)
    >>> g.means.shape, bool(info.converged)
    ((2, 2), True)
    """
    where = "gmm.fit"
    X = _check_X(X, where)
    n, d = X.shape
    shrinkage, gmm_init = _check_fit_options(where, d, X.dtype, n_components, covariance_type, reg_covar,
                                             shrinkage, init, n_init, max_iter, shrinkage_target)
    if n < n_components:
        raise ValueError(f"{where}: n_samples={n} should be >= n_components={n_components}")
    check_real(tol, "tol", where)
    if sample_weight is None:
        sw = np.ones(n, X.dtype)
    else:
        sw = as_float_array(sample_weight, "sample_weight", where, dtype=X.dtype)
        if sw.shape != (n,):
            raise ValueError(f"{where}: sample_weight must have shape ({n},), got {tuple(sw.shape)}")
        check_weights(sw, "sample_weight", where)
    # Rows padded to the size bucket, with zero weight: every count in a bucket runs one
    # executable, and zero-weight rows change no sum, draw or flag of EM.
    m = padded_size(X)
    X, sw = pad_to(X, m), pad_to(sw, m)
    # Restart i's key does not depend on n_init, and restart 0 runs as its own unbatched
    # executable whatever n_init is, so it reproduces the n_init=1 fit bit for bit (a
    # vmapped copy may reduce in another order): more restarts never give a lower bound.
    run = _runner(m, d, int(n_components), X.dtype, covariance_type, shrinkage)
    args = (X, sw, gmm_init, as_scalar(reg_covar, X.dtype), as_scalar(tol, X.dtype), int(n_components),
            covariance_type, shrinkage, init if gmm_init is None else "warm", np.int32(max_iter),
            as_scalar(-np.inf if prev_lower_bound is None else prev_lower_bound, X.dtype))
    hist_len = _history_length(int(max_iter))
    (first, picked), center, data_ok, (bad_row, top, variance) = run(key, *args, (0, 1, False), hist_len)
    rest = run(key, *args, (1, int(n_init) - 1, True), hist_len)[0] if n_init > 1 else None
    _raise_for_rows((bad_row, top), X, where, "X", n=n)
    # the warning needs the value on this host: skipped under jit and for arrays spread over
    # several processes (whose values no single process can read)
    if is_readable(X) and reg_covar > 0 and reg_covar > 0.1 * float(variance):
        warnings.warn(f"gmm.fit: reg_covar={reg_covar:g} is not small against the data's mean variance "
                      f"{float(variance):.3g}: the covariances will be mostly regularisation; rescale the data "
                      f"or lower reg_covar", RegularizationWarning, stacklevel=2)
    if rest is None:
        g, info = picked
    else:
        g, info = _pick(first, rest, center, data_ok)
    return g, info._replace(history=unpad(info.history, int(max_iter)))


def _history_length(max_iter: int) -> int:
    """The lower-bound history's compiled length: ``max_iter`` rounded up to a power of two
    (at least 128: scikit-learn's default max_iter is 100), so that one executable serves
    every traced ``max_iter`` up to that length."""
    return max(128, 1 << (max_iter - 1).bit_length())

