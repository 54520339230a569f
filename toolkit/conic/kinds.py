"""What a conic is: kind codes, result types, invariants, classification and the sign convention."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


ELLIPSE, HYPERBOLA, PARABOLA, DEGENERATE = 0, 1, 2, 3
KINDS = ("ellipse", "hyperbola", "parabola", "degenerate")
_FIT_KINDS = ("any", "ellipse", "hyperbola", "circle")
_RESIDUALS = ("exact", "sampson", "none")
_MIN_POINTS = 5
_MIN_CIRCLE_POINTS = 3


class ConicFit(NamedTuple):
    """Result of :func:`fit`; every field has the batch shape ``...`` of the input.

    coeffs: ``(..., 6)`` unit-norm ``[A, B, C, D, E, F]``.
    kind: ``(...,)`` int code (``ELLIPSE``, ``HYPERBOLA``, ``PARABOLA``, ``DEGENERATE``).
    residual: ``(...,)`` RMS orthogonal (geometric) distance of the points, in data units.
    ok: ``(...,)`` bool; False for degenerate data (collinear / identical / non-finite
      points, fewer than 5 distinct weighted points, bad weights) or a conic of the
      wrong kind, in which case ``coeffs`` are finite but meaningless; also False when
      the points sit so far from the origin, against their spread, that unit-norm
      coefficients in data coordinates lose more than 1e-3 relative precision (about
      ``eps * (offset / spread)^2``: float32 beyond ~100 spreads). Centre the data then.
    """

    coeffs: jax.Array
    kind: jax.Array
    residual: jax.Array
    ok: jax.Array


class ConicGeometry(NamedTuple):
    """Geometric description of a conic (from :func:`geometry`), batch shape ``...``.

    kind: int code. center: ``(..., 2)``. semi_axes: ``(..., 2)`` -- ellipse
    ``(major, minor)``; hyperbola ``(transverse, conjugate)``. angle: direction of
    the major / transverse axis, radians in ``(-pi/2, pi/2]``. eccentricity: ``< 1``
    ellipse, ``> 1`` hyperbola. foci: ``(..., 2, 2)``. asymptotes: ``(..., 2, 2)``
    unit directions of the two asymptotes through ``center`` (hyperbolas only).
    Fields that do not apply to the kind (asymptotes of an ellipse, everything but
    ``kind`` for parabolas and degenerate conics) are NaN.
    """

    kind: jax.Array
    center: jax.Array
    semi_axes: jax.Array
    angle: jax.Array
    eccentricity: jax.Array
    foci: jax.Array
    asymptotes: jax.Array


def kind_name(kind: ArrayLike) -> str | list:
    """String name(s) of integer kind code(s): ``kind_name(0) == "ellipse"``.

    >>> from toolkit import conic
    >>> conic.kind_name(conic.ELLIPSE), conic.kind_name(jnp.array([conic.HYPERBOLA, conic.PARABOLA]))
    ('ellipse', ['hyperbola', 'parabola'])
    """
    arr = np.asarray(kind)
    if arr.ndim == 0:
        return KINDS[int(arr)]
    return [kind_name(k) for k in arr]


def _invariants(theta):
    """(J = AC - B^2/4, centre, F' = value at the centre, scale of the terms in F')."""
    A, B, C, D, E, F = (theta[..., i] for i in range(6))
    J = A * C - 0.25 * B * B
    safe = J != 0
    Js = jnp.where(safe, J, 1.0)
    cx = jnp.where(safe, -(C * D - 0.5 * B * E) / (2.0 * Js), 0.0)
    cy = jnp.where(safe, -(A * E - 0.5 * B * D) / (2.0 * Js), 0.0)
    Fp = F + 0.5 * (D * cx + E * cy)
    term = (jnp.abs(F) + jnp.abs(D * cx) + jnp.abs(E * cy)
            + jnp.abs(A) * cx * cx + jnp.abs(B * cx * cy) + jnp.abs(C) * cy * cy)
    return J, jnp.stack([cx, cy], axis=-1), Fp, term


def _classify(theta, rtol, inv=None):
    """Kind codes ``(...)``; ``inv`` is ``_invariants(theta)`` when already computed."""
    J, _, Fp, term = _invariants(theta) if inv is None else inv
    A, B, C = theta[..., 0], theta[..., 1], theta[..., 2]
    quad = A * A + 0.5 * B * B + C * C
    parabolic = jnp.abs(J) <= rtol * quad
    # a parabola has no centre: test the determinant of the 3x3 conic matrix instead
    D, E, F = theta[..., 3], theta[..., 4], theta[..., 5]
    delta = (A * (C * F - 0.25 * E * E) - 0.5 * B * (0.5 * B * F - 0.25 * D * E)
             + 0.5 * D * (0.25 * B * E - 0.5 * C * D))
    norm3 = jnp.sum(theta * theta, axis=-1) ** 1.5
    flat = jnp.where(parabolic, jnp.abs(delta) <= rtol * norm3, jnp.abs(Fp) <= rtol * term)
    degenerate = flat | (quad == 0) | ~jnp.all(jnp.isfinite(theta), axis=-1)
    imaginary = (J > 0) & (Fp * (A + C) > 0)
    kind = jnp.where(J > 0, ELLIPSE, HYPERBOLA)
    kind = jnp.where(parabolic, PARABOLA, kind)
    kind = jnp.where(degenerate | imaginary, DEGENERATE, kind)
    return kind.astype(jnp.int32)


def _rtol(dtype):
    return 1e3 * float(jnp.finfo(dtype).eps)


def _unit(theta):
    """Scale coefficient vectors ``(..., 6)`` to unit norm (all-zero ones stay zero)."""
    n = jnp.linalg.norm(theta, axis=-1, keepdims=True)
    return theta / jnp.where(n > 0, n, 1.0)


def _canonical_sign(theta):
    """Unit norm, sign such that the value at the centre is negative (A + C > 0 if none)."""
    theta = _unit(theta)
    J, _, Fp, _ = _invariants(theta)
    A, C = theta[..., 0], theta[..., 2]
    key = jnp.where(jnp.abs(J) > _rtol(theta.dtype) * (A * A + C * C + theta[..., 1] ** 2), -Fp, A + C)
    return jnp.where((key < 0)[..., None], -theta, theta)
