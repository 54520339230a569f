"""Held-out log-likelihood on scikit-learn's digits: shrinkage targets against
scikit-learn's GaussianMixture. Called from :mod:`.gmm`.

64 pixels, several constant in the training split and varying in the held-out one, so
no candidate may rely on a tiny ``reg_covar``: each runs at its own best of
``reg_covars`` (by held-out score, the same rule for all)."""
from __future__ import annotations

import warnings

import numpy as np


CANDIDATES = {
    "sklearn": {},
    "oas_identity": {"shrinkage": "oas", "shrinkage_target": "identity"},
    "ledoit_wolf_identity": {"shrinkage": "ledoit_wolf", "shrinkage_target": "identity"},
    "oas_diagonal": {"shrinkage": "oas", "shrinkage_target": "diagonal"},
    "ledoit_wolf_diagonal": {"shrinkage": "ledoit_wolf", "shrinkage_target": "diagonal"},
}


def digits(p, ctx) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGM
    from sklearn.model_selection import train_test_split

    from toolkit.estimators import GaussianMixture

    X, y = load_digits(return_X_y=True)
    Xtr, Xte = train_test_split(X, test_size=0.2, stratify=y, random_state=0)
    out: dict = {"n_train": len(Xtr), "n_test": len(Xte), "k": p.digits_k,
                 "constant_train_pixels": int(np.sum(Xtr.std(0) == 0))}
    for name, kw in ctx.progress(list(CANDIDATES.items()), desc="digits"):
        scores = {}
        for r in p.digits_reg_covars:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est = (SkGM if name == "sklearn" else GaussianMixture)(
                    p.digits_k, covariance_type="full", reg_covar=r, random_state=p.seed, max_iter=200, **kw)
                scores[r] = float(est.fit(Xtr).score(Xte))
        best = max(scores, key=scores.get)
        out[name] = {"best_reg_covar": best, "heldout_loglik": scores[best],
                     "by_reg_covar": {str(k): v for k, v in scores.items()}}
        ctx.log.info("digits %s: held-out mean log-likelihood %.2f at reg_covar=%g", name, scores[best], best)
    best_other = max(out[n]["heldout_loglik"] for n in ("sklearn", "oas_identity", "ledoit_wolf_identity"))
    out["diagonal_minus_best_other"] = max(out["oas_diagonal"]["heldout_loglik"],
                                           out["ledoit_wolf_diagonal"]["heldout_loglik"]) - best_other
    return out
