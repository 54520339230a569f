"""Wahba's problem for :meth:`so3.Rotation.align_vectors`: the rotation mapping vectors b onto a.

Finite weights: the SVD solution of ``min sum w |a - C b|^2`` (as :func:`so3.kabsch`,
without centring), with scipy's root-sum-of-squared-distances and sensitivity matrix
``mean(w) / zeta * (kappa I + B B^T)`` from the signed singular values of ``B = sum w a b^T``.

One infinite weight (or a single pair): that primary pair is aligned exactly, by the
smallest rotation taking ``b`` to ``a``, and the remaining freedom, a turn about ``a``, is
chosen in closed form to best align the other (secondary) pairs:
``phi = atan2(sum w a^.(c x a), sum w (a.c - (a.a^)(c.a^)))`` with ``c`` the secondaries
after the primary rotation. Near antiparallel vectors the primary rotation is a half
turn about an axis normal to ``a`` followed by a small rotation, so it keeps full
precision at angle pi.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from .dispatch import coerce, is_host, run, scalar_out
from .quaternions import _as_matrix, _from_orthogonal, _from_rotvec, _qmul

_FLIP = 1e-3  # within this of pi, go through a half turn


@jax.jit
def _wahba(a, b, w):
    B = jnp.einsum("n,ni,nj->ij", w, a, b)
    U, s, Vt = jnp.linalg.svd(B)
    d = jnp.where(jnp.linalg.det(U @ Vt) < 0, -1.0, 1.0).astype(B.dtype)
    s = s.at[2].multiply(d)
    U = U.at[:, 2].multiply(d)
    ssd = jnp.sum(w * jnp.sum(a * a + b * b, -1)) - 2 * jnp.sum(s)
    rssd = jnp.sqrt(jnp.maximum(ssd, 0.0))
    zeta = (s[0] + s[1]) * (s[1] + s[2]) * (s[2] + s[0])
    kappa = s[0] * s[1] + s[1] * s[2] + s[2] * s[0]
    sens = jnp.mean(w) / zeta * (kappa * jnp.eye(3, dtype=B.dtype) + B @ B.T)
    return _from_orthogonal(U @ Vt), rssd, sens


def _smallest_rotation(b, a):
    """Quaternion of the smallest rotation taking unit ``b`` to unit ``a``, exact near pi."""
    i = jnp.argmin(jnp.abs(a))
    p = jnp.cross(jnp.eye(3, dtype=a.dtype)[i], a)
    p = p / jnp.linalg.norm(p)  # a unit axis normal to a
    anti = jnp.arctan2(jnp.linalg.norm(jnp.cross(b, a)), jnp.dot(a, b)) > jnp.pi - _FLIP
    b_use = jnp.where(anti, 2 * jnp.dot(p, b) * p - b, b)  # after a half turn about p
    n = jnp.cross(b_use, a)
    s2 = jnp.dot(n, n)
    tiny = s2 < 1e-8
    s = jnp.sqrt(jnp.where(tiny, 1.0, s2))
    theta = jnp.arctan2(s, jnp.dot(a, b_use))
    t2 = jnp.where(tiny, s2, 0.0)  # theta^2 ~ s^2 there; theta/sin(theta) series in it
    scale = jnp.where(tiny, 1 + t2 / 6 + 7 * t2 * t2 / 360, theta / s)
    q = _from_rotvec(scale * n)
    half_turn = jnp.concatenate([p, jnp.zeros((1,), a.dtype)])
    return jnp.where(anti, _qmul(q, half_turn), q)


@jax.jit
def _wahba_primary(a, b, w, k):
    """Pair ``k`` aligned exactly, the turn about it fitted to the others (weights ``w``)."""
    a_p = a[k] / jnp.linalg.norm(a[k])
    b_p = b[k] / jnp.linalg.norm(b[k])
    q_pri = _smallest_rotation(b_p, a_p)
    is_k = jnp.arange(a.shape[0]) == k
    w_sec = jnp.where(is_k, 0.0, w).astype(a.dtype)
    c = b @ _as_matrix(q_pri).T
    sin_term = jnp.sum(w_sec * (jnp.cross(c, a) @ a_p))
    cos_term = jnp.sum(w_sec * (jnp.sum(a * c, -1) - (a @ a_p) * (c @ a_p)))
    # no secondaries: no turn (atan2(0, -0.0) would be pi)
    none = (sin_term == 0) & (cos_term == 0)
    phi = jnp.where(none, 0.0, jnp.arctan2(sin_term, jnp.where(none, 1.0, cos_term)))
    q = _qmul(_from_rotvec(phi * a_p), q_pri)
    resid = a - b @ _as_matrix(q).T
    # a lone finite-weight pair counts in the rssd, as in scipy; an infinite weight never does
    w_res = jnp.where(is_k & ((a.shape[0] > 1) | jnp.isinf(w)), 0.0, w).astype(a.dtype)
    rssd = jnp.sqrt(jnp.sum(w_res * jnp.sum(resid * resid, -1)))
    return q, rssd, jnp.full((3, 3), jnp.nan, a.dtype)


def align_vectors(a, b, weights=None, return_sensitivity=False):
    """Quaternion ``(4,)`` (scalar-last), rssd and sensitivity ``(3, 3)`` of the rotation
    that best maps ``b (N, 3)`` (or ``(3,)``) onto ``a``, with scipy's checks and messages."""
    host = is_host(a) and is_host(b) and (weights is None or is_host(weights))
    a0, b0 = coerce(a, "a", host=host), coerce(b, "b", host=host)
    if not host:
        dtype = jnp.result_type(a0.dtype, b0.dtype)
        a0, b0 = a0.astype(dtype), b0.astype(dtype)
    xnp = np if host else jnp
    a2, b2 = xnp.atleast_2d(a0), xnp.atleast_2d(b0)
    if a2.shape[-1] != 3:
        raise ValueError(f"Expected input `a` to have shape (3,) or (N, 3), got {tuple(a0.shape)}")
    if b2.shape[-1] != 3:
        raise ValueError(f"Expected input `b` to have shape (3,) or (N, 3), got {tuple(b0.shape)}")
    if a2.shape != b2.shape:
        raise ValueError(f"Expected inputs `a` and `b` to have same shapes, got {tuple(a0.shape)} and "
                         f"{tuple(b0.shape)} respectively.")
    if a2.ndim > 2:
        raise ValueError(f"Expected inputs `a` and `b` to have shape (3,) or (N, 3), got {tuple(a0.shape)} and "
                         f"{tuple(b0.shape)} respectively.")
    n = a2.shape[0]
    if weights is None:
        w = xnp.ones(n, a2.dtype)
    else:
        w = coerce(weights, "weights", host=host, dtype=None if host else a2.dtype)
        if w.ndim != 1:
            raise ValueError(f"Expected `weights` to be 1 dimensional, got shape {tuple(w.shape)}.")
        if n > 1 and w.shape[0] != n:
            raise ValueError(f"Expected `weights` to have number of values equal to number of input vectors, got "
                             f"{w.shape[0]} values and {n} vectors.")
        if is_concrete(w) and np.any(np.asarray(w) < 0):
            raise ValueError("`weights` may not contain negative values")
    if n == 1:
        primary = True
        k = 0
    elif is_concrete(w):
        inf = np.isinf(np.asarray(w))
        if inf.sum() > 1:
            raise ValueError("Only one infinite weight is allowed")
        primary, k = bool(inf.any()), int(np.argmax(inf))
    else:
        primary = None  # decided inside the trace
    if primary and return_sensitivity:
        raise ValueError("Cannot return sensitivity matrix with an infinite weight or one vector pair")
    if primary:
        if is_concrete(a2) and is_concrete(b2) and (not np.any(np.asarray(a2)[k]) or not np.any(np.asarray(b2)[k])):
            raise ValueError("Cannot align zero length primary vectors")
        q, rssd, sens = run(host, _wahba_primary, a2, b2, w, np.int32(k))
    elif primary is False:
        q, rssd, sens = run(host, _wahba, a2, b2, w)
    else:
        inf = jnp.isinf(w)
        k = jnp.argmax(inf)
        fin = _wahba(a2, b2, jnp.where(inf, 0.0, w))
        pri = _wahba_primary(a2, b2, w, k)
        bad = jnp.sum(inf) > 1
        q, rssd, sens = (jnp.where(bad, jnp.nan, jnp.where(jnp.any(inf), x, y)) for x, y in zip(pri, fin))
    return q, scalar_out(rssd), sens
