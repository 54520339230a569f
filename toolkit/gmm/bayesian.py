"""Variational Bayesian Gaussian mixtures: ``fit_bayesian`` and the :class:`BayesianGMM` pytree.

The model and its updates are scikit-learn's ``BayesianGaussianMixture`` (Bishop 2006,
ch. 10, with scikit-learn's normalisation of the Wishart scale and its lower bound
without constant terms), so that from the same responsibilities the two follow the
same trajectory:

* weights: a Dirichlet process (stick breaking, Beta posteriors) or a Dirichlet
  distribution prior;
* each component: a Normal-Wishart prior (``mean_prior``, ``mean_precision_prior``,
  ``covariance_prior``, ``degrees_of_freedom_prior``), for the four covariance types.

One iteration is the E-step of EM under the variational expectations (the Gaussian
log density with the expected precision, plus the expected log weights), the same
sufficient statistics (:mod:`toolkit.gmm.em`), and the posterior update from them;
the lower bound is the ELBO up to constants, as scikit-learn's ``lower_bound_``.
Components that the data do not need keep their prior and fade to near-zero weight.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, digamma, gammaln, logsumexp
from jax.typing import ArrayLike

from .._buckets import pad_to, padded_size, unpad
from .._checks import as_float_array, as_scalar, check_choice, check_real, check_weights
from .covariance import COVARIANCE, _chol_precision, _log_gaussian, _rank_deficient, _shrink
from .em import _feature_weights, _features, _iterate, _stats_from_resp, _use_features
from .fitting import _history_length
from .init import _init_resp
from .options import _check_fit_options
from .types import GMM, FitInfo, _check_X, _raise_for_rows, _row_summary

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["weight_concentration", "mean_precision", "means", "degrees_of_freedom",
                                "covariances", "precisions_cholesky", "weight_concentration_prior",
                                "mean_precision_prior", "mean_prior", "degrees_of_freedom_prior", "covariance_prior"],
                   meta_fields=["covariance_type", "weight_concentration_prior_type"])
@dataclasses.dataclass(frozen=True)
class BayesianGMM:
    """The variational posterior of a Bayesian Gaussian mixture (a pytree).

    Attributes (k components, d features; covariance shapes as :class:`GMM`):
      weight_concentration: ``(2, k)`` the Beta posteriors of the stick-breaking weights
        ("dirichlet_process") or ``(k,)`` the Dirichlet posterior ("dirichlet_distribution").
      mean_precision: ``(k,)``; means: ``(k, d)``; degrees_of_freedom: ``(k,)`` (one value
        repeated for "tied").
      covariances: the Wishart scale normalised by the degrees of freedom (scikit-learn's
        ``covariances_``); precisions_cholesky: its precision's Cholesky factor.
      weight_concentration_prior, mean_precision_prior, mean_prior ``(d,)``,
      degrees_of_freedom_prior, covariance_prior: the priors used.
      covariance_type, weight_concentration_prior_type: static.
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    weight_concentration_prior: jax.Array
    mean_precision_prior: jax.Array
    mean_prior: jax.Array
    degrees_of_freedom_prior: jax.Array
    covariance_prior: jax.Array
    covariance_type: str = "full"
    weight_concentration_prior_type: str = "dirichlet_process"

    @property
    def weights(self) -> jax.Array:
        """``(k,)`` the expected mixing weights (scikit-learn's ``weights_``)."""
        return _expected_weights(self)


def _expected_weights(bg):
    wc = bg.weight_concentration
    if bg.weight_concentration_prior_type == "dirichlet_process":
        tot = wc[0] + wc[1]
        w = wc[0] / tot * jnp.concatenate([jnp.ones(1, wc.dtype), jnp.cumprod(wc[1] / tot)[:-1]])
        return w / jnp.sum(w)
    return wc / jnp.sum(wc)


def _expected_log_weights(bg):
    """``(k,)`` E[log pi_k] under the weights' posterior."""
    wc = bg.weight_concentration
    if bg.weight_concentration_prior_type == "dirichlet_process":
        dsum = digamma(wc[0] + wc[1])
        tail = digamma(wc[1]) - dsum
        return digamma(wc[0]) - dsum + jnp.concatenate([jnp.zeros(1, wc.dtype), jnp.cumsum(tail)[:-1]])
    return digamma(wc) - digamma(jnp.sum(wc))


def _log_lambda(dof, d):
    """E[log |Lambda|] less log |W| (the expected log-determinant's digamma part)."""
    return d * math.log(2.0) + jnp.sum(digamma(0.5 * (dof[..., None] - jnp.arange(d, dtype=dof.dtype))), -1)


def _log_offsets(bg, d):
    """``(k,)`` what the variational expectations add to ``log N(x | mu_k, covariances_k)``."""
    dof = jnp.broadcast_to(bg.degrees_of_freedom, bg.mean_precision.shape)
    return -0.5 * d * jnp.log(dof) + 0.5 * (_log_lambda(dof, d) - d / bg.mean_precision) + _expected_log_weights(bg)


def _weighted_log_prob(bg, X, F=None):
    """``(n, k)`` E[log pi_k] + E[log N(x_n | mu_k, Lambda_k)] (up to the constant that
    cancels in the responsibilities), as scikit-learn's ``_estimate_weighted_log_prob``.
    ``F``: EM's precomputed features (float64 "full"), which make it one GEMM."""
    d = X.shape[1]
    if F is not None:
        g = GMM(jnp.ones_like(bg.mean_precision), bg.means, bg.covariances, bg.precisions_cholesky,
                bg.covariance_type)
        return F @ _feature_weights(g).at[-1].add(_log_offsets(bg, d))
    return _log_gaussian(X, bg.means, bg.precisions_cholesky, bg.covariance_type) + _log_offsets(bg, d)


# ----------------------------------------------------------------------------- the updates


def _gaussian_stats(st, reg_covar, covariance_type, shrinkage=None):
    """scikit-learn's ``_estimate_gaussian_parameters`` from our sufficient statistics:
    ``(nk (k,), xk (k, d), sk)`` with ``reg_covar`` on the variances; ``shrinkage`` (a
    checked :class:`~toolkit.gmm.covariance.Shrinkage`) pulls the scatter toward its
    target first, as in :func:`toolkit.gmm.fit`."""
    t = COVARIANCE[covariance_type]
    nk = st.nk + 10 * jnp.finfo(st.s1.dtype).eps
    xk = st.s1 / nk[:, None]
    d = xk.shape[1]
    if covariance_type == "full":
        S = st.s2 / nk[:, None, None] - jnp.einsum("ki,kj->kij", xk, xk)
        S = 0.5 * (S + jnp.swapaxes(S, -1, -2))
    elif covariance_type == "tied":
        S = (jnp.sum(st.s2, 0) - jnp.einsum("k,ki,kj->ij", nk, xk, xk)) / jnp.sum(nk)
        S = 0.5 * (S + S.T)
    else:
        S = st.s2 / nk[:, None] - xk * xk
    if shrinkage is not None:
        S = _shrink(S, st, nk, xk, shrinkage, t)
    if t.matrix:
        return nk, xk, S + reg_covar * jnp.eye(d, dtype=xk.dtype)
    S = S + reg_covar
    return nk, xk, (jnp.mean(S, 1) if covariance_type == "spherical" else S)


def _posterior(st, prior, reg_covar, floor, shrinkage=None):
    """The variational posterior from the sufficient statistics and ``prior`` (a
    :class:`BayesianGMM` whose prior fields are set)."""
    ct, pt = prior.covariance_type, prior.weight_concentration_prior_type
    nk, xk, sk = _gaussian_stats(st, reg_covar, ct, shrinkage)
    k, d = xk.shape
    if pt == "dirichlet_process":
        later = jnp.cumsum(nk[::-1])[::-1] - nk  # sum of nk_j over j > k
        wc = jnp.stack([1.0 + nk, prior.weight_concentration_prior + later])
    else:
        wc = prior.weight_concentration_prior + nk
    beta0, m0 = prior.mean_precision_prior, prior.mean_prior
    beta = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xk) / beta[:, None]
    diff = xk - m0
    nu0, W0 = prior.degrees_of_freedom_prior, prior.covariance_prior
    if ct == "full":
        dof = nu0 + nk
        cov = W0 + nk[:, None, None] * sk + (nk * beta0 / beta)[:, None, None] * jnp.einsum("ki,kj->kij", diff, diff)
        cov = cov / dof[:, None, None]
    elif ct == "tied":
        dof = jnp.full((k,), nu0 + jnp.sum(nk) / k)
        cov = W0 + sk * jnp.sum(nk) / k + beta0 / k * jnp.einsum("k,ki,kj->ij", nk / beta, diff, diff)
        cov = cov / dof[0]
    elif ct == "diag":
        dof = nu0 + nk
        cov = (W0 + nk[:, None] * (sk + (beta0 / beta)[:, None] * diff * diff)) / dof[:, None]
    else:
        dof = nu0 + nk
        cov = (W0 + nk * (sk + beta0 / beta * jnp.mean(diff * diff, 1))) / dof
    return dataclasses.replace(prior, weight_concentration=wc, mean_precision=beta, means=means,
                               degrees_of_freedom=dof, covariances=cov,
                               precisions_cholesky=_chol_precision(cov, ct, floor))


def _lower_bound(bg, neg_entropy):
    """scikit-learn's ``_compute_lower_bound``: the ELBO without its constant terms, from
    the posterior after the M-step and ``sum r log r`` of the E-step before it."""
    ct = bg.covariance_type
    d = bg.means.shape[1]
    k = bg.mean_precision.shape[0]
    dof = bg.degrees_of_freedom
    log_det = COVARIANCE[ct].log_det(bg.precisions_cholesky, d) - 0.5 * d * jnp.log(dof)
    log_wishart = -(dof * log_det + dof * d * 0.5 * math.log(2.0)
                    + jnp.sum(gammaln(0.5 * (dof[:, None] - jnp.arange(d, dtype=dof.dtype))), -1))
    log_wishart = k * log_wishart[0] if ct == "tied" else jnp.sum(log_wishart)
    wc = bg.weight_concentration
    if bg.weight_concentration_prior_type == "dirichlet_process":
        log_norm_weight = -jnp.sum(betaln(wc[0], wc[1]))
    else:
        log_norm_weight = gammaln(jnp.sum(wc)) - jnp.sum(gammaln(wc))
    return -neg_entropy - log_wishart - log_norm_weight - 0.5 * d * jnp.sum(jnp.log(bg.mean_precision))


def _vb_e_stats(bg, X, sw, F, shrinkage):
    """The variational E-step over (part of) the data: ``(sum sw r log r, stats)``; the
    statistics are EM's (:func:`toolkit.gmm.em._stats_from_resp`), so they add across
    batches and processes as EM's do."""
    wlp = _weighted_log_prob(bg, X, F)
    norm = logsumexp(wlp, axis=1)
    log_resp = wlp - norm[:, None]
    resp = jnp.exp(log_resp)
    neg_entropy = jnp.sum(jnp.where(resp > 0, sw[:, None] * resp * log_resp, 0.0))
    return neg_entropy, _stats_from_resp(X, resp * sw[:, None], bg.covariance_type, shrinkage, F)


def _vb_step(bg, X, sw, reg_covar, floor, shrinkage, F):
    """One iteration: ``(ELBO, stats, new posterior)``; ``F`` as in :func:`_weighted_log_prob`."""
    neg_entropy, st = _vb_e_stats(bg, X, sw, F, shrinkage)
    new = _posterior(st, bg, reg_covar, floor, shrinkage)
    return _lower_bound(new, neg_entropy), st, new


def _vb(bg0, X, sw, reg_covar, tol, max_iter, floor, hist_len, lb0, shrinkage):
    """VB from ``bg0``: EM's convergence loop (:func:`toolkit.gmm.em._iterate`) with the
    variational step (scikit-learn's loop: E-step, M-step, bound)."""
    n, d = X.shape
    k = bg0.means.shape[0]
    F = _features(X) if _use_features(d, k, X.dtype, bg0.covariance_type, shrinkage) else None
    st0 = _stats_from_resp(X, jnp.zeros((n, k), X.dtype), bg0.covariance_type, shrinkage)
    g, it, lb, hist, conv, st = _iterate(lambda g: _vb_step(g, X, sw, reg_covar, floor, shrinkage, F), bg0, st0,
                                         tol, max_iter, lb0, hist_len)
    return g, it, lb, hist, conv, _rank_deficient(st, bg0.covariance_type)


@functools.partial(jax.jit, static_argnames=("k", "init", "n_init", "hist_len", "from_resp", "covariance_type",
                                              "prior_type", "shrinkage"))
def _fit_bayesian(key, X, sw, given, resp0, warm, reg_covar, tol, max_iter, lb0, *, k, init, n_init, hist_len,
                  from_resp, covariance_type, prior_type, shrinkage):
    """Restarts vmapped; the best ELBO wins. Priors are in the data's frame; the fit
    runs centred on the weighted mean (the mean prior moves with it)."""
    prior = _prior_model(*_data_moments(X, sw), given, k, covariance_type, prior_type)
    center = jnp.sum(sw[:, None] * X, 0) / jnp.sum(sw)
    Xc = X - center
    prior_c = dataclasses.replace(prior, mean_prior=prior.mean_prior - center)
    floor = jnp.sum(sw @ (Xc * Xc)) / (X.shape[1] * jnp.sum(sw))

    def one(key):
        if warm is not None:  # continue from a posterior (priors: this call's)
            g0 = dataclasses.replace(warm, means=warm.means - center, mean_prior=prior_c.mean_prior,
                                     weight_concentration_prior=prior.weight_concentration_prior,
                                     mean_precision_prior=prior.mean_precision_prior,
                                     degrees_of_freedom_prior=prior.degrees_of_freedom_prior,
                                     covariance_prior=prior.covariance_prior)
        else:
            resp = resp0 if from_resp else _init_resp(key, Xc, sw, k, init)
            st = _stats_from_resp(Xc, resp * sw[:, None], prior.covariance_type, shrinkage)
            g0 = _posterior(st, prior_c, reg_covar, floor, shrinkage)
        return _vb(g0, Xc, sw, reg_covar, tol, max_iter, floor, hist_len, lb0, shrinkage)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_init))
    gs, its, lbs, hists, convs, deficient = jax.vmap(one)(keys)
    finite = jnp.isfinite(lbs)
    best = jnp.argmax(jnp.where(finite, lbs, -jnp.inf))
    g = jax.tree_util.tree_map(lambda a: a[best], gs)
    g = dataclasses.replace(g, means=g.means + center, mean_prior=g.mean_prior + center)
    data_ok = jnp.all(jnp.isfinite(X)) & jnp.all(jnp.isfinite(sw)) & jnp.all(sw >= 0) & (jnp.sum(sw) > 0)
    info = FitInfo(converged=convs[best] & data_ok & finite[best], n_iter=its[best], lower_bound=lbs[best],
                   history=hists[best], lower_bounds=lbs, rank_deficient=deficient[best])
    return g, info, _row_summary(X)


# ----------------------------------------------------------------------------- priors


def _default_priors(mean, C, k, covariance_type):
    """scikit-learn's defaults from the data's (weighted) mean and unbiased covariance."""
    dt = C.dtype
    var = jnp.diagonal(C)
    return {"weight_concentration_prior": jnp.asarray(1.0 / k, dt), "mean_precision_prior": jnp.asarray(1.0, dt),
            "mean_prior": mean, "degrees_of_freedom_prior": jnp.asarray(C.shape[0], dt),
            "covariance_prior": {"full": C, "tied": C, "diag": var, "spherical": jnp.mean(var)}[covariance_type]}


def _data_moments(X, sw):
    """``(mean, unbiased covariance)`` of rows X with (frequency) weights sw. Traced."""
    W = jnp.sum(sw)
    mean = (sw @ X) / W
    Xc = X - mean
    return mean, (Xc.T * sw) @ Xc / (W - 1.0)


def _check_prior(name, value, shape, where, *, positive=True, pd=False):
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{where}: {name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {name} must be finite, got {value!r}")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{where}: {name} must be positive, got {value!r}")
    if pd:
        if not np.allclose(arr, arr.T) or np.any(np.linalg.eigvalsh(arr) <= 0):
            raise ValueError(f"{where}: {name} must be symmetric, positive-definite")
    return arr


def _checked_priors(d, covariance_type, given, where):
    """The priors given (None where not), checked: float64 numpy arrays."""
    out = {}
    for name, value in given.items():
        if value is None:
            out[name] = None
        elif name == "mean_prior":
            out[name] = _check_prior(name, value, (d,), where, positive=False)
        elif name == "covariance_prior":
            shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[covariance_type]
            matrix = covariance_type in ("full", "tied")
            out[name] = _check_prior(name, value, shape, where, positive=not matrix, pd=matrix)
        elif name == "degrees_of_freedom_prior":
            check_real(value, name, where)
            if not value > d - 1.0:
                raise ValueError(f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, "
                                 f"but got {value:.3f}.")
            out[name] = np.float64(value)
        else:
            out[name] = _check_prior(name, value, (), where)
    return out


def _bayesian_options(where, d, dtype, covariance_type, prior_type, priors):
    """Check the prior type and the priors given (a dict, None where not given): the
    given ones as ``dtype`` numpy arrays."""
    check_choice(prior_type, PRIOR_TYPES, "weight_concentration_prior_type", where)
    given = _checked_priors(d, covariance_type, priors, where)
    return {name: None if v is None else v.astype(dtype) for name, v in given.items()}


def _prior_model(mean, C, given, k, covariance_type, prior_type):
    """A :class:`BayesianGMM` holding the priors (given ones; scikit-learn's defaults from
    the data's ``mean`` and unbiased covariance ``C`` elsewhere) and zero posterior
    fields. Traced (inside the fit's executable)."""
    dt = C.dtype
    d = C.shape[0]
    pr = _default_priors(mean, C, k, covariance_type)
    pr.update({name: jnp.asarray(v, dt) for name, v in given.items() if v is not None})
    zk = jnp.zeros((k,), dt)
    wc0 = jnp.zeros((2, k), dt) if prior_type == "dirichlet_process" else zk
    shape = COVARIANCE[covariance_type].shape(k, d)
    return BayesianGMM(wc0, zk, jnp.zeros((k, d), dt), zk, jnp.zeros(shape, dt), jnp.zeros(shape, dt),
                       pr["weight_concentration_prior"], pr["mean_precision_prior"], pr["mean_prior"],
                       pr["degrees_of_freedom_prior"], pr["covariance_prior"], covariance_type, prior_type)


def fit_bayesian(key: jax.Array, X: ArrayLike, n_components: int, *,
                 weight_concentration_prior_type: str = "dirichlet_process",
                 weight_concentration_prior: float | None = None, mean_precision_prior: float | None = None,
                 mean_prior: ArrayLike | None = None, degrees_of_freedom_prior: float | None = None,
                 covariance_prior: ArrayLike | None = None, covariance_type: str = "full",
                 reg_covar: float = 1e-6, shrinkage: float | str | None = None, shrinkage_target: str = "identity",
                 max_iter: int = 100, tol: float = 1e-3, n_init: int = 1,
                 init: Any = "kmeans++", sample_weight: ArrayLike | None = None,
                 prev_lower_bound: float | None = None) -> tuple[BayesianGMM, FitInfo]:
    """Fit a variational Bayesian Gaussian mixture (scikit-learn's BayesianGaussianMixture).

    Args:
      key: ``jax.random`` key (initialisation).
      X: ``(n, d)`` data.
      n_components: k, an upper bound: components the data do not need fade to ~0 weight.
      weight_concentration_prior_type: "dirichlet_process" (stick breaking) or
        "dirichlet_distribution".
      weight_concentration_prior: gamma0 (default 1/k); mean_precision_prior: beta0
        (default 1); mean_prior: ``(d,)`` (default the mean of X);
        degrees_of_freedom_prior: nu0 > d - 1 (default d); covariance_prior: the Wishart
        scale prior, shaped as one component's covariance for ``covariance_type``
        (default the unbiased covariance of X, or its diagonal / mean variance).
      covariance_type: "full" | "tied" | "diag" | "spherical".
      reg_covar: added to the variances of the statistics (>= 0).
      shrinkage, shrinkage_target: as :func:`toolkit.gmm.fit`: each component's scatter
        is shrunk toward the target before the Wishart update (None: scikit-learn's model).
      max_iter, tol: stop when the ELBO changes by < tol (the total, as scikit-learn).
      n_init: restarts (vectorised); the best ELBO wins.
      init: "kmeans++", "kmeans", "random", "random_from_data", initial
        responsibilities ``(n, k)`` (scikit-learn's ``_initialize`` from them), or a
        :class:`BayesianGMM` to continue from (its posterior; the priors are this call's).
      sample_weight: ``(n,)`` non-negative weights.
      prev_lower_bound: when continuing (``init`` a BayesianGMM), its ELBO: the first
        iteration's change is measured from it (scikit-learn's ``warm_start``).

    Returns:
      ``(BayesianGMM, FitInfo)``; ``FitInfo.lower_bound`` is the ELBO (scikit-learn's
      ``lower_bound_``). ``log_prob``, ``predict``, ``predict_proba``, ``score`` and
      ``sample`` accept the result.

    Raises:
      ValueError: as :func:`toolkit.gmm.fit`, and for a prior of the wrong shape, not
        finite, not positive (not positive-definite for a matrix), or
        ``degrees_of_freedom_prior <= d - 1``.

    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 6])
    >>> bg, info = fit_bayesian(jax.random.key(0), X, 6)
    >>> int(np.sum(np.asarray(bg.weights) > 0.05)), bool(info.converged)   # two clusters remain
    (2, True)
    """
    where = "gmm.fit_bayesian"
    X = _check_X(X, where)
    n, d = X.shape
    warm = init if isinstance(init, BayesianGMM) else None
    from_resp = warm is None and not isinstance(init, str)
    shrinkage, _ = _check_fit_options(where, d, X.dtype, n_components, covariance_type, reg_covar, shrinkage,
                                      init if isinstance(init, str) else "kmeans++", n_init, max_iter,
                                      shrinkage_target)
    if warm is not None and (warm.covariance_type != covariance_type or warm.means.shape != (n_components, d)
                             or warm.weight_concentration_prior_type != weight_concentration_prior_type):
        raise ValueError(f"{where}: init BayesianGMM has covariance_type {warm.covariance_type!r}, prior type "
                         f"{warm.weight_concentration_prior_type!r} and means {tuple(warm.means.shape)}; expected "
                         f"{covariance_type!r}, {weight_concentration_prior_type!r} and {(n_components, d)}")
    check_real(tol, "tol", where)
    if n < n_components:
        raise ValueError(f"{where}: n_samples={n} should be >= n_components={n_components}")
    dt = X.dtype
    if sample_weight is None:
        sw = np.ones(n, dt)
    else:
        sw = as_float_array(sample_weight, "sample_weight", where, dtype=dt)
        if sw.shape != (n,):
            raise ValueError(f"{where}: sample_weight must have shape ({n},), got {tuple(sw.shape)}")
        check_weights(sw, "sample_weight", where)
    given = _bayesian_options(where, d, dt, covariance_type, weight_concentration_prior_type, dict(
        weight_concentration_prior=weight_concentration_prior, mean_precision_prior=mean_precision_prior,
        mean_prior=mean_prior, degrees_of_freedom_prior=degrees_of_freedom_prior,
        covariance_prior=covariance_prior))
    k = int(n_components)
    resp0 = None
    if from_resp:
        resp0 = as_float_array(init, "init", where, dtype=dt)
        if resp0.shape != (n, k):
            raise ValueError(f"{where}: initial responsibilities must have shape ({n}, {k}), got {resp0.shape}")
    # rows padded to the size bucket with zero weight, as in fit
    m = padded_size(X)
    Xp, swp = pad_to(X, m), pad_to(sw, m)
    resp0 = pad_to(resp0, m) if from_resp else None
    if warm is not None:
        warm = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), warm)
    lb0 = as_scalar(-np.inf if prev_lower_bound is None else prev_lower_bound, dt)
    g, info, summary = _fit_bayesian(key, Xp, swp, given, resp0, warm, as_scalar(reg_covar, dt), as_scalar(tol, dt),
                                     np.int32(max_iter), lb0, k=k, init=init if isinstance(init, str) else None,
                                     n_init=1 if warm is not None else int(n_init),
                                     hist_len=_history_length(int(max_iter)), from_resp=from_resp,
                                     covariance_type=covariance_type, prior_type=weight_concentration_prior_type,
                                     shrinkage=shrinkage)
    _raise_for_rows(summary, Xp, where, "X", n=n)
    return g, info._replace(history=unpad(info.history, int(max_iter)))
