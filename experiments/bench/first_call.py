"""First call of one public entry point in a fresh process: ``python -m
experiments.bench.first_call ENTRY DTYPE [CACHE_DIR]`` prints one JSON line with the wall time of the
first call (trace + compile + run, imports excluded) and of the second, and the trace and
compile time and count that JAX's monitoring events report for the first call.

Without CACHE_DIR it runs with no persistent compilation cache, as a new user meets it;
with one, through :func:`toolkit.enable_compilation_cache`. ENTRY "size_sweep" fits and
predicts over n = 1000..2000 rows instead and counts the compilations. The latency benchmark (:mod:`experiments.bench.latency`) runs it once per entry point and
dtype. ENTRY "sklearn.GaussianMixture.fit" measures the peer the same way.
"""
from __future__ import annotations

import json
import sys
import time


def _inputs(np, dtype):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(250, 2)), rng.normal(size=(250, 2)) + 5]).astype(dtype)
    t = rng.uniform(0, 2 * np.pi, 50)
    pts = (np.stack([3 * np.cos(t) + 1, 2 * np.sin(t)], -1) + 0.01 * rng.normal(size=(50, 2))).astype(dtype)
    P = rng.normal(size=(100, 3)).astype(dtype)
    c, s = np.cos(0.4), np.sin(0.4)
    Q = (P @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T).astype(dtype)
    return X, pts, P, Q


def entry_points(np, jax, dtype):
    """``{name: (setup, call)}``: ``setup()`` builds what the call needs without compiling
    the call's own code; ``call(state)`` is the measured first call (inputs of ≤ 1k points)."""
    import jax.numpy as jnp

    from toolkit import autodiff, conic, gmm, so3
    from toolkit.estimators import GaussianMixture

    X, pts, P, Q = _inputs(np, dtype)
    cov = np.stack([np.eye(2), np.eye(2)]).astype(dtype)
    model = lambda: gmm.from_covariances(np.array([0.5, 0.5], dtype), np.array([[0, 0], [5, 5]], dtype), cov)  # noqa: E731
    ellipse = np.array([4.0, 0, 9, -8, 0, -32], dtype)
    f = lambda x: jnp.sin(x) * jnp.sum(x ** 2)  # noqa: E731
    x0 = np.linspace(0.1, 1.0, 5).astype(dtype)

    def fitted():
        with _quiet():
            return GaussianMixture(2, random_state=0).fit(X)

    return {
        "gmm.fit": (lambda: None, lambda _: gmm.fit(jax.random.key(0), X, 2)),
        "gmm.predict": (model, lambda g: gmm.predict(g, X)),
        "gmm.log_prob": (model, lambda g: gmm.log_prob(g, X)),
        "gmm.predict_proba": (model, lambda g: gmm.predict_proba(g, X)),
        "gmm.score": (model, lambda g: gmm.score(g, X)),
        "GaussianMixture.fit": (lambda: None, lambda _: GaussianMixture(2, random_state=0).fit(X)),
        "GaussianMixture.predict": (fitted, lambda est: est.predict(X[:300])),
        "GaussianMixture.score_samples": (fitted, lambda est: est.score_samples(X[:300])),
        "conic.fit": (lambda: None, lambda _: conic.fit(pts)),
        "conic.fit(geometric)": (lambda: None, lambda _: conic.fit(pts, method="geometric")),
        "conic.residuals": (lambda: None, lambda _: conic.residuals(ellipse, pts, kind="geometric")),
        "so3.kabsch": (lambda: None, lambda _: so3.kabsch(P, Q)),
        "so3.fit": (lambda: None, lambda _: so3.fit(P, Q)),
        "so3.mean": (lambda: np.asarray(so3.exp(P[:20] * 0.1)), lambda Rs: so3.mean(Rs)),
        "so3.exp": (lambda: None, lambda _: so3.exp(P)),
        "so3.log": (lambda: np.asarray(so3.exp(P)), lambda Rs: so3.log(Rs)),
        "autodiff.jacobian": (lambda: None, lambda _: autodiff.jacobian(f)(x0)),
        "autodiff.hvp": (lambda: None, lambda _: autodiff.hvp(lambda x: jnp.sum(f(x)), x0, x0)),
    }


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


GRID = {"n_components": [1, 2, 3, 4, 5, 6], "covariance_type": ["full", "diag"]}


def grid_data(np):
    """2000 x 4 rows from 4 clusters: the GridSearchCV comparison's data."""
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=4.0, size=(4, 4))
    return centres[np.arange(2000) % 4] + rng.normal(size=(2000, 4))


def _grid_search(np, estimator):
    from sklearn.model_selection import GridSearchCV

    X = grid_data(np)

    def call(_):
        with _quiet():
            return GridSearchCV(estimator, GRID, cv=5).fit(X).best_params_

    return lambda: None, call


def _sklearn_entry(np, dtype, name):
    from sklearn.mixture import GaussianMixture

    if name == "sklearn.GridSearchCV":
        return _grid_search(np, GaussianMixture(random_state=0))
    X = _inputs(np, dtype)[0]
    return lambda: None, lambda _: GaussianMixture(2, random_state=0).fit(X)


SWEEP = list(range(1000, 2001, 100))


def size_sweep(estimator) -> dict:
    """``fit(X).predict(X)`` for n = 1000, 1100, ..., 2000 rows: compilations after the
    first size (per function, and in all), and the sweep's wall time."""
    import numpy as np

    from toolkit._monitor import CompileLog

    rng = np.random.default_rng(2)
    data = [rng.normal(size=(n, 4)) + 4 * (np.arange(n) % 3)[:, None] for n in SWEEP]
    t0 = time.perf_counter()
    with _quiet():
        estimator.fit(data[0]).predict(data[0])
        with CompileLog() as log:
            for X in data[1:]:
                estimator.fit(X).predict(X)
    names = log.compiled
    return {"sweep_s": time.perf_counter() - t0, "compiles_after_first": log.compiles,
            "max_per_function": max([names.count(n) for n in names], default=0), "compiled": names}


def measure(name: str, dtype: str, cache: str | None = None) -> dict:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", dtype == "float64")
    import toolkit
    from toolkit._monitor import CompileLog

    if cache:
        toolkit.enable_compilation_cache(cache)
    if name.endswith("size_sweep"):
        from sklearn.mixture import GaussianMixture as Peer

        from toolkit.estimators import GaussianMixture

        est = Peer(3, random_state=0) if name.startswith("sklearn.") else GaussianMixture(3, random_state=0)
        return {"entry": name, "dtype": dtype, **size_sweep(est)}

    if name.startswith("sklearn."):
        setup, call = _sklearn_entry(np, dtype, name)
    elif name == "GridSearchCV":
        from toolkit.estimators import GaussianMixture

        setup, call = _grid_search(np, GaussianMixture(random_state=0))
    else:
        setup, call = entry_points(np, jax, dtype)[name]
    state = setup()
    with CompileLog() as log:
        t0 = time.perf_counter()
        jax.block_until_ready(call(state))
        first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(call(state))
    second = time.perf_counter() - t0
    result = call(state)
    return {"entry": name, "dtype": dtype, "first_s": first, "second_s": second, "compiles": log.compiles,
            "compile_s": log.compile_seconds, "traces": log.traces, "trace_s": log.trace_seconds,
            "compiled": log.compiled, "result": result if isinstance(result, dict) else None}


if __name__ == "__main__":
    print(json.dumps(measure(*sys.argv[1:4])))
