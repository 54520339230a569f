"""Streaming EM: :func:`fit_batches` makes one pass over the data per EM iteration, summing
the statistics batch by batch in a jitted step (every batch padded to one shape, so it
compiles once). It reaches the same mixture as ``fit`` on the same data."""
from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from .._checks import check_positive_int, result_dtype
from .covariance import (COVARIANCE, _Stats, _needs_diagonal_fourth_moment, _needs_fourth_moment,
                         _params_from_stats, _rank_deficient)
from .bayesian import _bayesian_options, _lower_bound, _posterior, _prior_model, _vb_e_stats
from .em import _converged, _e_stats, _features, _stats_from_resp, _use_features
from .fitting import _best_restart
from .init import _assign, _init_resp, _kmeans_pp, _lloyd_centers, _lloyd_iters, _lloyd_sums, _lloyd_update, _row_uniform
from .options import _check_fit_options
from .types import GMM, FitInfo
from .sharding import _dev, _process_gather, _process_sum
from .sources import _Source


_SAMPLE_SEEDINGS = 4  # k-means++ seedings tried on the init sample (scikit-learn's MiniBatchKMeans: 3)
_RESERVOIR_SALT = 0x5EED  # fold_in constant for the reservoir's priorities (restarts use 0, 1, ...)


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
    pri = jnp.where(rows >= 0, _row_uniform(key, jnp.maximum(rows, 0), 1)[:, 0], -3.0).astype(jnp.float32)
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
    return _kahan(acc, jax.vmap(lambda c: _lloyd_sums(Xc, w, c))(cs))


@functools.partial(jax.jit, static_argnums=(7, 8, 9), donate_argnums=(1,))
def _init_stats_step(cs, acc, X, w, rows, center, keys, random, covariance_type, shrinkage):
    """Per restart: statistics of the initial responsibilities: hard labels of the
    centres ``cs (R, k, d)``, or (``random``) the rows' random responsibilities."""
    Xc = X - center
    k = cs.shape[1]

    def one(c, key):
        if random:
            resp = _init_resp(key, Xc, w, k, "random", rows=jnp.maximum(rows, 0))
        else:
            resp = jax.nn.one_hot(_assign(Xc, c), k, dtype=X.dtype)
        return _stats_from_resp(Xc, resp * w[:, None], covariance_type, shrinkage)

    return _kahan(acc, jax.vmap(one)(cs, keys))


@functools.partial(jax.jit, static_argnums=(5, 6, 7), donate_argnums=(1,))
def _em_batch_step(gs, acc, X, w, center, covariance_type, shrinkage, fast):
    """Per restart: ``(sum w log p, statistics)`` of one chunk under ``gs``, added to ``acc``."""
    Xc = X - center
    F = _features(Xc) if fast else None  # shared by the restarts

    return _kahan(acc, jax.vmap(lambda g: _e_stats(g, Xc, w, F, covariance_type, shrinkage))(gs))


@functools.partial(jax.jit, static_argnums=(5, 6), donate_argnums=(1,))
def _vb_batch_step(gs, acc, X, w, center, shrinkage, fast):
    """Per restart: ``(sum w r log r, statistics)`` of one chunk's variational E-step."""
    Xc = X - center
    F = _features(Xc) if fast else None
    return _kahan(acc, jax.vmap(lambda g: _vb_e_stats(g, Xc, w, F, shrinkage))(gs))


@functools.partial(jax.jit, donate_argnums=(1,))
def _scatter_step(_, acc, X, w, center):
    """Weighted scatter about the centre (the default covariance prior of variational Bayes)."""
    Xc = (X - center) * jnp.sqrt(w)[:, None]
    return _kahan(acc, Xc.T @ Xc)


@functools.partial(jax.jit, static_argnums=(4,))
def _posteriors(st, prior, reg_covar, floor, shrinkage):
    return jax.vmap(lambda s: _posterior(s, prior, reg_covar, floor, shrinkage))(st)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _stream_prior(scatter, wtot, given, k, covariance_type, prior_type):
    """The priors in the centred frame (``given``: a dict, None where not given), from the
    data's scatter about the centre."""
    d = scatter.shape[0]
    return _prior_model(jnp.zeros(d, scatter.dtype), scatter / (wtot - 1.0), given, k, covariance_type, prior_type)


@jax.jit
def _bounds(gs, neg_entropy):
    return jax.vmap(_lower_bound)(gs, neg_entropy)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _params(st, reg_covar, covariance_type, shrinkage):
    return jax.vmap(lambda s: _params_from_stats(s, reg_covar, covariance_type, shrinkage))(st)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _reservoir_inits(keys, Xs, ws, k, init, n_seedings=1):
    """Per restart, from the (centred) sample: k-means++ centres, or the stats of k rows.

    ``n_seedings > 1`` (used when the sample is not the whole data): as scikit-learn's
    MiniBatchKMeans, seed that many times on the sample, run Lloyd there, and keep the
    centres of lowest sample inertia; a single k-means++ seeding leaves a cluster
    unseeded now and then, and on a sample trying again is cheap.
    """
    if init == "random_from_data":
        return jax.vmap(lambda key: _init_resp(key, Xs, ws, k, init))(keys)
    if n_seedings == 1:
        return jax.vmap(lambda key: _kmeans_pp(key, Xs, ws, k))(keys)

    def best_of(key):
        def one(j):
            c = _lloyd_centers(Xs, ws, _kmeans_pp(jax.random.fold_in(key, j), Xs, ws, k), _lloyd_iters(init))
            d2 = jnp.sum(Xs * Xs, -1)[:, None] - 2 * Xs @ c.T + jnp.sum(c * c, -1)[None]
            return c, jnp.sum(ws * jnp.min(d2, 1))

        cs, inertia = jax.vmap(one)(jnp.arange(n_seedings))
        return cs[jnp.argmin(inertia)]

    return jax.vmap(best_of)(keys)


@functools.partial(jax.jit, static_argnums=(3, 4, 5))
def _stats_of(Xs, resps, ws, k, covariance_type, shrinkage):
    return jax.vmap(lambda r: _stats_from_resp(Xs, r * ws[:, None], covariance_type, shrinkage))(resps)


@jax.jit
def _em_update(state, new_gs, st, ll, wtot, tol):
    """Advance the restarts still running by one EM iteration, exactly as fit's while_loop."""
    gs, st_last, lb, it, hist, active, conv = state
    new_lb = ll / wtot

    def sel(a, b):
        return jax.tree_util.tree_map(
            lambda x, y: jnp.where(active.reshape(active.shape + (1,) * (x.ndim - 1)), y, x), a, b)

    now = _converged(new_lb, lb, tol)
    hist = jnp.where(active[:, None] & (jnp.arange(hist.shape[1])[None] == it[:, None]), new_lb[:, None], hist)
    return (sel(gs, new_gs), sel(st_last, st), jnp.where(active, new_lb, lb), it + active, hist,
            active & ~now & (it + 1 < hist.shape[1]), jnp.where(active, now, conv))


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


def fit_batches(key: jax.Array, batches: Any, n_components: int, *, covariance_type: str = "full",
                reg_covar: float = 1e-6, shrinkage: float | str | None = None, shrinkage_target: str = "identity",
                init: Any = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
                batch_size: int | None = None,
                init_size: int = 100_000, dtype: Any = None, mesh: jax.sharding.Mesh | None = None,
                callback: Callable[[int, float], Any] | None = None,
                progress: bool | None = None) -> tuple[GMM, FitInfo]:
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
      n_components, covariance_type, reg_covar, shrinkage, shrinkage_target, init, n_init,
        max_iter, tol: as :func:`toolkit.gmm.fit`.
      batch_size: rows per jitted step (default: the first batch's rows rounded up to their size
        bucket, see :mod:`toolkit._buckets`; 65536 for an array). Larger batches are cut, smaller
        ones padded.
      init_size: rows sampled for the seeding (see above).
      dtype: computation dtype (default: the data's float dtype).
      mesh: optional ``jax.sharding.Mesh``: each batch is also sharded over its devices
        (``batch_size`` must then divide by the device count).
      callback: called after every pass with ``(iteration, best lower bound)``.
      progress: a tqdm bar over the EM passes on stderr (with the lower bound); default
        None shows it only when stderr is a terminal.
    Returns:
      ``(GMM, FitInfo)`` as :func:`toolkit.gmm.fit`.
    Raises:
      ValueError / TypeError: bad options; an empty iterable; a batch that is not 2-D,
        has another feature count than batch 0, or holds NaN/inf (the message names the
        batch and row); a one-shot iterator (pass a list or a function instead).

    >>> from toolkit import gmm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 6])
    >>> g, info = gmm.fit_batches(jax.random.key(0), [X[:200], X[200:400], X[400:]], 2)
    >>> sorted(np.asarray(g.means).round(0)[:, 0].tolist()), bool(info.converged)
    ([-0.0, 6.0], True)
    """
    return _stream(key, batches, n_components, where="gmm.fit_batches", vb=None, covariance_type=covariance_type,
                   reg_covar=reg_covar, shrinkage=shrinkage, shrinkage_target=shrinkage_target, init=init,
                   n_init=n_init, max_iter=max_iter, tol=tol, batch_size=batch_size, init_size=init_size, dtype=dtype,
                   mesh=mesh, callback=callback, progress=progress)


def fit_bayesian_batches(key: jax.Array, batches: Any, n_components: int, *,
                         weight_concentration_prior_type: str = "dirichlet_process",
                         weight_concentration_prior: float | None = None, mean_precision_prior: float | None = None,
                         mean_prior: Any = None, degrees_of_freedom_prior: float | None = None,
                         covariance_prior: Any = None, covariance_type: str = "full", reg_covar: float = 1e-6,
                         shrinkage: float | str | None = None, shrinkage_target: str = "identity",
                         init: str = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
                         batch_size: int | None = None, init_size: int = 100_000, dtype: Any = None,
                         mesh: jax.sharding.Mesh | None = None, callback: Callable[[int, float], Any] | None = None,
                         progress: bool | None = None):
    """Streaming variational Bayes: :func:`toolkit.gmm.fit_bayesian` over batches, one pass
    per iteration (the variational E-step's statistics summed batch by batch, as
    :func:`fit_batches` sums EM's), plus one pass for the data's scatter (the default
    covariance prior). Same inputs as :func:`fit_batches`; the options and the result
    (``(BayesianGMM, FitInfo)``) are :func:`~toolkit.gmm.fit_bayesian`'s (``init``: an init
    name). It reaches the posterior ``fit_bayesian`` reaches on the concatenated data, under
    the conditions :func:`fit_batches` states for EM.

    >>> from toolkit import gmm
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 6])
    >>> bg, info = gmm.fit_bayesian_batches(jax.random.key(0), [X[:200], X[200:]], 5)
    >>> int(np.sum(np.asarray(bg.weights) > 0.05)), bool(info.converged)
    (2, True)
    """
    priors = dict(weight_concentration_prior=weight_concentration_prior, mean_precision_prior=mean_precision_prior,
                  mean_prior=mean_prior, degrees_of_freedom_prior=degrees_of_freedom_prior,
                  covariance_prior=covariance_prior)
    return _stream(key, batches, n_components, where="gmm.fit_bayesian_batches",
                   vb={"prior_type": weight_concentration_prior_type, "priors": priors},
                   covariance_type=covariance_type, reg_covar=reg_covar, shrinkage=shrinkage,
                   shrinkage_target=shrinkage_target, init=init, n_init=n_init, max_iter=max_iter, tol=tol,
                   batch_size=batch_size, init_size=init_size, dtype=dtype, mesh=mesh, callback=callback,
                   progress=progress)


def _stream(key, batches, n_components, *, where, vb, covariance_type, reg_covar, shrinkage, shrinkage_target,
            init, n_init, max_iter, tol, batch_size, init_size, dtype, mesh, callback, progress):
    """The streaming fit of :func:`fit_batches` (``vb=None``: EM) and of
    :func:`toolkit.gmm.fit_bayesian_batches` (``vb={"prior_type", "given"}``: variational
    Bayes, the priors given or None). One pass per iteration either way."""
    check_positive_int(batch_size, "batch_size", where, optional=True)
    check_positive_int(init_size, "init_size", where)
    if dtype is not None:
        dtype = result_dtype(dtype)
    src = _Source(batches, where, batch_size=batch_size, dtype=dtype, multi_pass=True)
    # the feature count is known only from the first batch: peek at it for the checks
    first = next(iter(src.chunks(first=True)))
    shrinkage, gmm_init = _check_fit_options(where, src.d, src.dtype, n_components, covariance_type, reg_covar,
                                                shrinkage, init, n_init, max_iter, shrinkage_target)
    if mesh is not None and src.capacity % mesh.size:
        raise ValueError(f"{where}: batch_size={src.capacity} must be a multiple of the mesh's {mesh.size} devices")
    del first
    if vb is not None:
        if gmm_init is not None:
            raise ValueError(f"{where}: init must be an init name here, got a {type(gmm_init).__name__}")
        vb = dict(vb, given=_bayesian_options(where, src.d, src.dtype, covariance_type, vb["prior_type"],
                                              vb["priors"]))
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

    params = functools.partial(_params, reg_covar=rc, covariance_type=covariance_type, shrinkage=shrinkage)
    if vb is not None:  # the priors need one more pass: the data's scatter
        scatter = run_pass(_scatter_step, None, _kahan_zeros(jnp.zeros((src.d, src.d), dt)), lambda ch: (center,))
        given = {name: None if v is None else jnp.asarray(v, dt) - (center if name == "mean_prior" else 0)
                 for name, v in vb["given"].items()}
        prior = _stream_prior(scatter, wtot, given, k, covariance_type, vb["prior_type"])
        floor = jnp.trace(scatter) / (src.d * wtot)
        params = functools.partial(_posteriors, prior=prior, reg_covar=rc, floor=floor, shrinkage=shrinkage)

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
            gs = params(_stats_of(Xs, resps, ws, k, covariance_type, shrinkage))
        else:
            if name == "random":
                cs = jnp.zeros((R, k, src.d), dt)
            else:
                # the whole data: seed exactly as fit(); a sample: best of several seedings
                cs = _reservoir_inits(keys, Xs, ws, k, name, 1 if n <= init_size else _SAMPLE_SEEDINGS)
                for _ in range(_lloyd_iters(name)):
                    sums, cnt = run_pass(_lloyd_step, cs, _kahan_zeros((cs, jnp.zeros((R, k), dt))),
                                         lambda ch: (center,))
                    cs = jax.vmap(_lloyd_update)(cs, sums, cnt)
            def init_args(ch):
                rows = jnp.asarray(np.where(ch.rows >= 0, ch.rows + offset, -1), _index_dtype())  # global rows
                return rows, center, keys, name == "random", covariance_type, shrinkage

            st = run_pass(_init_stats_step, cs, _kahan_zeros(zero_st), init_args)
            gs = params(st)

    # ---- EM, one pass per iteration
    fast = _use_features(src.d, k, dt, covariance_type, shrinkage)
    st0 = _stats_zero(R, k, src.d, dt, covariance_type, shrinkage)
    state = (gs, st0, jnp.full(R, -jnp.inf, dt), jnp.zeros(R, jnp.int32), jnp.full((R, int(max_iter)), jnp.nan, dt),
             jnp.ones(R, bool), jnp.zeros(R, bool))
    tol_ = jnp.asarray(tol, dt)
    # progress=None: a bar only when stderr is a terminal (tqdm's own test)
    bar = tqdm(total=int(max_iter), desc="gmm.fit_batches: EM passes", unit="pass", leave=False,
               disable=None if progress is None else not progress, file=sys.stderr)
    with bar:
        for it in range(int(max_iter)):
            if vb is None:
                ll, st = run_pass(_em_batch_step, state[0], _kahan_zeros((jnp.zeros(R, dt), st0)),
                                  lambda ch: (center, covariance_type, shrinkage, fast))
                state = _em_update(state, params(st), st, ll, wtot, tol_)
            else:  # the bound is the ELBO of the new posterior, not a mean log-likelihood
                neg_entropy, st = run_pass(_vb_batch_step, state[0], _kahan_zeros((jnp.zeros(R, dt), st0)),
                                           lambda ch: (center, shrinkage, fast))
                new = params(st)
                state = _em_update(state, new, st, _bounds(new, neg_entropy), jnp.ones((), dt), tol_)
            best = float(jnp.max(state[2])) if callback is not None or not bar.disable else None
            bar.update(1)
            if not bar.disable:
                bar.set_postfix(lower_bound=f"{best:.6g}")
            if callback is not None:
                callback(it + 1, best)
            if not bool(jnp.any(state[5])):
                break
    gs, st_last, lbs, its, hist, _, convs = state
    hist = jnp.where(jnp.arange(hist.shape[1])[None] >= its[:, None], lbs[:, None], hist)
    deficient = jax.vmap(lambda s: _rank_deficient(s, covariance_type))(st_last)
    g, info = _best_restart(gs, its, lbs, hist, convs, deficient, center, jnp.asarray(True))
    if vb is not None:
        g = dataclasses.replace(g, mean_prior=g.mean_prior + center)
    return g, info


def _stats_zero(R, k, d, dtype, covariance_type, shrinkage):
    """Zero statistics with a leading restart axis (the accumulators' shapes)."""
    s2 = (k, d, d) if COVARIANCE[covariance_type].matrix else (k, d)
    z = lambda *s: jnp.zeros((R,) + s, dtype)  # noqa: E731
    if _needs_diagonal_fourth_moment(shrinkage):
        return _Stats(z(k), z(k, d), z(*s2), z(k, d), z(k), z(k, d), z(k, d))
    if _needs_fourth_moment(shrinkage):
        return _Stats(z(k), z(k, d), z(*s2), z(k, d), z(k))
    return _Stats(z(k), z(k, d), z(*s2))
