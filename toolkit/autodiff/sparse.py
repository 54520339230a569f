"""Sparse Jacobians and Hessians by colouring: one JVP, VJP or HVP per colour.

The pattern is given (a dense bool array, a ``scipy.sparse`` matrix, a BCOO, or a
precomputed :class:`Coloring`) or detected from ``f``'s jaxpr (:mod:`.detect`). The
colouring runs once on the host (:mod:`.coloring`, compiled); evaluation is pure JAX,
so the ``*_fn`` forms return functions that ``jit`` once and are reused.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.typing import ArrayLike

from .._checks import is_concrete
from . import coloring as _col
from .detect import hessian_sparsity, jacobian_sparsity


class Coloring(NamedTuple):
    """A colouring of a sparsity pattern (host data, reusable across calls).

    Attributes:
      colors: colour of each column (``mode="fwd"``, ``(n_in,)``), row (``"rev"``,
        ``(n_out,)``) or variable (``"star"``, a Hessian's ``(n,)``).
      n_colors: number of colours (= JVPs, VJPs or HVPs per evaluation).
      rows, cols: ``(nnz,)`` the pattern's non-zeros (row-major order).
      shape: ``(n_out, n_in)``.
      mode: "fwd" (columns share no row), "rev" (rows share no column); for Hessians
        "star" (a star colouring) or "columns" (as "fwd", where that needs fewer).
      source_rows, source_colors: for Hessians, where each non-zero is read in ``H S``.
    """

    colors: np.ndarray
    n_colors: int
    rows: np.ndarray
    cols: np.ndarray
    shape: tuple[int, int]
    mode: str = "fwd"
    source_rows: np.ndarray | None = None
    source_colors: np.ndarray | None = None


def _pattern_csr(sparsity, where) -> sp.csr_matrix:
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
            raise ValueError(f"{where}: sparsity must be 2-D (n_out, n_in), got shape {arr.shape}")
        m = sp.coo_matrix(arr != 0)
    m = m.tocsr()
    m.sum_duplicates()
    m.eliminate_zeros()
    m = sp.csr_matrix(m, dtype=bool)
    m.sort_indices()
    return m


def _nonzeros(csr):
    coo = csr.tocoo()
    order = np.lexsort((coo.col, coo.row))
    return coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)


def _max_count(A, axis):
    """Most non-zeros in a row (axis=1) or a column (axis=0)."""
    return int(np.asarray(A.sum(axis=axis)).max(initial=0))


def jacobian_coloring(sparsity: ArrayLike, *, mode: str = "fwd") -> Coloring:
    """Colour a Jacobian pattern ``(n_out, n_in)`` for :func:`sparse_jacobian`.

    ``mode="fwd"``: columns that share no row share a colour (one JVP per colour);
    ``"rev"``: rows that share no column (one VJP per colour); ``"auto"``: whichever
    needs fewer colours. Greedy, largest degree first, compiled (a banded pattern of a
    million columns takes a fraction of a second).

    >>> from toolkit import autodiff
    >>> tridiagonal = np.eye(6, dtype=bool) | np.eye(6, k=1, dtype=bool) | np.eye(6, k=-1, dtype=bool)
    >>> autodiff.jacobian_coloring(tridiagonal).n_colors
    3
    """
    where = "autodiff.jacobian_coloring"
    if mode not in ("fwd", "rev", "auto"):
        raise ValueError(f"{where}: mode={mode!r} is not one of 'fwd', 'rev', 'auto'")
    A = _pattern_csr(sparsity, where)
    rows, cols = _nonzeros(A)
    options = []
    # the densest row (column) is a clique of columns (rows): no colouring has fewer
    if mode in ("fwd", "auto"):
        options.append(("fwd", _col.greedy_coloring(_col.column_graph(A), lower_bound=_max_count(A, 1))))
    if mode in ("rev", "auto"):
        options.append(("rev", _col.greedy_coloring(_col.row_graph(A), lower_bound=_max_count(A, 0))))
    chosen, colors = min(options, key=lambda o: (int(o[1].max(initial=-1)) + 1, o[0] != "fwd"))
    return Coloring(colors=colors, n_colors=int(colors.max(initial=-1)) + 1, rows=rows, cols=cols,
                    shape=tuple(A.shape), mode=chosen)


def hessian_coloring(sparsity: ArrayLike) -> Coloring:
    """Colour a symmetric Hessian pattern ``(n, n)`` for :func:`sparse_hessian`.

    A star colouring, which needs far fewer colours than colouring the columns as if H
    were unsymmetric (2 for an arrowhead, against n); where the columns need fewer
    anyway (a pattern without its diagonal), the column colouring. Every non-zero is
    read directly from one HVP.

    >>> from toolkit import autodiff
    >>> arrow = np.eye(6, dtype=bool); arrow[0] = arrow[:, 0] = True
    >>> autodiff.hessian_coloring(arrow).n_colors, autodiff.jacobian_coloring(arrow).n_colors
    (2, 6)
    """
    where = "autodiff.hessian_coloring"
    H = _pattern_csr(sparsity, where)
    if H.shape[0] != H.shape[1]:
        raise ValueError(f"{where}: a Hessian pattern must be square, got shape {H.shape}")
    H = sp.csr_matrix((H + H.T) > 0)  # symmetrise: H_ij and H_ji are the same derivative
    H.sort_indices()
    rows, cols = _nonzeros(H)
    star = _col.star_coloring(H)
    columns = _col.greedy_coloring(_col.column_graph(H), lower_bound=_max_count(H, 1))
    if columns.max(initial=-1) < star.max(initial=-1):
        # a pattern without its diagonal (x_i x_j terms only) can need fewer colours as
        # columns than as a star: read H_ij directly from row i at column j's colour
        return Coloring(colors=columns, n_colors=int(columns.max(initial=-1)) + 1, rows=rows, cols=cols,
                        shape=tuple(H.shape), mode="columns", source_rows=rows, source_colors=columns[cols])
    src_rows, src_colors = _col.star_sources(H, star)
    return Coloring(colors=star, n_colors=int(star.max(initial=-1)) + 1, rows=rows, cols=cols,
                    shape=tuple(H.shape), mode="star", source_rows=src_rows, source_colors=src_colors)


def _check_x(x, where):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{where}: x must be floating point to be differentiated, got dtype {x.dtype} "
                        f"(cast it with .astype(float))")
    return x


def _coloring_for(f, x, sparsity, where, *, hessian: bool) -> Coloring:
    if isinstance(sparsity, Coloring):
        return sparsity
    if sparsity is None:
        pattern = hessian_sparsity(f, x) if hessian else jacobian_sparsity(f, x)
    else:
        pattern = sparsity
    return hessian_coloring(pattern) if hessian else jacobian_coloring(pattern, mode="auto")


def _expected_shape(f, x, where, hessian):
    out = jax.eval_shape(f, x)
    if hessian:
        if int(np.prod(out.shape)) != 1:
            raise ValueError(f"{where}: f must return a scalar, got shape {tuple(out.shape)}")
        return (int(x.size), int(x.size))
    return (int(np.prod(out.shape)), int(x.size))


def _seeds(colors, n_colors, dtype):
    return jnp.asarray((colors[None, :] == np.arange(n_colors)[:, None]).astype(np.dtype(dtype)))


def _index_dtype(n):
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _bcoo(data, col: Coloring):
    from jax.experimental import sparse as jsparse

    dt = _index_dtype(max(col.shape))
    indices = np.stack([col.rows, col.cols], axis=1).astype(dt)  # a constant of the executable
    return jsparse.BCOO((data, jnp.asarray(indices)), shape=col.shape, indices_sorted=True, unique_indices=True)


def _decompress(compressed, colour_of, position_of, col):
    """Entry k of the result is ``compressed[colour_of[k], position_of[k]]``, read as one
    flat gather with precomputed (host) indices."""
    width = compressed.shape[1]
    flat = (colour_of.astype(np.int64) * width + position_of).astype(_index_dtype(compressed.size))
    return _bcoo(jnp.ravel(compressed)[flat], col)


def _evaluate_jacobian(f, x, col: Coloring):
    flat_f = lambda z: jnp.ravel(f(z.reshape(x.shape)))  # noqa: E731
    if col.mode == "rev":
        _, pull = jax.vjp(flat_f, jnp.ravel(x))
        seeds = _seeds(col.colors, col.n_colors, x.dtype)
        compressed = jax.vmap(lambda s: pull(s)[0])(seeds)  # (n_colors, n_in)
        return _decompress(compressed, col.colors[col.rows], col.cols, col)
    _, lin = jax.linearize(flat_f, jnp.ravel(x))
    compressed = jax.vmap(lin)(_seeds(col.colors, col.n_colors, x.dtype))  # (n_colors, n_out)
    return _decompress(compressed, col.colors[col.cols], col.rows, col)


def _evaluate_hessian(f, x, col: Coloring):
    grad = lambda z: jnp.ravel(jax.grad(lambda w: jnp.sum(f(w.reshape(x.shape))))(z))  # noqa: E731
    _, lin = jax.linearize(grad, jnp.ravel(x))  # forward over reverse: one HVP per colour
    B = jax.vmap(lin)(_seeds(col.colors, col.n_colors, x.dtype))  # (n_colors, n)
    return _decompress(B, col.source_colors, col.source_rows, col)


def _check_against_probes(f, x, M, where, *, hessian: bool, probes: int = 3):
    """ValueError when the sparse result misses non-zeros: it must reproduce dense JVP /
    HVP probes along a few random directions."""
    if not is_concrete(x):
        return
    rng = np.random.default_rng(0)
    flat = jnp.ravel(x)
    if hessian:
        g = lambda z: jnp.ravel(jax.grad(lambda w: jnp.sum(f(w.reshape(x.shape))))(z))  # noqa: E731
    else:
        g = lambda z: jnp.ravel(f(z.reshape(x.shape)))  # noqa: E731
    tol = 1e-8 if x.dtype == jnp.float64 else 1e-3
    for _ in range(probes):
        v = jnp.asarray(rng.normal(size=flat.shape), x.dtype)
        exact = np.asarray(jax.jvp(g, (flat,), (v,))[1])
        approx = np.asarray(M @ v)
        scale = np.abs(np.asarray(M.data)).max(initial=0.0) * float(jnp.abs(v).sum()) + np.abs(exact).max(initial=0.0)
        err = np.abs(exact - approx)
        if err.max(initial=0.0) > tol * max(scale, 1.0):
            i = int(np.argmax(err))
            what = "Hessian" if hessian else "Jacobian"
            raise ValueError(f"{where}: the sparsity pattern misses non-zeros of the {what}: along a random "
                             f"direction v, row {i} of ({what} v) is {exact[i]:.6g} but the sparse result gives "
                             f"{approx[i]:.6g}; detect the pattern (sparsity=None) or add the missing entries")


def sparse_jacobian(f: Callable, x: ArrayLike, sparsity=None, *, check: bool = False):
    """Jacobian of ``f`` at ``x`` as a ``jax.experimental.sparse.BCOO`` ``(f(x).size, x.size)``.

    One JVP per colour of the columns, or one VJP per colour of the rows, whichever
    needs fewer; memory ``O(n_colors * n + nnz)``, never ``O(n_out * n_in)``.

    Args:
      f: function from ``x.shape`` to any shape (both flattened for the pattern).
      x: point (real floating point).
      sparsity: None (detect it from f), a pattern (dense bool, ``scipy.sparse``, BCOO),
        or a :class:`Coloring` to reuse. Entries outside the pattern are taken as zero.
      check: compare the result with dense JVP probes along random directions and raise
        if the pattern misses non-zeros (concrete x only).
    Raises:
      ValueError: pattern shape not ``(f(x).size, x.size)`` (both named); ``check``
        found missing entries.
      TypeError: x is not real floating point.

    >>> from toolkit import autodiff
    >>> f = lambda x: x ** 2 + jnp.roll(x, 1)  # J = diag(2x) + a shifted identity
    >>> x = jnp.arange(1.0, 6.0)
    >>> bool(jnp.allclose(autodiff.sparse_jacobian(f, x).todense(), jax.jacfwd(f)(x)))
    True
    """
    return _sparse(f, x, sparsity, check, "autodiff.sparse_jacobian", hessian=False)


def sparse_hessian(f: Callable, x: ArrayLike, sparsity=None, *, check: bool = False):
    """Hessian of a scalar ``f`` at ``x`` as a symmetric BCOO ``(x.size, x.size)``.

    One Hessian-vector product (forward over reverse) per colour of a star colouring of
    the pattern, which needs fewer colours than treating H as unsymmetric.

    Args:
      f: scalar function of ``x``.
      x: point (real floating point).
      sparsity: None (detect), a pattern (symmetrised), or a :class:`Coloring` from
        :func:`hessian_coloring`.
      check: compare with dense HVP probes and raise if the pattern misses non-zeros.

    >>> from toolkit import autodiff
    >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)  # Rosenbrock-like chain: tridiagonal H
    >>> x = jnp.linspace(-1.0, 1.0, 6)
    >>> H = autodiff.sparse_hessian(f, x)
    >>> H.nse, bool(jnp.allclose(H.todense(), jax.hessian(f)(x)))
    (16, True)
    """
    return _sparse(f, x, sparsity, check, "autodiff.sparse_hessian", hessian=True)


def _sparse(f, x, sparsity, check, where, *, hessian):
    x = _check_x(x, where)
    shape = _expected_shape(f, x, where, hessian=hessian)
    col = _coloring_for(f, x, sparsity, where, hessian=hessian)
    modes = ("star", "columns") if hessian else ("fwd", "rev")
    if col.mode not in modes:
        source = "hessian_coloring" if hessian else "jacobian_coloring"
        raise ValueError(f"{where}: a Coloring here comes from {source} (mode {' or '.join(map(repr, modes))}), "
                         f"got mode {col.mode!r}")
    if tuple(col.shape) != shape:
        expected = "(x.size, x.size)" if hessian else "(f(x).size, x.size)"
        raise ValueError(f"{where}: sparsity shape {tuple(col.shape)} does not match {expected} = {shape}")
    M = (_evaluate_hessian if hessian else _evaluate_jacobian)(f, x, col)
    if check:
        _check_against_probes(f, x, M, where, hessian=hessian)
    return M


def sparse_jacobian_fn(f: Callable, x_example: ArrayLike, sparsity=None, *, check: bool = False) -> Callable:
    """``x -> sparse_jacobian(f, x)`` with the pattern detected (or given) and coloured
    once, at ``x_example``'s shape and dtype; the returned function is jitted, so every
    later call is one compiled evaluation. ``check`` probes once, at ``x_example``.

    >>> from toolkit import autodiff
    >>> jac = autodiff.sparse_jacobian_fn(lambda x: jnp.sin(x[1:] * x[:-1]), jnp.zeros(5))
    >>> jac(jnp.ones(5)).nse
    8
    """
    return _sparse_fn(f, x_example, sparsity, check, "autodiff.sparse_jacobian_fn", hessian=False)


def sparse_hessian_fn(f: Callable, x_example: ArrayLike, sparsity=None, *, check: bool = False) -> Callable:
    """``x -> sparse_hessian(f, x)``, detection and star colouring done once; jitted.

    >>> from toolkit import autodiff
    >>> hess = autodiff.sparse_hessian_fn(lambda x: jnp.sum(x[:-1] * x[1:] ** 2), jnp.zeros(4))
    >>> hess(jnp.ones(4)).todense().tolist()[1]
    [2.0, 2.0, 2.0, 0.0]
    """
    return _sparse_fn(f, x_example, sparsity, check, "autodiff.sparse_hessian_fn", hessian=True)


def _sparse_fn(f, x_example, sparsity, check, where, *, hessian):
    x_example = _check_x(x_example, where)
    col = _coloring_for(f, x_example, sparsity, where, hessian=hessian)
    evaluate = sparse_hessian if hessian else sparse_jacobian
    if check:
        evaluate(f, x_example, col, check=True)
    return jax.jit(lambda x: evaluate(f, x, col))
