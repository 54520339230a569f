"""``gradcheck``: autodiff against central finite differences in float64."""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._checks import scoped_x64

# ----------------------------------------------------------------------------- gradcheck

_GRADCHECK_EPS = {jnp.dtype("float64"): 1e-6, jnp.dtype("float32"): 1e-3}

class GradcheckReport(NamedTuple):
    """Result of :func:`gradcheck`.

    Attributes:
      ok: every checked mode agrees with central differences within tolerance.
      max_abs_error, max_rel_error: worst differences over the checked modes.
      worst_index: ``(output flat index, input flat index)`` of the worst entry.
      worst: human description of the worst entry (mode, indices, both values).
      analytic: reverse-mode Jacobian ``(n_out, n_in)`` over the flattened in/outputs.
      numeric: central-difference Jacobian ``(n_out, n_in)``.
      forward: forward-mode Jacobian, or None when f has no forward mode
        (a ``jax.custom_vjp`` function).
      modes_checked: ("rev", "fwd") or ("rev",).
      note: why a mode was skipped, else "".
    """

    ok: bool
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple[int, int]
    worst: str
    analytic: np.ndarray
    numeric: np.ndarray
    forward: np.ndarray | None
    modes_checked: tuple[str, ...]
    note: str

def _check_tolerances(eps, atol, rtol):

    for name, value, positive in (("eps", eps, True), ("atol", atol, False), ("rtol", rtol, False)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
                or value < 0 or (positive and value == 0):
            want = "a finite number > 0" if positive else "a finite number >= 0"
            raise ValueError(f"autodiff.gradcheck: {name} must be {want}, got {value!r}")

def _flat_index(shapes_tree, k):
    """Map a flat index over a pytree of arrays to 'leaf[i, j]' text."""
    leaves, tree = jax.tree_util.tree_flatten(shapes_tree)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(shapes_tree)[0]]
    for path, leaf in zip(paths, leaves):
        n = int(np.prod(leaf.shape))
        if k < n:
            idx = np.unravel_index(k, leaf.shape) if leaf.shape else ()
            return f"{path}[{', '.join(str(int(i)) for i in idx)}]"
        k -= n
    return "?"

def gradcheck(f: Callable, *args, eps: float | None = None, atol: float | None = None,
              rtol: float | None = None) -> GradcheckReport:
    """Compare reverse- and forward-mode derivatives of ``f`` with central differences.

    Float inputs are promoted to float64 and everything is evaluated in float64 (a
    scoped ``enable_x64``), so the finite differences are meaningful even for float32
    code. A ``jax.custom_vjp`` function has no forward mode: only reverse mode is
    checked and the report says so in ``note``.

    Args:
      f: function of arrays (pytrees allowed) returning arrays.
      *args: the point.
      eps: central-difference step; default per the dtype f computes in after the
        promotion: 1e-6 when its outputs are float64, 1e-3 when f itself casts to
        float32 (then atol/rtol default to 1e-2 as well).
      atol, rtol: entry passes if ``|analytic - numeric| <= atol + rtol |numeric|``;
        defaults 1e-5 and 1e-3 (as torch.autograd.gradcheck).
    Returns:
      :class:`GradcheckReport`. A NaN or inf in either Jacobian fails the check (``ok``
      False, and ``worst`` names the first such entry).
    Raises:
      ValueError: ``eps`` not a finite number > 0, or ``atol``/``rtol`` not finite and >= 0.

    >>> gradcheck(lambda x: jnp.sin(x) * x, jnp.array([0.5, 1.0])).ok
    True
    """
    _check_tolerances(eps, atol, rtol)
    user_tol = atol is not None or rtol is not None
    atol = 1e-5 if atol is None else atol
    rtol = 1e-3 if rtol is None else rtol
    with scoped_x64():  # gradcheck compares in float64 whatever the global setting
        args64 = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.inexact)
            or jnp.issubdtype(jnp.result_type(a), jnp.integer) else a, args)
        flat, unravel = ravel_pytree(args64)
        out_struct = jax.eval_shape(f, *args64)
        low = any(jnp.dtype(o.dtype) == jnp.float32 for o in jax.tree_util.tree_leaves(out_struct))
        if eps is None:
            eps = _GRADCHECK_EPS[jnp.dtype("float32" if low else "float64")]
        if low and not user_tol:
            atol, rtol = max(atol, 1e-2), max(rtol, 1e-2)

        def g(x):
            return ravel_pytree(jax.tree_util.tree_map(lambda o: o.astype(jnp.float64), f(*unravel(x))))[0]

        n_in = flat.size
        basis = jnp.eye(n_in, dtype=flat.dtype)
        numeric = jax.jit(jax.vmap(lambda e: (g(flat + eps * e) - g(flat - eps * e)) / (2 * eps)))(basis).T
        rev = jax.jit(jax.jacrev(g))(flat)
        note, fwd = "", None
        try:
            fwd = jax.jit(jax.jacfwd(g))(flat)
        except TypeError as exc:
            if "custom_vjp" not in str(exc):
                raise
            note = "f uses jax.custom_vjp, which has no forward mode: only reverse mode was checked"
        numeric, rev = np.asarray(numeric), np.asarray(rev)
        fwd = None if fwd is None else np.asarray(fwd)
    worst_val, worst = -np.inf, None
    max_abs = max_rel = 0.0
    modes = [("rev", rev)] + ([("fwd", fwd)] if fwd is not None else [])
    for name, J in modes:
        # a NaN or inf on either side is a failure, never skipped: it is the worst entry
        bad = ~(np.isfinite(J) & np.isfinite(numeric))
        err = np.where(bad, np.inf, np.abs(J - numeric))
        excess = np.where(bad, np.inf, err - (atol + rtol * np.abs(numeric)))
        rel = np.where(bad, np.inf, err / np.maximum(np.where(bad, 1.0, np.abs(numeric)), atol))
        max_abs = max(max_abs, float(err.max(initial=0.0)))
        max_rel = max(max_rel, float(rel.max(initial=0.0)))
        if err.size:
            k = np.unravel_index(int(np.argmax(excess)), err.shape)
            if excess[k] > worst_val:
                worst_val, worst = float(excess[k]), (name, int(k[0]), int(k[1]), float(J[k]), float(numeric[k]))
    if worst is None:
        return GradcheckReport(True, 0.0, 0.0, (0, 0), "no entries", rev, numeric, fwd,
                               tuple(m for m, _ in modes), note)
    name, i, j, a, nval = worst
    text = (f"{name}-mode d out{_flat_index(out_struct, i)} / d args{_flat_index(args64, j)}: "
            f"analytic {a:.10g}, numeric {nval:.10g}")
    return GradcheckReport(bool(worst_val <= 0), max_abs, max_rel, (i, j), text, rev, numeric, fwd,
                           tuple(m for m, _ in modes), note)

def assert_gradcheck(f: Callable, *args, **kwargs) -> GradcheckReport:
    """:func:`gradcheck`, raising AssertionError that names the worst entry on failure.

    >>> from toolkit import autodiff
    >>> autodiff.assert_gradcheck(jnp.sin, jnp.array([0.1, 0.2])).ok
    True
    """
    rep = gradcheck(f, *args, **kwargs)
    if not rep.ok:
        raise AssertionError(f"gradcheck failed: {rep.worst} (max abs error {rep.max_abs_error:.3g}, "
                             f"max rel error {rep.max_rel_error:.3g})")
    return rep
