"""toolkit: pure, jit-compiled numerical building blocks in JAX.

Modules: :mod:`toolkit.autodiff`, :mod:`toolkit.gmm`, :mod:`toolkit.conic`, :mod:`toolkit.so3`
(and :mod:`toolkit.estimators` for the scikit-learn compatible GaussianMixture).
"""
from . import autodiff, conic, gmm, so3

__all__ = ["autodiff", "conic", "gmm", "so3"]
__version__ = "0.1.0"
