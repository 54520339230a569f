"""Run by tests/test_gmm_scale.py in a process started with 4 host devices: compares the
sharded fit (and a sharded streaming fit) with the single-device one; prints JSON."""
import json
import os

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import toolkit  # noqa: E402
from toolkit import gmm  # noqa: E402

if os.environ.get("TOOLKIT_JAX_CACHE", "1") != "0":
    toolkit.enable_compilation_cache()


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(334, 3)) + 5 * i for i in range(3)])[:1001]  # 1001: uneven over 4
    Xs, w = gmm.shard_rows(X)
    errs = {}
    fits = {}
    for init in ("kmeans++", "random", "random_from_data"):
        g1, i1 = gmm.fit(jax.random.key(0), X, 3, init=init, n_init=2)
        g2, i2 = gmm.fit(jax.random.key(0), Xs, 3, init=init, n_init=2, sample_weight=w)
        errs[f"{init}/lower_bounds"] = rel(i2.lower_bounds, i1.lower_bounds)
        errs[f"{init}/means"] = rel(g2.means, g1.means)
        errs[f"{init}/covariances"] = rel(g2.covariances, g1.covariances)
        assert int(i1.n_iter) == int(i2.n_iter)
        fits[init] = g1
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("rows",))
    g3, i3 = gmm.fit_batches(jax.random.key(0), [X[i:i + 256] for i in range(0, len(X), 256)], 3, n_init=2,
                             mesh=mesh)
    errs["batches/means"] = rel(g3.means, fits["kmeans++"].means)
    errs["batches/covariances"] = rel(g3.covariances, fits["kmeans++"].covariances)
    # variational Bayes on the same sharded rows (its streaming shares fit_batches' mesh path)
    b1, j1 = gmm.fit_bayesian(jax.random.key(0), X, 4, n_init=2)
    b2, j2 = gmm.fit_bayesian(jax.random.key(0), Xs, 4, n_init=2, sample_weight=w)
    for name, b, j in (("bayesian_sharded", b2, j2),):
        errs[f"{name}/lower_bounds"] = rel(j.lower_bounds, j1.lower_bounds)
        errs[f"{name}/means"] = rel(b.means, b1.means)
        errs[f"{name}/covariances"] = rel(b.covariances, b1.covariances)
    print(json.dumps({
        "devices": jax.device_count(),
        "padded_rows": int(Xs.shape[0]),
        "x_shards": len(Xs.sharding.device_set),
        "params_replicated": bool(g2.means.sharding.is_fully_replicated),
        "max_rel_err": errs,
    }))


if __name__ == "__main__":
    main()
