"""Graph colourings for sparse derivatives, compiled with XLA.

* Jacobians: a distance-2 colouring of the columns (forward mode: columns sharing a
  colour share no row) or of the rows (reverse mode), i.e. a distance-1 colouring of the
  column graph ``A^T A`` or the row graph ``A A^T``. Greedy, largest degree first.
* Hessians: a *star* colouring of the symmetric pattern (Gebremedhin, Manne & Pothen,
  "What color is your Jacobian?", SIAM Review 2005, Algorithm 4.1): a distance-1
  colouring in which every path on four vertices uses at least three colours. Each
  non-zero ``H_ij`` is then read directly from the products ``H S``: from row i at j's
  colour when j is i's only neighbour of that colour, else from row j at i's colour.
  It needs far fewer colours than colouring the columns as if unsymmetric (2 instead of
  n for an arrowhead).

The greedy loops are sequential by nature, so instead of Python they run as one XLA
``while_loop`` over the vertices of a CSR graph; the arrays are padded to size buckets,
so patterns of similar sizes share one executable.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax import lax

from .._buckets import bucket
from .._checks import scoped_x64


def _first_free(mark, v):
    """Smallest colour c with ``mark[c] != v`` (not forbidden for vertex v)."""
    return lax.while_loop(lambda c: mark[c] == v, lambda c: c + 1, 0)


def _sequential(order, mark, forbid):
    """Colour vertices one by one in ``order``: ``forbid(v, colors, mark)`` stamps
    ``mark[c] = v`` for every colour c that v may not take; v gets the first free one."""
    n = order.shape[0]

    def vertex(k, state):
        colors, mark = state
        v = order[k]
        mark = forbid(v, colors, mark)
        return colors.at[v].set(_first_free(mark, v)), mark

    return lax.fori_loop(0, n, vertex, (jnp.full(n, -1, jnp.int32), mark))[0]


@jax.jit
def _greedy_kernel(indptr, indices, order, mark):
    """Distance-1 greedy colouring in ``order``; ``mark`` sized max degree + 2."""
    dummy = mark.shape[0] - 1  # uncoloured neighbours mark this slot, never a colour

    def forbid(v, colors, mark):
        def neighbour(e, mark):
            c = colors[indices[e]]
            return mark.at[jnp.where(c >= 0, c, dummy)].set(v)

        return lax.fori_loop(indptr[v], indptr[v + 1], neighbour, mark)

    return _sequential(order, mark, forbid)


@jax.jit
def _star_kernel(indptr, indices, order, mark):
    """Greedy star colouring (GMP 2005, Algorithm 4.1) in ``order``."""
    dummy = mark.shape[0] - 1

    def forbid(v, colors, mark):
        def stamp(mark, c, when):
            return mark.at[jnp.where(when & (c >= 0), c, dummy)].set(v)

        def over_w(e, mark):
            w = indices[e]
            cw = colors[w]
            mark = stamp(mark, cw, True)

            def over_x(f, mark):
                x = indices[f]
                cx = colors[x]
                relevant = (x != v) & (cx >= 0)

                def y_has_cw(g, found):
                    y = indices[g]
                    return found | ((y != w) & (colors[y] == cw))

                # w uncoloured: x's colour is forbidden outright; w coloured: only when a
                # neighbour y of x already has w's colour (v-w-x-y would be bicoloured)
                two_coloured = lax.cond(relevant & (cw >= 0),
                                        lambda: lax.fori_loop(indptr[x], indptr[x + 1], y_has_cw, False),
                                        lambda: False)
                return stamp(mark, cx, relevant & ((cw < 0) | two_coloured))

            return lax.fori_loop(indptr[w], indptr[w + 1], over_x, mark)

        return lax.fori_loop(indptr[v], indptr[v + 1], over_w, mark)

    return _sequential(order, mark, forbid)


@jax.jit
def _dsatur_kernel(indptr, indices, degree, mark):
    """DSATUR (Brelaz 1979): colour next the uncoloured vertex whose neighbours already
    use the most distinct colours (ties: larger degree, then lower index). The choice is
    the root of a max segment tree over packed int64 keys, updated in O(log n) when a
    neighbour's saturation grows."""
    n = degree.shape[0]
    N = 1 << max(1, int(np.ceil(np.log2(max(n, 2)))))
    levels = int(np.log2(N))
    dmax = mark.shape[0]
    dummy = mark.shape[0] - 1

    def key(sat, v):
        return (sat.astype(jnp.int64) * (dmax + 1) + degree[v]) * N + (N - 1 - v)

    def set_leaf(tree, v, value):
        i = N + v
        tree = tree.at[i].set(value)

        def up(_, state):
            tree, i = state
            i = i // 2
            return tree.at[i].set(jnp.maximum(tree[2 * i], tree[2 * i + 1])), i

        return lax.fori_loop(0, levels, up, (tree, i))[0]

    leaves = jnp.full(N, -1, jnp.int64).at[:n].set(key(jnp.zeros(n, jnp.int32), jnp.arange(n)))
    tree = _build(jnp.concatenate([jnp.full(N, -1, jnp.int64), leaves]), N)

    def step(_, state):
        # the root comes carried from the previous step: reading tree[1] here, before
        # the updates below, makes XLA copy the whole tree every step
        colors, sat, tree, mark, root = state
        v = (N - 1 - root % N).astype(jnp.int32)

        def neighbour(e, mark):
            c = colors[indices[e]]
            return mark.at[jnp.where(c >= 0, c, dummy)].set(v)

        mark = lax.fori_loop(indptr[v], indptr[v + 1], neighbour, mark)
        c = _first_free(mark, v)
        colors = colors.at[v].set(c)
        tree = set_leaf(tree, v, -1)

        def bump(e, state):
            sat, tree = state
            w = indices[e]
            # c is new to w unless another neighbour of w (v is one) already has it
            uses = lax.fori_loop(indptr[w], indptr[w + 1],
                                 lambda f, k: k + (colors[indices[f]] == c).astype(jnp.int32), 0)
            new = (colors[w] < 0) & (uses == 1)
            sat = sat.at[w].add(new.astype(jnp.int32))
            # unconditional (a cond would copy the tree): an uncoloured w gets its current key
            tree = set_leaf(tree, w, jnp.where(colors[w] < 0, key(sat[w], w), -1))
            return sat, tree

        sat, tree = lax.fori_loop(indptr[v], indptr[v + 1], bump, (sat, tree))
        return colors, sat, tree, mark, tree[1]

    colors = jnp.full(n, -1, jnp.int32)
    state = (colors, jnp.zeros(n, jnp.int32), tree, mark, tree[1])
    return lax.fori_loop(0, n, step, state)[0]


def _build(tree, N):
    """Fill the internal nodes of a max segment tree whose leaves are ``tree[N:]``."""
    size = N
    while size > 1:
        half = size // 2
        level = jnp.maximum(tree[size:2 * size:2], tree[size + 1:2 * size:2])
        tree = tree.at[half:size].set(level)
        size = half
    return tree


def _adjacency(G: sp.csr_matrix) -> sp.csr_matrix:
    """Bool CSR without the diagonal."""
    G = sp.csr_matrix(G, dtype=bool, copy=True)  # setdiag below must not touch the caller's
    G.setdiag(False)
    G.eliminate_zeros()
    G.sort_indices()
    return G


def _padded(G: sp.csr_matrix):
    """``(indptr, indices, N)``: G's CSR arrays (int32) padded to size buckets, so graphs
    of similar sizes share one executable; the padding vertices are isolated."""
    n = G.shape[0]
    N, E = bucket(n), bucket(max(G.nnz, 1))
    indptr = np.concatenate([G.indptr, np.full(N - n, G.indptr[-1])]).astype(np.int32)
    indices = np.concatenate([G.indices, np.zeros(E - G.nnz, np.int64)]).astype(np.int32)
    return indptr, indices, N


def _run(kernel, G: sp.csr_matrix, *, mark_size: int) -> np.ndarray:
    """Colour the graph G (symmetric bool CSR, no diagonal), largest degree first, with
    ``kernel``; the arrays padded to size buckets (padding vertices are isolated)."""
    n = G.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    indptr, indices, N = _padded(G)
    order = np.concatenate([np.argsort(-np.diff(G.indptr), kind="stable"), np.arange(n, N)]).astype(np.int32)
    mark = np.full(bucket(mark_size + 2), -1, np.int32)
    with jax.ensure_compile_time_eval(), scoped_x64():  # eager, even inside a user's jit
        colors = np.asarray(kernel(indptr, indices, order, mark))
    return colors[:n].astype(np.int64)


_DSATUR_MAX_DEGREE = 64  # DSATUR's updates cost O(degree^2) per vertex


def greedy_coloring(G: sp.csr_matrix, *, lower_bound: int = 0) -> np.ndarray:
    """Distance-1 colours ``(n,)`` of a symmetric graph (bool CSR).

    Greedy in largest-degree-first order first; when that misses ``lower_bound`` (a
    clique size, e.g. the densest row of a Jacobian) and degrees are bounded, DSATUR
    too, keeping the better: DSATUR finds the optimal 5 colours of a 2-D 5-point
    stencil where greedy orders find 7, at a few times greedy's cost.
    """
    G = _adjacency(G)
    n = G.shape[0]
    D = int(np.diff(G.indptr).max(initial=0))
    colors = _run(_greedy_kernel, G, mark_size=D + 1)
    if n == 0 or D > _DSATUR_MAX_DEGREE or colors.max() + 1 <= lower_bound:
        return colors
    indptr, indices, N = _padded(G)
    degree = np.diff(indptr).astype(np.int32)  # padding vertices: degree 0
    width = bucket(D + 2)
    with jax.ensure_compile_time_eval(), scoped_x64():  # eager, even inside a user's jit
        dsatur = np.asarray(_dsatur_kernel(indptr, indices, degree, np.full(width + 1, -1, np.int32)))[:n]
    return dsatur.astype(np.int64) if dsatur.max() < colors.max() else colors


def star_coloring(H: sp.csr_matrix) -> np.ndarray:
    """Star colours ``(n,)`` of a symmetric pattern (bool CSR)."""
    G = _adjacency(H)
    # a star colouring can need more colours than max degree + 1 only through the
    # distance-2 rule: bound by the distance-2 degree
    D = int(np.diff(G.indptr).max(initial=0))
    return _run(_star_kernel, G, mark_size=min(G.shape[0], D * D + D + 1))


def column_graph(A: sp.csr_matrix) -> sp.csr_matrix:
    """Columns conflict when they share a row: ``A^T A``."""
    A = sp.csr_matrix(A, dtype=bool)
    return (A.T @ A).tocsr()


def row_graph(A: sp.csr_matrix) -> sp.csr_matrix:
    """Rows conflict when they share a column: ``A A^T``."""
    A = sp.csr_matrix(A, dtype=bool)
    return (A @ A.T).tocsr()


def star_sources(H: sp.csr_matrix, colors: np.ndarray):
    """For each non-zero ``(i, j)`` of the symmetric pattern H (row-major), where to read
    it in ``B = H S``: ``(row, colour)``, either ``(i, c_j)`` or ``(j, c_i)``."""
    H = sp.csr_matrix(H, dtype=bool)
    H.sort_indices()
    coo = H.tocoo()
    i, j = coo.row.astype(np.int64), coo.col.astype(np.int64)
    G = _adjacency(H)
    n_colors = int(colors.max(initial=-1)) + 1
    onehot = sp.csr_matrix((np.ones(len(colors), np.int64), (np.arange(len(colors)), colors)),
                           shape=(len(colors), max(n_colors, 1)))
    count = (sp.csr_matrix(G, dtype=np.int64) @ onehot).tocsr()  # neighbours of i per colour
    direct = (i == j) | (np.asarray(count[i, colors[j]]).ravel() == 1)
    return np.where(direct, i, j), np.where(direct, colors[j], colors[i])
