"""toolkit.gmm vs scikit-learn GaussianMixture: same data, same start, fixed iterations (tol=0)."""
from __future__ import annotations

import dataclasses
import os
import warnings

import jax
import numpy as np

from toolkit import gmm

from toolkit._synthetic import mixture_data

from . import gmm_bayesian, gmm_digits
from ._timing import timed


@dataclasses.dataclass(frozen=True)
class Size:
    n: int
    d: int
    k: int
    iters: int


@dataclasses.dataclass(frozen=True)
class Params:
    sizes: list[Size] = dataclasses.field(default_factory=lambda: [
        Size(20_000, 2, 3, 100), Size(100_000, 8, 16, 100), Size(1_000_000, 16, 32, 20)])
    covariance_type: str = "full"
    repeat: int = 3
    sklearn_repeat: int = 2
    seed: int = 0
    plot: bool = True
    # held-out log-likelihood on scikit-learn's digits (stratified 80/20, seed 0): shrinkage
    # targets against scikit-learn, each at its best reg_covar (see gmm_digits.py)
    digits: bool = True
    # variational Bayes against scikit-learn's BayesianGaussianMixture (gmm_bayesian.py)
    bayesian: bool = True
    bayesian_size: dict = dataclasses.field(default_factory=lambda: {"n": 50_000, "d": 8, "k": 8, "iters": 100})
    digits_k: int = 10
    digits_reg_covars: list[float] = dataclasses.field(default_factory=lambda: [1e-3, 1e-2, 1e-1])


def _data(rng, s: Size):
    """``(X, labels)``: the labels give the true clusters for the plot."""
    return mixture_data(rng, s.n, s.d, s.k)


def _flops_per_iter(s: Size) -> float:
    # E-step: X @ L_k (2 n k d^2) ; M-step: sum r x x^T (2 n k d^2) plus O(n k d) terms.
    return 4.0 * s.n * s.k * s.d ** 2 + 10.0 * s.n * s.k * s.d


def run(p: Params, ctx) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(p.seed)
    out: dict = {"cpu_count": os.cpu_count(), "sizes": []}
    for s in ctx.progress(p.sizes, desc="gmm sizes"):
        X, labels = _data(rng, s)
        # One common start: scikit-learn's own k-means initialisation, handed to both.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk0 = GaussianMixture(s.k, covariance_type=p.covariance_type, max_iter=1, tol=0,
                                  random_state=p.seed).fit(X[: min(s.n, 20_000)])
        g0 = gmm.from_covariances(sk0.weights_, sk0.means_, sk0.covariances_, p.covariance_type)
        prec = np.linalg.inv(sk0.covariances_) if p.covariance_type in ("full", "tied") else 1 / sk0.covariances_

        def ours(X):
            return gmm.fit(jax.random.key(0), X, s.k, covariance_type=p.covariance_type, init=g0,
                           max_iter=s.iters, tol=0.0)

        (g, info), t_ours = timed(ours, X, repeat=p.repeat)

        def theirs(X):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return GaussianMixture(s.k, covariance_type=p.covariance_type, max_iter=s.iters, tol=0,
                                       weights_init=sk0.weights_, means_init=sk0.means_,
                                       precisions_init=prec).fit(X)

        sk, t_sk = timed(theirs, X, repeat=p.sklearn_repeat - 1) if p.sklearn_repeat > 1 else timed(theirs, X, repeat=0)
        sk_best = min(t_sk["best_s"], t_sk["first_s"]) if p.sklearn_repeat > 1 else t_sk["first_s"]
        rel = abs(float(info.lower_bound) - sk.lower_bound_) / abs(sk.lower_bound_)
        gflops = _flops_per_iter(s) * s.iters / t_ours["best_s"] / 1e9
        row = {"n": s.n, "d": s.d, "k": s.k, "iters": s.iters, "ours": t_ours, "sklearn_best_s": sk_best,
               "speedup": sk_best / t_ours["best_s"], "lower_bound_ours": info.lower_bound,
               "lower_bound_sklearn": sk.lower_bound_, "lower_bound_rel_diff": rel, "ours_gflops": gflops}
        out["sizes"].append(row)
        ctx.log.info("n=%d d=%d k=%d x%d: ours %.3fs (compile+run %.2fs), sklearn %.3fs -> %.1fx; "
                     "lower bounds rel diff %.1e; %.1f GFLOP/s", s.n, s.d, s.k, s.iters, t_ours["best_s"],
                     t_ours["first_s"], sk_best, row["speedup"], rel, gflops)
        if p.plot and s.d == 2:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(5, 4))
            sub = X[:: max(1, s.n // 5000)]
            ax.scatter(sub[:, 0], sub[:, 1], s=2, c=np.asarray(gmm.predict(g, sub)), cmap="tab10")
            for m, c in zip(np.asarray(g.means), np.asarray(gmm.model._full_cov(g))):
                w, V = np.linalg.eigh(c)
                t = np.linspace(0, 2 * np.pi, 100)
                e = (V * (2 * np.sqrt(w))) @ np.stack([np.cos(t), np.sin(t)])
                ax.plot(m[0] + e[0], m[1] + e[1], "k-", lw=1)
            true = np.stack([X[labels == j].mean(0) for j in np.unique(labels)])
            ax.plot(*true.T, "r*", ms=10, label="true cluster centres")
            ax.plot(*np.asarray(g.means).T, "k+", ms=10, label="fitted means (2-sigma ellipses)")
            ax.set(title=f"toolkit.gmm: n={s.n}, k={s.k}", xlabel="x1", ylabel="x2")
            ax.legend(fontsize=6)
            ctx.save_figure(fig, "gmm_2d.png")
    if p.bayesian:
        out["bayesian"] = gmm_bayesian.bayesian(p, ctx)
    if p.digits:
        out["digits"] = gmm_digits.digits(p, ctx)
    return out
