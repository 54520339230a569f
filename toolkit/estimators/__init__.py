"""scikit-learn compatible wrappers around :mod:`toolkit.gmm`.

:class:`GaussianMixture` and :class:`BayesianGaussianMixture` are drop-ins for
scikit-learn's classes of the same names: the same constructor parameters (plus
``shrinkage`` and ``shrinkage_target``), fitted attributes, methods, warnings and error
messages, with EM / variational Bayes running as one jitted loop. They compute in
float64 (scoped with ``jax.enable_x64``), like scikit-learn, whatever the global JAX
setting.
"""
from __future__ import annotations

from .bayesian import BayesianGaussianMixture
from .gaussian import GaussianMixture

__all__ = ["GaussianMixture", "BayesianGaussianMixture"]
