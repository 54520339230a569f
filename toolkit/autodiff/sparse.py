"""Sparse Jacobians from a known pattern: column colouring, one JVP per colour."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ._util import _check_differentiable


# ----------------------------------------------------------------------------- sparse Jacobians


class Coloring(NamedTuple):
    """A distance-2 column colouring of a sparsity pattern (host data, reusable).

    Attributes:
      colors: ``(n_in,)`` int colour of each column; columns sharing a colour share no row.
      n_colors: number of colours (= JVPs per sparse Jacobian).
      rows, cols: ``(nnz,)`` the pattern's non-zeros (row-major order).
      shape: ``(n_out, n_in)``.
    """

    colors: np.ndarray
    n_colors: int
    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]


def _pattern_coo(sparsity):
    import scipy.sparse as sp
    from jax.experimental import sparse as jsparse

    if isinstance(sparsity, jsparse.BCOO):
        idx = np.asarray(sparsity.indices)
        m = sp.coo_matrix((np.ones(len(idx), bool), (idx[:, 0], idx[:, 1])), shape=sparsity.shape)
    elif sp.issparse(sparsity):
        m = sp.coo_matrix(sparsity)
        m = sp.coo_matrix((m.data != 0, (m.row, m.col)), shape=m.shape)
    else:
        arr = np.asarray(sparsity)
        if arr.ndim != 2:
            raise ValueError(f"autodiff.jacobian_coloring: sparsity must be 2-D (n_out, n_in), got {arr.shape}")
        m = sp.coo_matrix(arr != 0)
    m.eliminate_zeros()
    return m.tocsr()


def jacobian_coloring(sparsity: ArrayLike) -> Coloring:
    """Greedy distance-2 colouring of the columns of a sparsity pattern (on the host).

    Two columns conflict when some row has non-zeros in both; conflicting columns get
    different colours, so each colour's columns can be probed by one JVP with the sum
    of their basis vectors. Columns are visited largest-degree first, which keeps the
    count near the maximum number of non-zeros in a row for banded patterns.

    Args:
      sparsity: ``(n_out, n_in)`` dense bool array, ``scipy.sparse`` matrix or BCOO.
    Returns:
      :class:`Coloring`.

    >>> from toolkit import autodiff
    >>> tridiagonal = np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool) | np.eye(6, k=-1, dtype=bool)
    >>> autodiff.jacobian_coloring(tridiagonal).n_colors
    3
    """
    csr = _pattern_coo(sparsity)
    csc = csr.tocsc()
    n_in = csr.shape[1]
    colors = np.full(n_in, -1, dtype=np.int64)
    degree = np.diff(csc.indptr)
    order = np.argsort(-degree, kind="stable")
    mark = np.full(n_in + 1, -1, dtype=np.int64)  # mark[c] == j: colour c is forbidden for column j
    for j in order:
        rows = csc.indices[csc.indptr[j]:csc.indptr[j + 1]]
        for r in rows:
            nb = csr.indices[csr.indptr[r]:csr.indptr[r + 1]]
            c = colors[nb]
            mark[c[c >= 0]] = j
        c = 0
        while mark[c] == j:
            c += 1
        colors[j] = c
    coo = csr.tocoo()
    order_nz = np.lexsort((coo.col, coo.row))
    n_colors = int(colors.max(initial=-1) + 1)
    return Coloring(colors=colors, n_colors=n_colors, rows=coo.row[order_nz].astype(np.int64),
                    cols=coo.col[order_nz].astype(np.int64), shape=tuple(csr.shape))


def sparse_jacobian(f: Callable, x: ArrayLike, sparsity: ArrayLike | Coloring) -> jax.Array:
    """Jacobian of ``f`` at ``x`` as a ``jax.experimental.sparse.BCOO``, by graph colouring.

    Cost: one JVP per colour (``jacobian_coloring``); memory ``O(n_colors * n_out + nnz)``,
    never ``O(n_out * n_in)``. Entries outside the pattern are assumed zero (a wrong
    pattern gives a wrong Jacobian: entries of columns sharing a colour are summed).

    Args:
      f: function from ``x.shape`` to any shape (both flattened for the pattern).
      x: point.
      sparsity: ``(f(x).size, x.size)`` pattern (dense bool, scipy.sparse, BCOO) or a
        precomputed :class:`Coloring` to reuse across calls.
    Returns:
      BCOO of shape ``(f(x).size, x.size)``.
    Raises:
      ValueError: pattern shape does not match ``(f(x).size, x.size)``.
      TypeError: x is not floating point.

    >>> from toolkit import autodiff
    >>> f = lambda x: x ** 2 + jnp.roll(x, 1)  # J = diag(2x) + a shifted identity
    >>> S = np.eye(5, dtype=bool) | np.roll(np.eye(5, dtype=bool), 1, axis=0)
    >>> x = jnp.arange(1.0, 6.0)
    >>> bool(jnp.allclose(autodiff.sparse_jacobian(f, x, S).todense(), jax.jacfwd(f)(x)))
    True
    """
    from jax.experimental import sparse as jsparse

    x = jnp.asarray(x)
    _check_differentiable(x, "x", "autodiff.sparse_jacobian")
    col = sparsity if isinstance(sparsity, Coloring) else jacobian_coloring(sparsity)
    out = jax.eval_shape(f, x)
    n_out, n_in = int(np.prod(out.shape)), int(x.size)
    if col.shape != (n_out, n_in):
        raise ValueError(f"autodiff.sparse_jacobian: sparsity shape {col.shape} does not match "
                         f"(f(x).size, x.size) = {(n_out, n_in)}")
    seeds = (col.colors[None, :] == np.arange(col.n_colors)[:, None]).astype(np.dtype(x.dtype))
    flat_f = lambda z: jnp.ravel(f(z.reshape(x.shape)))  # noqa: E731
    _, lin = jax.linearize(flat_f, jnp.ravel(x))
    compressed = jax.vmap(lin)(jnp.asarray(seeds))  # (n_colors, n_out)
    data = compressed[col.colors[col.cols], col.rows]
    indices = jnp.stack([jnp.asarray(col.rows), jnp.asarray(col.cols)], axis=1)
    return jsparse.BCOO((data, indices), shape=(n_out, n_in), indices_sorted=True, unique_indices=True)
