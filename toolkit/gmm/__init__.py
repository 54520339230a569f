"""Gaussian-mixture EM as pure functions over a :class:`GMM` pytree.

Covariance shapes follow scikit-learn:

==============  ===================  ==========================
covariance_type  covariances          precisions_cholesky
==============  ===================  ==========================
"full"          ``(k, d, d)``        ``(k, d, d)``
"tied"          ``(d, d)``           ``(d, d)``
"diag"          ``(k, d)``           ``(k, d)``
"spherical"     ``(k,)``             ``(k,)``
==============  ===================  ==========================

Everything runs in Cholesky-of-precision form (triangular solves, log-sum-exp), never
with explicit inverses or determinants. ``reg_covar`` is added to every variance, and
``shrinkage`` pulls each covariance toward a target (``shrinkage_target``: a scaled
identity, or the covariance's own diagonal); if a covariance is still
numerically singular (``reg_covar=0`` on rank-deficient data) a jitter of 1e-6 times
its mean variance is added before factorising, so EM never produces NaN.

:func:`fit_bayesian` (and :func:`fit_bayesian_batches`) fit scikit-learn's variational
Bayesian mixture on the same statistics and loop; its :class:`BayesianGMM` result is
accepted by the model functions.
"""
from __future__ import annotations

from .bayesian import PRIOR_TYPES, BayesianGMM, fit_bayesian
from .covariance import SHRINKAGE_TARGETS, weighted_moments
from .em import e_step, m_step
from .fitting import fit
from .model import aic, bic, from_covariances, log_prob, n_parameters, predict, predict_proba, sample, score
from .online import fit_online
from .sharding import shard_rows
from .sources import NpyBatches
from .streaming import fit_batches, fit_bayesian_batches
from .types import COVARIANCE_TYPES, GMM, INITS, FitInfo, RegularizationWarning

__all__ = [
    "GMM",
    "BayesianGMM",
    "FitInfo",
    "fit",
    "fit_bayesian",
    "fit_bayesian_batches",
    "PRIOR_TYPES",
    "SHRINKAGE_TARGETS",
    "e_step",
    "m_step",
    "log_prob",
    "score",
    "predict",
    "predict_proba",
    "sample",
    "bic",
    "aic",
    "weighted_moments",
    "n_parameters",
    "from_covariances",
    "shard_rows",
    "fit_batches",
    "fit_online",
    "NpyBatches",
    "COVARIANCE_TYPES",
    "INITS",
    "RegularizationWarning",
]
