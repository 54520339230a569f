"""Variational Bayesian mixtures side by side: gmm.fit_bayesian against scikit-learn's
BayesianGaussianMixture from the same initial responsibilities, a fixed number of
iterations (tol=0). Called from :mod:`.gmm`.

scikit-learn's fit has no public way to start from given responsibilities, so its side
runs its own ``_initialize`` and then its own E-step / M-step / lower-bound methods in
the loop its ``fit`` runs (the loop's overhead is nothing against those steps)."""
from __future__ import annotations

import time

import jax
import numpy as np

from toolkit import gmm
from toolkit._synthetic import mixture_data

from ._timing import timed


def _sklearn_iterations(X, resp0, iters, kw):
    from sklearn.mixture import BayesianGaussianMixture

    sk = BayesianGaussianMixture(**kw)
    sk._check_parameters(X)
    sk._initialize(X, resp0)
    lb = None
    for _ in range(iters):
        lpn, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        lb = float(np.ravel(sk._compute_lower_bound(log_resp, lpn))[0])
    return lb


def bayesian(p, ctx) -> dict:
    s = p.bayesian_size
    rng = np.random.default_rng(p.seed)
    X, _ = mixture_data(rng, s["n"], s["d"], s["k"])
    resp0 = rng.dirichlet(np.ones(s["k"]), size=s["n"])
    kw = dict(n_components=s["k"], covariance_type="full", weight_concentration_prior_type="dirichlet_process")

    def ours(X):
        return gmm.fit_bayesian(jax.random.key(0), X, s["k"], covariance_type="full", init=resp0,
                                max_iter=s["iters"], tol=0.0)

    (bg, info), t = timed(ours, jax.device_put(X), repeat=p.repeat)
    t0 = time.perf_counter()
    lb_sk = _sklearn_iterations(X, resp0, s["iters"], kw)
    t_sk = time.perf_counter() - t0
    rel = abs(float(info.lower_bound) - lb_sk) / abs(lb_sk)
    out = {**s, "ours": t, "sklearn_s": t_sk, "speedup": t_sk / t["best_s"], "elbo_ours": float(info.lower_bound),
           "elbo_sklearn": lb_sk, "elbo_rel_diff": rel}
    ctx.log.info("bayesian n=%d d=%d k=%d x%d: ours %.3fs (compile+run %.2fs), sklearn %.2fs -> %.1fx; ELBO rel "
                 "diff %.1e", s["n"], s["d"], s["k"], s["iters"], t["best_s"], t["first_s"], t_sk, out["speedup"], rel)
    return out
