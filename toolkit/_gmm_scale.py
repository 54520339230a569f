"""toolkit.gmm beyond one in-memory array: rows sharded over devices, and streaming EM.

The EM statistics are sums over samples (:class:`toolkit.gmm._Stats`), so

* a row-sharded ``jax.Array`` goes straight through :func:`toolkit.gmm.fit`: XLA's SPMD
  partitioner turns every sum over rows into a per-device sum plus an all-reduce, and
  the (small) parameters stay replicated. :func:`shard_rows` builds such an array;
* :func:`fit_batches` makes one pass over the data per EM iteration, summing the
  statistics batch by batch in a jitted step (every batch padded to one shape, so it
  compiles once). It reaches the same mixture as ``fit`` on the same data;
* :func:`fit_online` is stochastic EM (Cappé & Moulines 2009) for one pass over data
  that cannot be read twice: approximate, and documented as such.

All public names are re-exported by :mod:`toolkit.gmm`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from . import gmm as _g
from ._checks import result_dtype

__all__ = ["shard_rows", "fit_batches", "fit_online", "NpyBatches"]

_SAMPLE_SEEDINGS = 4  # k-means++ seedings tried on the init sample (scikit-learn's MiniBatchKMeans: 3)
_RESERVOIR_SALT = 0x5EED  # fold_in constant for the reservoir's priorities (restarts use 0, 1, ...)


# ----------------------------------------------------------------------------- sharding


def _row_mesh(mesh):
    if mesh is None:
        return jax.sharding.Mesh(np.asarray(jax.devices()), ("rows",))
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"gmm.shard_rows: mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    return mesh


def _row_sharding(mesh, ndim=2):
    # rows split over every axis of the mesh; features and parameters are not split
    spec = (tuple(mesh.axis_names),) + (None,) * (ndim - 1)
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))


def shard_rows(X, mesh=None, *, sample_weight=None):
    """Pad ``X`` to a multiple of the device count and shard its rows over a device mesh.

    Args:
      X: ``(n, d)`` host array (in a ``jax.distributed`` job: this process's rows).
      mesh: a ``jax.sharding.Mesh``; rows are split over all of its axes. Default: a
        1-D mesh named ``"rows"`` over ``jax.devices()``.
      sample_weight: optional ``(n,)`` weights (default ones).
    Returns:
      ``(X_sharded (n_pad, d), weight_sharded (n_pad,))``: padding rows are zeros with
      weight 0, so ``gmm.fit(key, X_sharded, k, sample_weight=weight_sharded)`` is the
      fit of ``X``. With several processes every process pads its rows to the largest
      local count, so uneven splits work.
    Raises:
      ValueError: X not 2-D, or sample_weight of the wrong length.

    >>> Xs, w = shard_rows(np.ones((10, 3)))          # doctest: +SKIP
    >>> g, info = toolkit.gmm.fit(key, Xs, 2, sample_weight=w)   # doctest: +SKIP
    """
    where = "gmm.shard_rows"
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    n = X.shape[0]
    w = np.ones(n, X.dtype) if sample_weight is None else np.asarray(sample_weight, X.dtype)
    if w.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), got {w.shape}")
    mesh = _row_mesh(mesh)
    n_proc = jax.process_count()
    local = max(1, mesh.size // n_proc)  # this process's devices in the mesh
    if n_proc > 1:
        from jax.experimental import multihost_utils

        n_max = int(np.max(multihost_utils.process_allgather(np.asarray([n]))))
    else:
        n_max = n
    m = max(1, math.ceil(n_max / local)) * local
    Xp = np.zeros((m, X.shape[1]), X.dtype)
    Xp[:n] = X
    wp = np.zeros(m, X.dtype)
    wp[:n] = w
    if n_proc == 1:
        return _dev(Xp, mesh), _dev(wp, mesh)
    return (jax.make_array_from_process_local_data(_row_sharding(mesh), Xp, (m * n_proc, X.shape[1])),
            jax.make_array_from_process_local_data(_row_sharding(mesh, 1), wp, (m * n_proc,)))


def _dev(a, mesh):
    """``a`` on the device, rows sharded over ``mesh`` when given."""
    return jnp.asarray(a) if mesh is None else jax.device_put(a, _row_sharding(mesh, a.ndim))


def _process_gather(tree):
    """Every process's ``tree`` stacked on a new leading axis (host numpy arrays)."""
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree)


def _process_sum(tree):
    """Sum of ``tree`` over the processes of a ``jax.distributed`` job (identity with one).

    Once per pass on the small statistics, in float64 on the host and in process order,
    so every process gets bit-identical sums and takes the same decisions.
    """
    if jax.process_count() == 1:
        return tree
    return jax.tree_util.tree_map(lambda a, x: jnp.asarray(np.sum(np.asarray(a, np.float64), 0), x.dtype),
                                  _process_gather(tree), tree)


# ----------------------------------------------------------------------------- batch sources


class NpyBatches:
    """Row chunks of a ``.npy`` file, read with plain file reads (re-iterable).

    Unlike ``np.load(mmap_mode="r")``, no page of the file stays mapped into the process,
    so resident memory stays near one chunk however large the file is.

    Args:
      path: a C-ordered 2-D ``.npy`` file.
      batch_size: rows per chunk.
    Attributes:
      shape, dtype: of the whole array.
    """

    def __init__(self, path, batch_size: int = 65536):
        self.path = os.fspath(path)
        _check_positive_int(batch_size, "batch_size", "gmm.NpyBatches")
        self.batch_size = int(batch_size)
        m = np.load(self.path, mmap_mode="r")  # reads the header only; no data page is touched
        shape, dtype, self._offset = m.shape, m.dtype, m.offset
        fortran = m.ndim == 2 and not m.flags.c_contiguous
        del m
        if len(shape) != 2 or fortran:
            raise ValueError(f"gmm.NpyBatches: {self.path} must hold a C-ordered 2-D array, got shape {shape}"
                             f"{' (Fortran order)' if fortran else ''}")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return math.ceil(self.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        n, d = self.shape
        row_bytes = d * self.dtype.itemsize
        with open(self.path, "rb") as f:
            for start in range(0, n, self.batch_size):
                rows = min(self.batch_size, n - start)
                f.seek(self._offset + start * row_bytes)
                a = np.fromfile(f, self.dtype, count=rows * d)
                if a.size != rows * d:
                    raise ValueError(f"gmm.NpyBatches: {self.path} is truncated at row {start + a.size // d}")
                yield a.reshape(rows, d)


@dataclasses.dataclass
class _Chunk:
    X: np.ndarray       # (C, d), zero rows past the data
    w: np.ndarray       # (C,), zero past the data
    rows: np.ndarray    # (C,) global row index, -1 past the data
    batch: int          # index of the batch it came from
    start: int          # its first row within that batch


class _Source:
    """Normalises ``batches`` to fixed-size chunks, validating each batch once."""

    def __init__(self, batches, where, *, batch_size, dtype, multi_pass):
        self.where = where
        if isinstance(batches, (np.ndarray, jax.Array)):
            arr = batches
            if arr.ndim != 2:
                raise ValueError(f"{where}: an array given as batches must be 2-D (n_samples, n_features), "
                                 f"got shape {tuple(arr.shape)}")
            step = batch_size or 65536
            self._factory = lambda: (arr[i:i + step] for i in range(0, arr.shape[0], step))
        elif callable(batches):
            self._factory = batches
        else:
            try:
                it = iter(batches)
            except TypeError:
                raise TypeError(f"{where}: batches must be an array, an iterable of arrays or a function returning "
                                f"an iterator, got {type(batches).__name__}") from None
            if it is batches and multi_pass:
                raise TypeError(f"{where}: batches is a one-shot iterator, but every EM iteration reads the data "
                                f"again; pass a list, an array, NpyBatches or a function returning a fresh iterator")
            self._factory = lambda: iter(batches)
        self.batch_size = batch_size
        self.dtype = dtype
        self.d = None
        self.capacity = None
        self.n_rows = None  # known after the first full pass

    def _validate(self, b, item, first):
        where = self.where
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"{where}: batch {b} must be an array X or a pair (X, sample_weight), "
                                 f"got a tuple of {len(item)}")
            X, w = item
        else:
            X, w = item, None
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{where}: batch {b} must hold real numbers, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{where}: batch {b} must be 2-D (n_samples, n_features), got shape {X.shape}")
        if self.d is None:
            self.d = X.shape[1]
            if self.dtype is None:
                self.dtype = result_dtype(X.dtype)
        elif X.shape[1] != self.d:
            raise ValueError(f"{where}: batch {b} has {X.shape[1]} features, batch 0 had {self.d}")
        if w is not None:
            w = np.asarray(w)
            if w.shape != (X.shape[0],):
                raise ValueError(f"{where}: batch {b}: sample_weight must have shape ({X.shape[0]},), got {w.shape}")
        if first:
            bad = ~np.isfinite(X).all(axis=1)
            if bad.any():
                raise ValueError(f"{where}: batch {b} contains NaN or inf (first at row {int(np.argmax(bad))})")
            if w is not None and (not np.isfinite(w).all() or (w < 0).any()):
                raise ValueError(f"{where}: batch {b}: sample_weight must be finite and >= 0")
        return X, w

    def chunks(self, first: bool = False) -> Iterator[_Chunk]:
        """One pass over the data. ``first``: also check values (NaN/inf, weights)."""
        row = 0
        b = -1
        for b, item in enumerate(self._factory()):
            X, w = self._validate(b, item, first)
            if self.capacity is None:
                self.capacity = int(self.batch_size or max(X.shape[0], 1))
            C = self.capacity
            for s in range(0, X.shape[0], C):
                m = min(C, X.shape[0] - s)
                Xc = np.zeros((C, self.d), self.dtype)
                Xc[:m] = X[s:s + m]
                wc = np.zeros(C, self.dtype)
                wc[:m] = 1.0 if w is None else w[s:s + m]
                rows = np.full(C, -1, np.int64)
                rows[:m] = np.arange(row, row + m)
                row += m
                yield _Chunk(Xc, wc, rows, b, s)
        if b < 0:
            raise ValueError(f"{self.where}: batches yielded no data (an empty iterable)")
        if row == 0:
            raise ValueError(f"{self.where}: batches hold no rows")
        if self.n_rows is None:
            self.n_rows = row
        elif row != self.n_rows:
            raise ValueError(f"{self.where}: batches gave {row} rows on this pass but {self.n_rows} on the first; "
                             f"they must give the same data on every pass")


# ----------------------------------------------------------------------------- jitted steps


def _kahan(acc, x):
    """Compensated summation of pytrees ``acc = (sum, carry)``: many batches, few digits lost."""
    s, c = acc
    y = jax.tree_util.tree_map(lambda x, c: x - c, x, c)
    t = jax.tree_util.tree_map(jnp.add, s, y)
    c = jax.tree_util.tree_map(lambda t, s, y: (t - s) - y, t, s, y)
    return t, c


def _kahan_zeros(tree):
    """An empty compensated sum ``(sum, carry)`` shaped like ``tree``."""
    return jax.tree_util.tree_map(jnp.zeros_like, tree), jax.tree_util.tree_map(jnp.zeros_like, tree)


@functools.partial(jax.jit, donate_argnums=(0,))
def _scan_step(acc, X, w):
    """First pass: weighted sum of the rows and the total weight (for the centre)."""
    return _kahan(acc, (w @ X, jnp.sum(w)))


def _index_dtype():
    return jax.dtypes.canonicalize_dtype(jnp.int64)  # int32 without x64


def _reservoir_init(m, d, dtype):
    """An empty reservoir of ``m`` slots: rows, weights, row indices, priorities."""
    it = _index_dtype()
    return (jnp.zeros((m, d), dtype), jnp.zeros(m, dtype), jnp.full(m, jnp.iinfo(it).max, it),
            jnp.full(m, -2.0, jnp.float32))


@functools.partial(jax.jit, donate_argnums=(0,))
def _reservoir_merge(res, X, w, rows, key):
    """Keep the ``m`` rows with the highest random priority seen so far: a uniform sample
    (all rows, once there are at most ``m``). Priorities come from the row index, so the
    sample does not depend on how the data is cut into batches."""
    rX, rw, rrow, rpri = res
    pri = jnp.where(rows >= 0, _g._row_uniform(key, jnp.maximum(rows, 0), 1)[:, 0], -3.0).astype(jnp.float32)
    allpri = jnp.concatenate([rpri, pri])
    _, idx = jax.lax.top_k(allpri, rpri.shape[0])
    allrow = jnp.concatenate([rrow, jnp.where(rows >= 0, rows, jnp.iinfo(rrow.dtype).max).astype(rrow.dtype)])
    return jnp.concatenate([rX, X])[idx], jnp.concatenate([rw, w])[idx], allrow[idx], allpri[idx]


def _reservoir_sample(res, n_keep):
    """The sample (across all processes) in data order, as ``(X (n_keep, d), w (n_keep,))``.

    With at most ``init_size`` rows in all it is exactly the data in the order fit() sees
    it (process by process, then row by row)."""
    parts = _process_gather(res) if jax.process_count() > 1 else jax.tree_util.tree_map(
        lambda a: np.asarray(a)[None], res)
    rX, rw, rrow, rpri = (np.asarray(a) for a in parts)
    P, m = rpri.shape
    proc = np.repeat(np.arange(P), m)
    rX, rw, rrow, rpri = rX.reshape(P * m, -1), rw.reshape(-1), rrow.reshape(-1), rpri.reshape(-1)
    top = np.argsort(-rpri, kind="stable")[:m]
    empty = rpri[top] < 0  # slots never filled (priority -2): after every real row
    keep = top[np.lexsort((rrow[top], proc[top], empty))][:n_keep]
    return jnp.asarray(rX[keep]), jnp.asarray(rw[keep])


@functools.partial(jax.jit, donate_argnums=(1,))
def _lloyd_step(cs, acc, X, w, center):
    """Per restart: the Lloyd sums of one chunk, added to ``acc``."""
    Xc = X - center
    return _kahan(acc, jax.vmap(lambda c: _g._lloyd_sums(Xc, w, c))(cs))


@functools.partial(jax.jit, static_argnums=(7, 8, 9), donate_argnums=(1,))
def _init_stats_step(cs, acc, X, w, rows, center, keys, random, covariance_type, shrinkage):
    """Per restart: statistics of the initial responsibilities: hard labels of the
    centres ``cs (R, k, d)``, or (``random``) the rows' random responsibilities."""
    Xc = X - center
    k = cs.shape[1]

    def one(c, key):
        if random:
            resp = _g._init_resp(key, Xc, w, k, "random", rows=jnp.maximum(rows, 0))
        else:
            resp = jax.nn.one_hot(_g._assign(Xc, c), k, dtype=X.dtype)
        return _g._stats_from_resp(Xc, resp * w[:, None], covariance_type, shrinkage)

    return _kahan(acc, jax.vmap(one)(cs, keys))


@functools.partial(jax.jit, static_argnums=(5, 6, 7), donate_argnums=(1,))
def _em_batch_step(gs, acc, X, w, center, covariance_type, shrinkage, fast):
    """Per restart: ``(sum w log p, statistics)`` of one chunk under ``gs``, added to ``acc``."""
    Xc = X - center
    F = _g._features(Xc) if fast else None  # shared by the restarts

    def one(g):
        ll, resp = _g._resp_from_log(_g._weighted_log_prob(g, Xc, F), w)
        return ll, _g._stats_from_resp(Xc, resp, covariance_type, shrinkage, F)

    return _kahan(acc, jax.vmap(one)(gs))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _params(st, reg_covar, covariance_type, shrinkage):
    return jax.vmap(lambda s: _g._params_from_stats(s, reg_covar, covariance_type, shrinkage))(st)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _reservoir_inits(keys, Xs, ws, k, init, n_seedings=1):
    """Per restart, from the (centred) sample: k-means++ centres, or the stats of k rows.

    ``n_seedings > 1`` (used when the sample is not the whole data): as scikit-learn's
    MiniBatchKMeans, seed that many times on the sample, run Lloyd there, and keep the
    centres of lowest sample inertia; a single k-means++ seeding leaves a cluster
    unseeded now and then, and on a sample trying again is cheap.
    """
    if init == "random_from_data":
        return jax.vmap(lambda key: _g._init_resp(key, Xs, ws, k, init))(keys)
    if n_seedings == 1:
        return jax.vmap(lambda key: _g._kmeans_pp(key, Xs, ws, k))(keys)

    def best_of(key):
        def one(j):
            c = _g._lloyd_centers(Xs, ws, _g._kmeans_pp(jax.random.fold_in(key, j), Xs, ws, k), _g._lloyd_iters(init))
            d2 = jnp.sum(Xs * Xs, -1)[:, None] - 2 * Xs @ c.T + jnp.sum(c * c, -1)[None]
            return c, jnp.sum(ws * jnp.min(d2, 1))

        cs, inertia = jax.vmap(one)(jnp.arange(n_seedings))
        return cs[jnp.argmin(inertia)]

    return jax.vmap(best_of)(keys)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _stats_of(Xs, resps, ws, k, covariance_type, shrinkage):
    return jax.vmap(lambda r: _g._stats_from_resp(Xs, r * ws[:, None], covariance_type, shrinkage))(resps)


@jax.jit
def _em_update(state, new_gs, st, ll, wtot, tol):
    """Advance the restarts still running by one EM iteration, exactly as fit's while_loop."""
    gs, st_last, lb, it, hist, active, conv = state
    new_lb = ll / wtot

    def sel(a, b):
        return jax.tree_util.tree_map(
            lambda x, y: jnp.where(active.reshape(active.shape + (1,) * (x.ndim - 1)), y, x), a, b)

    now = jnp.abs(new_lb - lb) < tol
    hist = jnp.where(active[:, None] & (jnp.arange(hist.shape[1])[None] == it[:, None]), new_lb[:, None], hist)
    return (sel(gs, new_gs), sel(st_last, st), jnp.where(active, new_lb, lb), it + active, hist,
            active & ~now & (it + 1 < hist.shape[1]), jnp.where(active, now, conv))


def _check_positive_int(value, name, where, *, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        expected = "None or a positive int" if optional else "a positive int"
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")


def _scan(src, key, *, reservoir_size, mesh):
    """First pass: validate, count, centre, and (optionally) a uniform row sample."""
    acc = None
    res = None
    for ch in src.chunks(first=True):
        jax.block_until_ready((acc, res))  # bounded memory: see fit_batches' run_pass
        X, w = _dev(ch.X, mesh), _dev(ch.w, mesh)
        if acc is None:
            acc = _kahan_zeros((jnp.zeros(src.d, src.dtype), jnp.zeros((), src.dtype)))
            if reservoir_size:
                res = _reservoir_init(reservoir_size, src.d, src.dtype)
        acc = _scan_step(acc, X, w)
        if res is not None:
            res = _reservoir_merge(res, X, w, jnp.asarray(ch.rows, _index_dtype()), key)
    wx, wtot = _process_sum(acc[0])
    return wx / wtot, wtot, res


def fit_batches(key, batches, n_components: int, *, covariance_type: str = "full", reg_covar: float = 1e-6,
                shrinkage=None, init: Any = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
                batch_size: int | None = None, init_size: int = 100_000, dtype=None, mesh=None,
                callback: Callable[[int, float], Any] | None = None):
    """Streaming (out-of-core) EM: one pass over the batches per iteration.

    Each pass sums the EM statistics batch by batch in one jitted step (every batch is
    cut or zero-weight padded to ``batch_size`` rows, so it compiles once); the M-step
    then runs on the sums. Only one batch and the statistics are in memory at a time.

    The result equals :func:`toolkit.gmm.fit` on the concatenated data (to float
    rounding: the sums are taken in another order, with compensated summation across
    batches) when the initialisation matches: always for a :class:`GMM` ``init`` and for
    ``"random"``; for ``"kmeans++"``, ``"kmeans"`` and ``"random_from_data"`` when the
    data has at most ``init_size`` rows. Beyond that the seeding runs on a uniform sample
    of ``init_size`` rows drawn in the first pass (best of 4 k-means++ seedings by sample
    inertia, as scikit-learn's MiniBatchKMeans does), while Lloyd's iterations (5 for
    kmeans++, 100 for kmeans) and EM always use every row. In a ``jax.distributed`` job
    every process streams its own batches and the statistics are summed across processes
    once per pass; every process ends with the same mixture.

    Args:
      key: ``jax.random`` key.
      batches: a 2-D array (``np.memmap`` included; cut into ``batch_size`` rows), an
        :class:`NpyBatches`, a re-iterable (list, ...) of ``(m, d)`` arrays or of
        ``(X, sample_weight)`` pairs, or a function returning a fresh iterator of them.
        Every pass must yield the same data.
      n_components, covariance_type, reg_covar, shrinkage, init, n_init, max_iter, tol:
        as :func:`toolkit.gmm.fit`.
      batch_size: rows per jitted step (default: the first batch's rows; 65536 for an
        array). Larger batches are cut, smaller ones padded.
      init_size: rows sampled for the seeding (see above).
      dtype: computation dtype (default: the data's float dtype).
      mesh: optional ``jax.sharding.Mesh``: each batch is also sharded over its devices
        (``batch_size`` must then divide by the device count).
      callback: called after every pass with ``(iteration, best lower bound)``, e.g. to
        drive a progress bar.
    Returns:
      ``(GMM, FitInfo)`` as :func:`toolkit.gmm.fit`.
    Raises:
      ValueError / TypeError: bad options; an empty iterable; a batch that is not 2-D,
        has another feature count than batch 0, or holds NaN/inf (the message names the
        batch and row); a one-shot iterator (pass a list or a function instead).
    """
    where = "gmm.fit_batches"
    _check_positive_int(batch_size, "batch_size", where, optional=True)
    _check_positive_int(init_size, "init_size", where)
    if dtype is not None:
        dtype = result_dtype(dtype)
    src = _Source(batches, where, batch_size=batch_size, dtype=dtype, multi_pass=True)
    # the feature count is known only from the first batch: peek at it for the checks
    first = next(iter(src.chunks(first=True)))
    shrinkage, gmm_init = _g._check_fit_options(where, src.d, src.dtype, n_components, covariance_type, reg_covar,
                                                shrinkage, init, n_init, max_iter)
    if mesh is not None and src.capacity % mesh.size:
        raise ValueError(f"{where}: batch_size={src.capacity} must be a multiple of the mesh's {mesh.size} devices")
    del first
    k = int(n_components)
    R = int(n_init)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(R))
    name = "warm" if gmm_init is not None else init
    sample = name in ("kmeans++", "kmeans", "random_from_data")
    if mesh is not None and jax.process_count() > 1:
        raise ValueError(f"{where}: mesh= is for one process; in a jax.distributed job each process streams "
                         f"its own batches and the statistics are summed across processes")
    center, wtot, res = _scan(src, jax.random.fold_in(jax.random.fold_in(key, _RESERVOIR_SALT), jax.process_index()),
                              reservoir_size=int(init_size) if sample else 0, mesh=mesh)
    counts = [src.n_rows] if jax.process_count() == 1 else \
        [int(c) for c in np.asarray(_process_gather(np.asarray([src.n_rows]))).reshape(-1)]
    n = sum(counts)
    offset = sum(counts[:jax.process_index()])  # this process's first global row
    if n < k:
        raise ValueError(f"{where}: n_samples={n} should be >= n_components={k}")
    if not float(wtot) > 0:
        raise ValueError(f"{where}: the sample weights sum to {float(wtot)}; they must have a positive sum")
    dt = src.dtype
    rc = jnp.asarray(reg_covar, dt)

    def run_pass(step, carry, acc, extra):
        for ch in src.chunks():
            # the next chunk is read while the previous step runs; waiting here keeps
            # at most two chunks alive (async dispatch would otherwise queue the file)
            jax.block_until_ready(acc)
            acc = step(carry, acc, _dev(ch.X, mesh), _dev(ch.w, mesh), *extra(ch))
        return _process_sum(acc[0])

    # ---- initial mixtures, one per restart
    if gmm_init is not None:
        g0 = dataclasses.replace(gmm_init, means=gmm_init.means - center)
        gs = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (R,) + a.shape), g0)
    else:
        zero_st = _stats_zero(R, k, src.d, dt, covariance_type, shrinkage)
        if sample:
            Xs, ws = _reservoir_sample(res, min(n, int(init_size)))
            Xs = Xs - center
        if name == "random_from_data":
            resps = _reservoir_inits(keys, Xs, ws, k, name)
            gs = _params(_stats_of(Xs, resps, ws, k, covariance_type, shrinkage), rc, covariance_type, shrinkage)
        else:
            if name == "random":
                cs = jnp.zeros((R, k, src.d), dt)
            else:
                # the whole data: seed exactly as fit(); a sample: best of several seedings
                cs = _reservoir_inits(keys, Xs, ws, k, name, 1 if n <= init_size else _SAMPLE_SEEDINGS)
                for _ in range(_g._lloyd_iters(name)):
                    sums, cnt = run_pass(_lloyd_step, cs, _kahan_zeros((cs, jnp.zeros((R, k), dt))),
                                         lambda ch: (center,))
                    cs = jax.vmap(_g._lloyd_update)(cs, sums, cnt)
            def init_args(ch):
                rows = jnp.asarray(np.where(ch.rows >= 0, ch.rows + offset, -1), _index_dtype())  # global rows
                return rows, center, keys, name == "random", covariance_type, shrinkage

            st = run_pass(_init_stats_step, cs, _kahan_zeros(zero_st), init_args)
            gs = _params(st, rc, covariance_type, shrinkage)

    # ---- EM, one pass per iteration
    fast = _g._use_features(src.d, k, dt, covariance_type, shrinkage)
    st0 = _stats_zero(R, k, src.d, dt, covariance_type, shrinkage)
    state = (gs, st0, jnp.full(R, -jnp.inf, dt), jnp.zeros(R, jnp.int32), jnp.full((R, int(max_iter)), jnp.nan, dt),
             jnp.ones(R, bool), jnp.zeros(R, bool))
    tol_ = jnp.asarray(tol, dt)
    for it in range(int(max_iter)):
        ll, st = run_pass(_em_batch_step, state[0], _kahan_zeros((jnp.zeros(R, dt), st0)),
                          lambda ch: (center, covariance_type, shrinkage, fast))
        state = _em_update(state, _params(st, rc, covariance_type, shrinkage), st, ll, wtot, tol_)
        if callback is not None:
            callback(it + 1, float(jnp.max(state[2])))
        if not bool(jnp.any(state[5])):
            break
    gs, st_last, lbs, its, hist, _, convs = state
    hist = jnp.where(jnp.arange(hist.shape[1])[None] >= its[:, None], lbs[:, None], hist)
    deficient = jax.vmap(lambda s: _g._rank_deficient(s, covariance_type))(st_last)
    return _g._best_restart(gs, its, lbs, hist, convs, deficient, center, jnp.asarray(True))


def _stats_zero(R, k, d, dtype, covariance_type, shrinkage):
    """Zero statistics with a leading restart axis (the accumulators' shapes)."""
    s2 = (k, d, d) if covariance_type in ("full", "tied") else (k, d)
    z = lambda *s: jnp.zeros((R,) + s, dtype)  # noqa: E731
    if shrinkage == "ledoit_wolf":
        return _g._Stats(z(k), z(k, d), z(*s2), z(k, d), z(k))
    return _g._Stats(z(k), z(k, d), z(*s2))


# ----------------------------------------------------------------------------- online EM


def _default_step_size(t: int) -> float:
    return (t + 1.0) ** -0.6


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _online_step(g, S, X, w, center, rho, covariance_type, shrinkage, fast, reg_covar):
    """S <- (1 - rho) S + rho * (normalised statistics of the batch under g); g <- M(S)."""
    Xc = X - center
    F = _g._features(Xc) if fast else None
    ll, resp = _g._resp_from_log(_g._weighted_log_prob(g, Xc, F), w)
    st = _g._stats_from_resp(Xc, resp, covariance_type, shrinkage, F)
    wb = jnp.sum(w)
    S = jax.tree_util.tree_map(lambda a, b: (1 - rho) * a + rho * b / wb, S, st)
    return _g._params_from_stats(S, reg_covar, covariance_type, shrinkage), S, ll / wb


def fit_online(key, batches, n_components: int, *, covariance_type: str = "full", reg_covar: float = 1e-6,
               shrinkage=None, init: Any = "kmeans++", step_size: float | Callable[[int], float] | None = None,
               n_epochs: int = 1, batch_size: int | None = None, dtype=None,
               callback: Callable[[int, float], Any] | None = None):
    """Online (stochastic) EM: one M-step per batch, for data seen once (approximate).

    Cappé & Moulines (2009): the running normalised statistics move toward each batch's,
    ``S_t = (1 - rho_t) S_{t-1} + rho_t s(batch_t; theta_{t-1})`` and ``theta_t = M(S_t)``.
    It converges to a stationary point of the likelihood as ``sum rho = inf`` and
    ``sum rho^2 < inf``, but after a finite stream it is only close to the batch EM
    optimum: use :func:`fit_batches` when the data can be read once per iteration.

    Args:
      key: ``jax.random`` key (initialisation).
      batches: as :func:`fit_batches`; a one-shot iterator is accepted when ``n_epochs=1``.
      n_components, covariance_type, reg_covar, shrinkage: as :func:`toolkit.gmm.fit`.
      init: a :class:`GMM`, or an init name of :func:`toolkit.gmm.fit` applied to the
        first batch (so the first batch should hold every component).
      step_size: ``rho_t`` for step ``t = 0, 1, ...``: a float in (0, 1] or a function of
        t; default ``(t + 1) ** -0.6`` (rho_0 = 1: the first batch replaces the start).
      n_epochs: passes over the data.
      batch_size, dtype, callback: as :func:`fit_batches` (callback after every batch
        with ``(step, that batch's mean log-likelihood)``).
    Returns:
      ``(GMM, FitInfo)``: ``n_iter`` counts batch steps, ``history`` holds each batch's
      mean log-likelihood under the parameters before its step, ``lower_bound`` the
      last; ``converged`` is always False (no convergence test is made).
    """
    where = "gmm.fit_online"
    _check_positive_int(batch_size, "batch_size", where, optional=True)
    _check_positive_int(n_epochs, "n_epochs", where)
    if step_size is None:
        step_size = _default_step_size
    elif not callable(step_size):
        if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 < step_size <= 1:
            raise ValueError(f"{where}: step_size must be a float in (0, 1] or a function of the step, "
                             f"got {step_size!r}")
        step_size = functools.partial(lambda c, t: c, float(step_size))
    if dtype is not None:
        dtype = result_dtype(dtype)
    src = _Source(batches, where, batch_size=batch_size, dtype=dtype, multi_pass=n_epochs > 1)
    g = S = center = None
    hist = []
    t = 0
    fast = False
    for _ in range(int(n_epochs)):
        for ch in src.chunks(first=True):
            jax.block_until_ready(S)  # bounded memory: see fit_batches' run_pass
            X, w = jnp.asarray(ch.X), jnp.asarray(ch.w)
            if g is None:
                shrinkage, gmm_init = _g._check_fit_options(where, src.d, src.dtype, n_components, covariance_type,
                                                            reg_covar, shrinkage, init, 1, 1)
                m = int(np.count_nonzero(ch.rows >= 0))
                if m < n_components:
                    raise ValueError(f"{where}: the first batch has {m} rows; it must hold at least "
                                     f"n_components={n_components} to initialise from")
                # the first chunk initialises; centring on it keeps the moments accurate
                g, _ = _g.fit(key, X[:m], n_components, covariance_type=covariance_type, reg_covar=reg_covar,
                              shrinkage=shrinkage, init=init, max_iter=1, tol=0.0, sample_weight=w[:m])
                center = jnp.sum(w[:, None] * X, 0) / jnp.sum(w)
                g = dataclasses.replace(g, means=g.means - center)
                S = jax.tree_util.tree_map(lambda a: a[0], _stats_zero(1, n_components, src.d, src.dtype,
                                                                      covariance_type, shrinkage))
                fast = _g._use_features(src.d, n_components, src.dtype, covariance_type, shrinkage)
            rho = float(step_size(t))
            if not 0 < rho <= 1:
                raise ValueError(f"{where}: step_size({t}) = {rho}; it must be in (0, 1]")
            if t == 0:
                rho = 1.0  # nothing to average with yet
            g, S, lb = _online_step(g, S, X, w, center, jnp.asarray(rho, src.dtype), covariance_type, shrinkage,
                                    fast, jnp.asarray(reg_covar, src.dtype))
            hist.append(lb)
            t += 1
            if callback is not None:
                callback(t, float(lb))
    hist = jnp.stack(hist)
    deficient = _g._rank_deficient(S, covariance_type)
    g = dataclasses.replace(g, means=g.means + center)
    return g, _g.FitInfo(converged=jnp.asarray(False), n_iter=jnp.asarray(t), lower_bound=hist[-1], history=hist,
                         lower_bounds=hist[-1:], rank_deficient=deficient)
