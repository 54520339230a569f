"""Rows sharded over devices, and sums across the processes of a ``jax.distributed`` job.

The EM statistics are sums over samples, so a row-sharded ``jax.Array`` goes straight
through :func:`toolkit.gmm.fit`: XLA's SPMD partitioner turns every sum over rows into a
per-device sum plus an all-reduce, and the (small) parameters stay replicated.
:func:`shard_rows` builds such an array."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike


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


def shard_rows(X: ArrayLike, mesh: jax.sharding.Mesh | None = None, *,
               sample_weight: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
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

    >>> from toolkit import gmm
    >>> X = np.random.default_rng(0).normal(size=(10, 3))
    >>> Xs, w = shard_rows(X)            # padded to a multiple of the device count
    >>> g, info = gmm.fit(jax.random.key(0), Xs, 2, sample_weight=w)
    >>> float(w.sum()), g.means.shape
    (10.0, (2, 3))
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
