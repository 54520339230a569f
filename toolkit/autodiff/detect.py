"""Jacobian and Hessian sparsity by abstract interpretation of a jaxpr.

``f`` is traced once to a jaxpr (``x`` gives only shape and dtype). Every variable then
carries, instead of a value, its *dependency matrix*: a boolean ``scipy.sparse`` CSR of
shape ``(size, n_in)`` whose row ``i`` holds the inputs its element ``i`` can depend on.
Each primitive maps its operands' matrices to its results' with vectorised sparse
operations (a row gather for slicing, reshaping, gathers and scatters; a sparse product
for reductions, cumulative ops, dot products and convolutions; a row union for
elementwise ops), so the cost grows with the number of dependencies, not with n^2.

For Hessians a global pattern ``H (n_in, n_in)`` also accumulates, at every nonlinear
operation, the pairs of inputs it couples: ``D^T D`` for a nonlinear unary function of
an element with dependencies D, ``D_a^T D_b`` (and its transpose) for a product of two
elements. Linear operations (sums, slices, products with constants) add nothing, so a
linear term never appears in the Hessian pattern.

Values known at trace time (constants, iota, index arithmetic) are propagated too, so
gathers and scatters with static indices, products with sparse constant matrices and
convolutions with constant kernels are exact. Control flow: ``cond`` takes the union of
its branches (the branch itself where the index is known), ``scan`` runs its body once
per step (exact for time steppers; it stops early once the carry stops changing),
``while_loop`` iterates its body to a fixed point over the carry. Calls (``jit``,
``custom_jvp``/``custom_vjp``, ``checkpoint``) are interpreted inside.

Conservative by construction: a primitive without a rule makes every output element
depend on every dependency of its inputs, with a warning naming it.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.extend.core import Literal

from .dependencies import _Val, _eager, _empty, _float, _repeat_row, _union_row
from .detect_rules import _CALLS, _RULES, _ZERO_DERIVATIVE


class _Interpreter:
    def __init__(self, n: int, hessian: bool, where: str):
        self.n, self.hessian, self.where = n, hessian, where
        self.H = _empty(n, n) if hessian else None
        self.warned: set[str] = set()

    # -- Hessian contributions --------------------------------------------------------
    def _couple(self, A, B=None):
        """Add ``A^T B + B^T A`` (``A^T A`` when B is None) to the Hessian pattern."""
        if not self.hessian or A is None:
            return
        if B is None:
            self.H = (self.H + (A.T @ A)).tocsr()
        elif B is not None:
            P = (A.T @ B).tocsr()
            self.H = (self.H + P + P.T).tocsr()

    # -- the interpreter --------------------------------------------------------------
    def run(self, jaxpr, consts, args: list[_Val]) -> list[_Val]:
        env: dict = {}

        def read(v):
            if isinstance(v, Literal):
                val = np.asarray(v.val)
                return _Val(val.shape, val.dtype, None, val)
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            arr = np.asarray(c) if not isinstance(c, _Val) else None
            env[v] = c if isinstance(c, _Val) else _Val(arr.shape, arr.dtype, None, arr)
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, o in zip(eqn.outvars, outs):
                if not _float(o.dtype):
                    o.dep = None
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn, ins: list[_Val]) -> list[_Val]:
        name = eqn.primitive.name
        avals = [v.aval for v in eqn.outvars]
        if all(i.dep is None for i in ins):
            consts = None
            if all(i.const is not None for i in ins) and name not in ("scan", "while", "cond"):
                consts = self._evaluate(eqn, ins)
            return [_Val(a.shape, a.dtype, None, None if consts is None else consts[k]) for k, a in enumerate(avals)]
        if name in _ZERO_DERIVATIVE:
            return [_Val(a.shape, a.dtype) for a in avals]
        rule = _RULES.get(name)
        if rule is None:
            if name in _CALLS:
                return self._call(eqn, ins)
            return self._unknown(name, ins, avals)
        deps = rule(self, eqn, ins, avals)
        return [_Val(a.shape, a.dtype, d) for a, d in zip(avals, deps)]

    def _evaluate(self, eqn, ins):
        try:
            with _eager():
                out = eqn.primitive.bind(*[jnp.asarray(i.const) for i in ins], **eqn.params)
            out = out if eqn.primitive.multiple_results else [out]
            return [np.asarray(o) for o in out]
        except Exception:  # a constant we cannot evaluate is simply unknown
            return None

    def _unknown(self, name, ins, avals):
        if name not in self.warned:
            self.warned.add(name)
            warnings.warn(f"{self.where}: primitive {name!r} is not understood; assuming every output element "
                          "depends on every input of it (a conservative, possibly dense pattern)", stacklevel=4)
        row = _union_row(*[i.dep for i in ins])
        self._couple(row)
        return [_Val(a.shape, a.dtype, _repeat_row(row, a.shape)) for a in avals]

    def _call(self, eqn, ins):
        p = eqn.params
        sub = p.get("jaxpr", p.get("call_jaxpr", p.get("fun_jaxpr")))
        if sub is None:
            return self._unknown(eqn.primitive.name, ins, [v.aval for v in eqn.outvars])
        inner, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, [])
        outs = self.run(inner, consts, ins)
        return [_Val(o.shape, o.dtype, o.dep, o.const) for o in outs]



# ------------------------------------------------------------------------- entry points
def _check_input(x, where):
    dtype = jnp.dtype(x.dtype if hasattr(x, "dtype") else np.result_type(x))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{where}: argument 'x' must be real floating point to be differentiable, got dtype {dtype}")
    return jax.ShapeDtypeStruct(tuple(np.shape(x)), dtype)


def _trace(f, x, where):
    spec = _check_input(x, where)
    closed = jax.make_jaxpr(f)(spec)
    n = int(np.prod(spec.shape, dtype=np.int64))
    return closed, spec, n


def _detect(f, x, where, hessian):
    closed, spec, n = _trace(f, x, where)
    interp = _Interpreter(n, hessian, where)
    arg = _Val(spec.shape, spec.dtype, sp.identity(n, dtype=bool, format="csr"))
    outs = interp.run(closed.jaxpr, closed.consts, [arg])
    return interp, outs, n


def jacobian_sparsity(f, x) -> sp.csr_matrix:
    """Boolean pattern ``(f(x).size, x.size)`` of f's Jacobian, detected by tracing f.

    ``x`` supplies only the shape and dtype. The pattern is conservative: it never misses
    an entry that can be non-zero at any point (a primitive without a rule makes its
    outputs depend on all of its inputs, with a warning naming it).

    Args:
      f: function of one array returning one array.
      x: an array, or anything with ``shape`` and ``dtype`` (``jax.ShapeDtypeStruct``).
    Returns:
      ``scipy.sparse.csr_matrix`` of bools.
    Raises:
      TypeError: x is not real floating point (integer and complex inputs are not
        differentiable here).

    >>> from toolkit import autodiff
    >>> f = lambda x: x[1:] * x[:-1]  # each output couples two neighbours
    >>> autodiff.jacobian_sparsity(f, jnp.zeros(4)).toarray().astype(int).tolist()
    [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    """
    where = "autodiff.jacobian_sparsity"
    _, outs, n = _detect(f, x, where, hessian=False)
    if len(outs) != 1:
        raise TypeError(f"{where}: f must return one array, got {len(outs)} outputs")
    out = outs[0]
    dep = out.dep if out.dep is not None else _empty(out.size, n)
    dep = dep.tocsr()
    dep.sort_indices()
    return dep


def hessian_sparsity(f, x) -> sp.csr_matrix:
    """Symmetric boolean pattern ``(x.size, x.size)`` of the Hessian of a scalar ``f``.

    Tracks second-order interactions only: a term linear in x adds nothing, ``x_i * x_j``
    adds ``(i, j)`` and ``(j, i)``, ``sin(x_i + x_j)`` the 2x2 block of i and j.
    Conservative as :func:`jacobian_sparsity`.

    >>> from toolkit import autodiff
    >>> f = lambda x: jnp.sum(x[:-1] * x[1:]) + jnp.sum(3.0 * x)  # the linear term adds nothing
    >>> autodiff.hessian_sparsity(f, jnp.zeros(3)).toarray().astype(int).tolist()
    [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    """
    where = "autodiff.hessian_sparsity"
    interp, outs, n = _detect(f, x, where, hessian=True)
    if len(outs) != 1 or outs[0].size != 1:
        shapes = [o.shape for o in outs]
        raise ValueError(f"{where}: f must return a scalar, got outputs of shapes {shapes}")
    H = interp.H.tocsr()
    H = ((H + H.T) > 0).tocsr()
    H.eliminate_zeros()
    H.sort_indices()
    return H

