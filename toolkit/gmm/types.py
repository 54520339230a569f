"""The :class:`GMM` pytree, :class:`FitInfo`, and the checks of data and options shared by the fitting functions."""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._buckets import pad_to, padded_size
from .._checks import _host_float_array, as_float_array


COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
INITS = ("kmeans++", "kmeans", "random", "random_from_data")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weights", "means", "covariances", "precisions_cholesky"],
                   meta_fields=["covariance_type"])
@dataclasses.dataclass(frozen=True)
class GMM:
    """A Gaussian mixture (a pytree; ``covariance_type`` is static metadata).

    Attributes:
      weights: ``(k,)`` mixing weights summing to 1.
      means: ``(k, d)``.
      covariances: see the module table.
      precisions_cholesky: ``L`` with ``precision = L L^T`` (module table).
      covariance_type: "full" | "tied" | "diag" | "spherical".
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    covariance_type: str = "full"


class FitInfo(NamedTuple):
    """Details of :func:`fit`.

    Attributes:
      converged: the lower bound changed by less than ``tol`` (False also for NaN/inf data
        under jit).
      n_iter: EM iterations run.
      lower_bound: mean per-sample log-likelihood at the last E-step (scikit-learn's
        ``lower_bound_``), of the best restart.
      history: ``(max_iter,)`` lower bound per iteration; after ``n_iter`` it repeats
        the last value.
      lower_bounds: ``(n_init,)`` final lower bound of every restart.
      rank_deficient: ``(k,)`` bool, True where a component's weighted scatter (before
        ``shrinkage`` and ``reg_covar``) is numerically singular (smallest eigenvalue
        below sqrt(eps) times the largest): its points span fewer than d dimensions,
        and only the regularisation keeps its covariance invertible. "tied" repeats
        the one flag.
    """

    converged: jax.Array
    n_iter: jax.Array
    lower_bound: jax.Array
    history: jax.Array
    lower_bounds: jax.Array
    rank_deficient: jax.Array


class RegularizationWarning(UserWarning):
    """``reg_covar`` is not small against the data's variance, so the fitted covariances
    are mostly regularisation (``reg_covar`` is absolute, as in scikit-learn: rescale the
    data or lower it)."""


# ----------------------------------------------------------------------------- validation


_HALF_FLOATS = (jnp.dtype("float16"), jnp.dtype("bfloat16"))


def _check_X(X, where, dtype=None):
    """``X`` as a 2-D float array with at least one row and one feature. Half-precision
    input is computed in float32 (Cholesky factorisations need at least that)."""
    return _check_X_shape(as_float_array(X, "X", where, dtype=dtype), where)


def _check_X_shape(X, where):
    """:func:`_check_X`'s checks of a float array (JAX or numpy)."""
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{where}: X must have at least one sample and one feature, got shape {tuple(X.shape)}")
    if X.dtype in _HALF_FLOATS:
        X = X.astype(jnp.float32)
    return X


def _check_gmm_X(gmm, X, where):
    """``(X padded with zero rows to its size bucket, the number of real rows)``, after the
    checks of :func:`_check_X` and the feature count. Values are checked by the caller's
    executable (:func:`_row_summary`, then :func:`_raise_for_rows`): a separate check would
    compile once more per size."""
    dtype = jnp.result_type(gmm.means.dtype, jnp.result_type(X))
    if isinstance(X, jax.Array):
        X = _check_X(X, where, dtype=dtype)
    else:  # converted and padded on the host, then moved to the device once
        X = _check_X_shape(_host_float_array(X, "X", where, dtype=dtype), where)
    if X.shape[1] != gmm.means.shape[-1]:
        raise ValueError(f"{where}: X has {X.shape[1]} features but the mixture has {gmm.means.shape[-1]}")
    n = X.shape[0]
    X = pad_to(X, padded_size(X))
    return (jax.device_put(X) if isinstance(X, np.ndarray) else X), n


def _row_summary(X):
    """``(index of the first row holding NaN/inf or -1, largest |finite value|)``, in one
    pass (works on sharded arrays on device); traced into the executables that use X."""
    fin = jnp.isfinite(X)
    bad = ~jnp.all(fin, axis=1)
    return jnp.where(jnp.any(bad), jnp.argmax(bad), -1), jnp.max(jnp.where(fin, jnp.abs(X), 0))


def _raise_for_rows(summary, X, where, name, what="", n=None):
    """ValueError naming the first non-finite row of concrete ``X`` (from ``summary =
    _row_summary(X)``), or saying that its values are too large for its dtype (their sums
    of squares would overflow, and the fit would report NaN); traced X is left alone
    (NaN/inf then shows in the results, see ``FitInfo.converged``). ``n``: the real rows
    (the rest is zero padding)."""
    if isinstance(X, jax.core.Tracer):
        return
    row, top = jax.device_get(summary)  # one transfer for both
    row, top = int(row), float(top)
    if row >= 0:
        raise ValueError(f"{where}: {what}{name} contains NaN or inf (first at row {row})")
    d = X.shape[1]
    n = X.shape[0] if n is None else n
    if top > (float(jnp.finfo(X.dtype).max) / (4.0 * n * d)) ** 0.5:
        raise ValueError(f"{where}: {what}{name} has values up to {top:.3g}, too large for {X.dtype} (sums of "
                         f"their squares overflow); pass float64 data or rescale it")
