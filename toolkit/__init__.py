"""toolkit: pure, jit-compiled numerical building blocks in JAX.

Modules: :mod:`toolkit.autodiff`, :mod:`toolkit.gmm`, :mod:`toolkit.conic`, :mod:`toolkit.so3`
(and :mod:`toolkit.estimators` for the scikit-learn compatible GaussianMixture and
BayesianGaussianMixture).
:func:`enable_compilation_cache` turns on JAX's persistent compilation cache (off by default).
"""
from . import autodiff, conic, gmm, so3
from ._cache import enable_compilation_cache

__all__ = ["autodiff", "conic", "gmm", "so3", "enable_compilation_cache"]
__version__ = "0.1.0"
