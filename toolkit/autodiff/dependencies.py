"""Dependency matrices for sparsity detection: per variable, a boolean CSR ``(size, n)``
whose row i holds the inputs its element i can depend on, and the vectorised operations
the primitive rules are made of (row gathers, unions, bool sparse products)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._checks import scoped_x64


def _eager():
    """Concrete evaluation in float64, also when called inside a user's ``jit`` (where
    JAX would otherwise stage these host computations into the user's trace)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(jax.ensure_compile_time_eval())
    stack.enter_context(scoped_x64())
    return stack

def _empty(rows: int, n: int) -> sp.csr_matrix:
    return sp.csr_matrix((rows, n), dtype=bool)


def _union(*mats):
    mats = [m for m in mats if m is not None and m.nnz]
    if not mats:
        return None
    out = mats[0]
    for m in mats[1:]:
        out = out + m
    return out.tocsr()


def _take_rows(D, idx):
    """Rows ``idx`` of CSR ``D`` (a negative index gives an empty row), vectorised."""
    idx = np.asarray(idx, np.int64).ravel()
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    lens = np.where(ok, np.diff(D.indptr)[safe], 0)
    indptr = np.concatenate([[0], np.cumsum(lens)])
    starts = D.indptr[safe]
    pos = np.repeat(starts - indptr[:-1], lens) + np.arange(indptr[-1])
    return sp.csr_matrix((np.ones(indptr[-1], bool), D.indices[pos], indptr), shape=(idx.size, D.shape[1]))


def _union_row(*deps):
    """One row ``(1, n)``: every dependency of every element of ``deps`` (None if none)."""
    u = _union(*deps)
    return None if u is None else sp.csr_matrix(u.max(axis=0))


def _repeat_row(row, shape):
    """Every element of ``shape`` depending on ``row``: the conservative answer."""
    return None if row is None else _take_rows(row, np.zeros(int(np.prod(shape, dtype=np.int64)), np.int64))


def _map_matrix(dst, src, n_dst, n_src):
    """Bool CSR ``(n_dst, n_src)`` with ones at ``(dst[k], src[k])`` for ``dst, src >= 0``."""
    dst, src = np.asarray(dst, np.int64).ravel(), np.asarray(src, np.int64).ravel()
    ok = (dst >= 0) & (src >= 0)
    m = sp.csr_matrix((np.ones(int(ok.sum()), bool), (dst[ok], src[ok])), shape=(n_dst, n_src))
    m.sum_duplicates()
    return m


def _mul(M, D):
    """Bool product ``M @ D`` (None for no dependencies)."""
    if D is None:
        return None
    out = (M @ D).tocsr()
    out.eliminate_zeros()
    return out if out.nnz else None


class _Val:
    """Abstract value: shape, dependency CSR ``(size, n)`` or None, and the concrete
    value when it is known without x (a constant)."""

    __slots__ = ("shape", "dtype", "dep", "const")

    def __init__(self, shape, dtype, dep=None, const=None):
        self.shape, self.dtype, self.dep, self.const = tuple(shape), dtype, dep, const

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


