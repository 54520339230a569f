"""Compilation as users meet it: repeated calls compile nothing, new sizes reuse the
executables of their size bucket, and padding to a bucket changes no result.

Compilations are counted with JAX's monitoring events (toolkit._monitor.CompileLog),
not with timing."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import conic, gmm, so3
from toolkit._buckets import FINE_FROM, bucket
from toolkit._monitor import CompileLog
from toolkit.estimators import BayesianGaussianMixture, GaussianMixture


def _blobs(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return centres[np.arange(n) % 3] + rng.normal(size=(n, 2))


def _ellipse(n, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    return np.stack([3 * np.cos(t) + 1, 2 * np.sin(t) - 1], -1) + 0.01 * rng.normal(size=(n, 2))


def _pair(n, seed=0):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, 3))
    R = np.asarray(so3.exp(jnp.array([0.3, -0.2, 0.5])))
    return P, P @ R.T + 0.01 * rng.normal(size=(n, 3))


def _rotation_round_trip(P):
    r = so3.Rotation.from_euler("xyz", P[:8])
    return [r.as_quat(canonical=True), r.as_rotvec(), r.as_mrp(), (r * r.inv()).magnitude(), r.apply(P[:8]),
            r.mean().as_matrix(), (r ** 0.5).as_euler("ZXZ"), so3.Rotation.from_matrix(r.as_matrix()).as_quat(),
            so3.Rotation.align_vectors(P[:5], P[3:8])[1]]


def test_buckets_are_few_and_tight():
    sizes = range(1, 100_000, 37)
    assert all(bucket(n) >= n for n in sizes)
    assert all(bucket(bucket(n)) == bucket(n) for n in sizes)
    assert max(bucket(n) / n for n in range(9, FINE_FROM)) <= 1.5
    assert max(bucket(n) / n for n in range(FINE_FROM + 1, 100_000, 7)) <= 1.125
    assert len({bucket(n) for n in range(1000, 2001)}) == 3  # 1024, 1536, 2048


def test_repeated_calls_compile_nothing():
    X = _blobs(500)
    g, _ = gmm.fit(jax.random.key(0), X, 3)
    est = GaussianMixture(3, random_state=0).fit(X)
    pts, (P, Q) = _ellipse(50), _pair(40)
    fit0 = conic.fit(pts)
    calls = {
        "gmm.fit": lambda: gmm.fit(jax.random.key(0), X, 3),
        "gmm.predict": lambda: gmm.predict(g, X),
        "gmm.log_prob": lambda: gmm.log_prob(g, X),
        "gmm.predict_proba": lambda: gmm.predict_proba(g, X),
        "gmm.score": lambda: gmm.score(g, X),
        "gmm.e_step": lambda: gmm.e_step(g, X),
        "GaussianMixture.fit": lambda: GaussianMixture(3, random_state=0).fit(X),
        "GaussianMixture.predict": lambda: est.predict(X),
        "GaussianMixture.score_samples": lambda: est.score_samples(X),
        "GaussianMixture.score": lambda: est.score(X),
        "conic.fit": lambda: conic.fit(pts),
        "conic.residuals": lambda: conic.residuals(fit0.coeffs, pts, kind="geometric"),
        "so3.kabsch": lambda: so3.kabsch(P, Q),
        "so3.fit": lambda: so3.fit(P, Q, loss="huber", scale=0.1),
        "so3.mean": lambda: so3.mean(so3.exp(jnp.asarray(P[:10] * 0.1)), method="geodesic"),
        "conic.fit(circle)": lambda: conic.fit(pts, kind="circle", method="geometric"),
        "conic.ransac": lambda: conic.ransac(jax.random.key(0), pts, threshold=0.05, n_trials=50),
        "conic.covariance": lambda: conic.covariance(fit0.coeffs, pts),
        "conic.EllipseModel": lambda: conic.EllipseModel.from_estimate(pts).residuals(pts[:7]),
        "gmm.fit_bayesian": lambda: gmm.fit_bayesian(jax.random.key(0), X, 3, max_iter=20),
        "BayesianGaussianMixture.fit": lambda: BayesianGaussianMixture(n_components=3, random_state=0,
                                                                       max_iter=20).fit(X),
        "so3.Rotation": lambda: _rotation_round_trip(P),
        "so3.Slerp": lambda: so3.Slerp([0, 1, 2], so3.Rotation.from_rotvec(P[:3] * 0.1))(np.linspace(0, 2, 5)),
    }
    for name, call in calls.items():
        jax.block_until_ready(call())  # may compile
        with CompileLog() as log:
            jax.block_until_ready(call())
        assert log.compiles == 0, f"{name} compiled again: {log.compiled}"


def test_traced_options_share_one_executable():
    """tol, reg_covar and max_iter (up to its history bucket) are traced."""
    X = _blobs(300)
    gmm.fit(jax.random.key(0), X, 3, covariance_type="diag")
    with CompileLog() as log:
        for tol, reg, it in [(1e-2, 1e-6, 100), (1e-6, 1e-3, 7), (0.0, 1e-4, 128)]:
            _, info = gmm.fit(jax.random.key(0), X, 3, covariance_type="diag", tol=tol, reg_covar=reg, max_iter=it)
            assert info.history.shape == (it,)
            assert int(info.n_iter) <= it
    assert log.compiles == 0, log.compiled
    P, Q = _pair(30)
    so3.fit(P, Q)
    with CompileLog() as log:
        _, info = so3.fit(P, Q, max_iter=5, tol=1e-3)
    assert log.compiles == 0 and info.history.shape == (6,)


def test_size_sweep_compiles_once_per_bucket():
    """Fitting and predicting on n = 1000, 1100, ..., 2000 rows: at most 2 compilations of
    each executable after the first size (1024 -> 1536 -> 2048)."""
    est = GaussianMixture(2, covariance_type="diag", random_state=0)
    est.fit(_blobs(1000)).predict(_blobs(1000))
    with CompileLog() as log:
        for n in range(1100, 2001, 100):
            X = _blobs(n, seed=n)
            labels = est.fit(X).predict(X)
            assert labels.shape == (n,)
            assert est.score_samples(X[:n - 7]).shape == (n - 7,)
    names = log.compiled
    assert all(names.count(name) <= 2 for name in set(names)), names
    assert log.compiles <= 2 * 3, names  # fit, predict, score_samples
    with CompileLog() as log:
        for n in (37, 45, 50, 64):
            conic.fit(_ellipse(n))
            so3.kabsch(*_pair(n))
    assert log.compiles <= 2 * 3, log.compiled  # buckets 48 and 64: conic's two per-point stages, kabsch


def _assert_close(a, b, rtol=1e-9):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape
        if x.dtype.kind in "biu":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_padding_changes_no_gmm_result(covariance_type):
    """Inside a caller's jit nothing is padded: that is the unpadded computation."""
    X = _blobs(1100)  # padded to 1536
    key = jax.random.key(3)
    fit = lambda X: gmm.fit(key, X, 3, covariance_type=covariance_type, n_init=2)  # noqa: E731
    padded, unpadded = fit(X), jax.jit(fit)(jnp.asarray(X))
    _assert_close(padded, unpadded)
    g = padded[0]
    for f in (gmm.log_prob, gmm.predict, gmm.predict_proba, gmm.score, gmm.bic):
        _assert_close(f(g, X[:1001]), jax.jit(f)(g, jnp.asarray(X[:1001])))
    w = np.random.default_rng(0).uniform(0.5, 2.0, 1001)
    _assert_close(gmm.e_step(g, X[:1001], w), jax.jit(gmm.e_step)(g, jnp.asarray(X[:1001]), w))


def test_padding_changes_no_conic_or_so3_result():
    pts = _ellipse(37)  # padded to 48
    for method in ("direct", "geometric"):
        _assert_close(conic.fit(pts, method=method), jax.jit(lambda p: conic.fit(p, method=method))(pts))
    batch = np.stack([_ellipse(21, seed=s) for s in range(3)])  # 3 fits -> 4, 21 points -> 24
    _assert_close(conic.fit(batch, kind="ellipse"), jax.jit(lambda p: conic.fit(p, kind="ellipse"))(batch))
    c = conic.fit(pts).coeffs
    _assert_close(conic.residuals(c, pts, kind="geometric"),
                  jax.jit(lambda p: conic.residuals(c, p, kind="geometric"))(pts))
    P, Q = _pair(37)
    _assert_close(so3.kabsch(P, Q), jax.jit(so3.kabsch)(P, Q))
    _assert_close(so3.fit(P, Q, loss="cauchy", scale=0.05), jax.jit(lambda a, b: so3.fit(a, b, loss="cauchy",
                                                                                           scale=0.05))(P, Q))
    Rs = so3.exp(jnp.asarray(P[:11] * 0.3))
    _assert_close(so3.mean(Rs, method="geodesic"), jax.jit(lambda r: so3.mean(r, method="geodesic"))(Rs))
