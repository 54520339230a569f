"""Rotations in 3-D: axis-angle exp/log, Jacobians, Kabsch, robust fitting, averaging,
optimisation on SO(3) with optax (:mod:`toolkit.so3.manifold`), and scipy's
``Rotation`` / ``Slerp`` API as JAX pytrees (:mod:`toolkit.so3.rotation`, a thin layer
over these functions: numpy in, numpy out as scipy; JAX in, JAX out under jit/vmap/grad).

Conventions: rotation vectors ``v (..., 3)`` (axis times angle, radians), matrices
``R (..., 3, 3)``, quaternions ``q (..., 4)`` scalar-first ``wxyz``. Points are
``(..., N, 3)`` and rotate as ``p' = R p``. Every function broadcasts over leading
batch axes and works under ``jit``, ``vmap`` and ``grad``.

Precision: ``log(exp(v))`` and ``exp(log(R))`` round trips are exact to a few ulp in
every regime (angles 0, 1e-12, ..., pi - 1e-10, pi): about 1e-15 in float64 and
5e-7 in float32. Near 0 the trigonometric coefficients switch to Taylor series at a
point chosen per dtype (``_TAYLOR_SWITCH``); near pi the angle comes from
``atan2`` of a quaternion built by Shepperd's method, so nothing is clamped and
gradients stay finite and correct everywhere, including v = 0.
"""
from __future__ import annotations

from .averaging import mean
from .fitting import FitInfo, fit, kabsch
from .group import apply, compose, distance, inverse, project
from .manifold import RiemannianState, apply_updates, riemannian, rminus, rplus
from .jacobians import exp_derivative, left_jacobian, left_jacobian_inv, right_jacobian, right_jacobian_inv
from .maps import exp, from_quaternion, hat, log, to_quaternion, vee
from .rotation import Rotation
from .slerp import Slerp

__all__ = [
    "hat",
    "vee",
    "exp",
    "log",
    "exp_derivative",
    "right_jacobian",
    "left_jacobian",
    "right_jacobian_inv",
    "left_jacobian_inv",
    "compose",
    "inverse",
    "apply",
    "to_quaternion",
    "from_quaternion",
    "distance",
    "project",
    "kabsch",
    "fit",
    "FitInfo",
    "mean",
    "rplus",
    "rminus",
    "riemannian",
    "apply_updates",
    "RiemannianState",
    "Rotation",
    "Slerp",
]
