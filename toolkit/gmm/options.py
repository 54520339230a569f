"""Validation of the fitting options (shrinkage needs the covariance tables, so it lives
here rather than in :mod:`.types`, which :mod:`.covariance` imports)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import check_choice, check_positive_int, check_real
from .covariance import COVARIANCE, SHRINKAGE, SHRINKAGE_TARGETS, Shrinkage
from .types import COVARIANCE_TYPES, GMM, INITS


def _check_shrinkage(shrinkage, covariance_type, where, target="identity"):
    """The checked :class:`~toolkit.gmm.covariance.Shrinkage` (or None for none)."""
    check_choice(target, SHRINKAGE_TARGETS, "shrinkage_target", where)
    if shrinkage is None:
        return None
    if isinstance(shrinkage, Shrinkage):  # already checked (internal callers)
        return shrinkage
    if isinstance(shrinkage, str):
        check_choice(shrinkage, tuple(SHRINKAGE), "shrinkage", where)
        if not COVARIANCE[covariance_type].matrix:
            raise ValueError(f"{where}: shrinkage={shrinkage!r} needs covariance_type 'full' or 'tied', "
                             f"got {covariance_type!r} (use a float shrinkage for 'diag')")
        return Shrinkage(shrinkage, target)
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0 <= shrinkage <= 1:
        raise ValueError(f"{where}: shrinkage must be None, 'ledoit_wolf', 'oas' or a float in [0, 1], "
                         f"got {shrinkage!r}")
    return Shrinkage(float(shrinkage), target)


def _check_fit_options(where, d, dtype, n_components, covariance_type, reg_covar, shrinkage, init, n_init,
                       max_iter, shrinkage_target="identity"):
    """Validate fit's options; returns ``(shrinkage (a Shrinkage or None), gmm_init or None)``."""
    check_positive_int(n_components, "n_components", where)
    check_choice(covariance_type, COVARIANCE_TYPES, "covariance_type", where)
    shrinkage = _check_shrinkage(shrinkage, covariance_type, where, shrinkage_target)
    check_real(reg_covar, "reg_covar", where)
    check_positive_int(n_init, "n_init", where)
    check_positive_int(max_iter, "max_iter", where)
    if isinstance(init, GMM):
        if init.covariance_type != covariance_type or init.means.shape != (n_components, d):
            raise ValueError(f"{where}: init GMM has covariance_type {init.covariance_type!r} and means "
                             f"{tuple(init.means.shape)}; expected {covariance_type!r} and {(n_components, d)}")
        return shrinkage, jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), init)
    check_choice(init, INITS, "init", where)
    return shrinkage, None
