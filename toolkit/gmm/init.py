"""Initialisation: k-means++, k-means (Lloyd) and random responsibilities."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


# ----------------------------------------------------------------------------- initialisation


def _draw(key, p, block=1024):
    """One index drawn with probability proportional to ``p (n,) >= 0`` by inverting the CDF.

    Zero-weight rows never change the draw, wherever they are, so a padded or sharded
    array gives the same index as the original. The CDF is taken in two levels (sums of
    ``block`` rows, then one block) rather than by a cumsum over all rows: XLA
    partitions a long cumsum over sharded rows very badly (seconds for 1e5 rows).
    """
    n = p.shape[0]
    B = -(-n // block)
    q = jnp.pad(p, (0, B * block - n)).reshape(B, block)
    c = jnp.cumsum(jnp.sum(q, 1))
    u = jax.random.uniform(key, (), p.dtype) * c[-1]
    b = jnp.minimum(jnp.sum(c <= u), B - 1)
    u = u - jnp.where(b > 0, c[jnp.maximum(b - 1, 0)], 0.0)
    within = jnp.cumsum(jax.nn.one_hot(b, B, dtype=p.dtype) @ q)  # the chosen block's rows
    i = b * block + jnp.minimum(jnp.sum(within <= u), block - 1)
    last = jnp.max(jnp.where(p > 0, jnp.arange(n), 0))
    return jnp.minimum(i, last)


def _row_uniform(key, rows, k):
    """``(len(rows), k)`` uniforms, row r from ``fold_in(key, r)``: the same numbers for a
    row whether it is drawn in memory, in a batch or on a shard."""
    return jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(key, r), (k,)))(rows)


def _kmeans_pp(key, X, sw, k):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant), weighted.

    Each step draws ``2 + floor(log k)`` candidates by D^2 sampling and keeps the one that
    lowers the potential most: plain k-means++ often leaves a cluster unseeded in
    higher dimensions, where within-cluster distances are not small next to the gaps.
    """
    n_cand = 2 + int(np.log(k))
    k0, key = jax.random.split(key)
    first = _draw(k0, sw)
    centers = jnp.zeros((k, X.shape[1]), X.dtype).at[0].set(X[first])
    d2 = jnp.sum((X - X[first]) ** 2, -1)

    def body(i, s):
        centers, d2, key = s
        key, sub = jax.random.split(key)
        p = sw * d2
        p = jnp.where(jnp.sum(p) > 0, p, sw)
        cand = jax.vmap(lambda kk: _draw(kk, p))(jax.random.split(sub, n_cand))
        new_d2 = jnp.minimum(d2[None], jnp.sum((X[None] - X[cand][:, None]) ** 2, -1))  # (n_cand, n)
        best = jnp.argmin(new_d2 @ sw)
        return centers.at[i].set(X[cand[best]]), new_d2[best], key

    centers, _, _ = lax.fori_loop(1, k, body, (centers, d2, key))
    return centers


def _choose_rows(key, sw, k):
    """``k`` distinct rows drawn with probability proportional to ``sw``, without replacement."""
    def body(i, s):
        idx, p = s
        j = _draw(jax.random.fold_in(key, i), p)
        return idx.at[i].set(j.astype(idx.dtype)), p.at[j].set(0.0)

    idx, _ = lax.fori_loop(0, k, body, (jnp.zeros(k, jnp.int32), sw))
    return idx


def _assign(X, c):
    """Nearest centre of each row: ``(n,)``."""
    d2 = jnp.sum(X * X, -1)[:, None] - 2 * X @ c.T + jnp.sum(c * c, -1)[None]
    return jnp.argmin(d2, axis=1)


def _lloyd_sums(X, sw, c):
    """``(sum of the weighted rows per centre (k, d), their weight (k,))``."""
    onehot = jax.nn.one_hot(_assign(X, c), c.shape[0], dtype=X.dtype) * sw[:, None]
    return onehot.T @ X, jnp.sum(onehot, 0)


def _lloyd_update(c, sums, cnt):
    new = sums / jnp.where(cnt > 0, cnt, 1.0)[:, None]
    return jnp.where((cnt > 0)[:, None], new, c)  # an empty cluster keeps its centre


def _lloyd_iters(init):
    return 5 if init == "kmeans++" else 100


def _lloyd_centers(X, sw, centers, n_iter):
    return lax.fori_loop(0, n_iter, lambda _, c: _lloyd_update(c, *_lloyd_sums(X, sw, c)), centers)


def _lloyd(X, sw, centers, n_iter):
    c = _lloyd_centers(X, sw, centers, n_iter)
    return jax.nn.one_hot(_assign(X, c), c.shape[0], dtype=X.dtype)


def _init_resp(key, X, sw, k, init, rows=None):
    """Initial responsibilities ``(n, k)`` (before sample weights). ``rows``: the rows'
    global indices (default ``arange(n)``), so that random draws do not depend on
    how the data is split."""
    n = X.shape[0]
    if init == "random":
        r = _row_uniform(key, jnp.arange(n) if rows is None else rows, k).astype(X.dtype)
        return r / jnp.sum(r, 1, keepdims=True)
    if init == "random_from_data":
        idx = _choose_rows(key, sw, k)
        return jnp.zeros((n, k), X.dtype).at[idx, jnp.arange(k)].set(1.0)
    centers = _kmeans_pp(key, X, sw, k)
    return _lloyd(X, sw, centers, _lloyd_iters(init))
