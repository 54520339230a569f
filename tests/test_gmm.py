"""toolkit.gmm against scikit-learn, scipy and closed forms."""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import multivariate_normal
from sklearn.covariance import ledoit_wolf, oas
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from toolkit import gmm

COV_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(size=(150, 3)) + 5, rng.normal(size=(100, 3)) * 0.5,
                           rng.normal(size=(50, 3)) @ np.diag([2, 1, 0.1]) - 4])


def sk_params_to_gmm(sk):
    return gmm.from_covariances(sk.weights_, sk.means_, sk.covariances_, sk.covariance_type)


def sk_precisions(g):
    if g.covariance_type in ("diag", "spherical"):
        return np.asarray(g.precisions_cholesky) ** 2
    return np.linalg.inv(np.asarray(g.covariances))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_lower_bound_trajectory_matches_sklearn(blobs, ct):
    """Same data, same start: the per-iteration lower bound agrees to 1e-6 relative (float64)."""
    sk0 = GaussianMixture(3, covariance_type=ct, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk0.fit(blobs)
        g0 = sk_params_to_gmm(sk0)
        want = []
        for it in range(1, 9):
            sk = GaussianMixture(3, covariance_type=ct, max_iter=it, tol=0, weights_init=sk0.weights_,
                                 means_init=sk0.means_, precisions_init=sk_precisions(g0)).fit(blobs)
            want.append(sk.lower_bound_)
    g, info = gmm.fit(jax.random.key(0), blobs, 3, covariance_type=ct, init=g0, max_iter=8, tol=0.0)
    np.testing.assert_allclose(info.history, want, rtol=1e-6)
    np.testing.assert_allclose(g.means, sk.means_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.covariances, sk.covariances_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g.precisions_cholesky, sk.precisions_cholesky_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gmm.bic(g, blobs), sk.bic(blobs), rtol=1e-9)
    np.testing.assert_allclose(gmm.aic(g, blobs), sk.aic(blobs), rtol=1e-9)
    np.testing.assert_allclose(gmm.predict_proba(g, blobs), sk.predict_proba(blobs), atol=1e-9)
    np.testing.assert_array_equal(gmm.predict(g, blobs), sk.predict(blobs))


@pytest.mark.parametrize("ct", COV_TYPES)
def test_log_prob_against_scipy(blobs, ct):
    g, _ = gmm.fit(jax.random.key(1), blobs, 3, covariance_type=ct)
    cov = np.asarray(gmm.model._full_cov(g))
    dens = sum(float(w) * multivariate_normal(m, c).pdf(blobs) for w, m, c in zip(g.weights, g.means, cov))
    np.testing.assert_allclose(gmm.log_prob(g, blobs), np.log(dens), rtol=1e-10)
    assert float(gmm.score(g, blobs)) == pytest.approx(np.mean(np.log(dens)), rel=1e-10)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_degenerate_data_never_gives_nan(ct):
    X = np.repeat(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [4.0, 0.0, 1.0]]), 20, axis=0)  # duplicates
    for reg in (1e-6, 0.0):
        g, info = gmm.fit(jax.random.key(2), X, 3, covariance_type=ct, reg_covar=reg)
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g)), reg
        assert np.isfinite(float(info.lower_bound))
        if ct in ("full", "tied"):  # two distinct points span a line at most
            assert np.all(np.asarray(info.rank_deficient))
    # d > points per component
    Xw = np.random.default_rng(3).normal(size=(12, 20))
    g, info = gmm.fit(jax.random.key(3), Xw, 3, covariance_type=ct)
    assert np.all(np.isfinite(gmm.log_prob(g, Xw)))
    if ct in ("full", "tied"):  # 12 points in 20-D: every scatter matrix is singular
        assert np.all(np.asarray(info.rank_deficient))


def test_rank_deficiency_is_reported_per_component():
    """Circle in 3-D (a plane) for one component, full-rank blob for the other."""
    rng = np.random.default_rng(5)
    t = rng.uniform(0, 2 * np.pi, 300)
    circle = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    blob = rng.normal(size=(300, 3)) * 0.3 + 10.0
    g, info = gmm.fit(jax.random.key(0), np.concatenate([circle, blob]), 2)
    assert np.all(np.isfinite(g.covariances)) and bool(info.converged)
    flat = np.asarray(gmm.predict(g, circle[:1]))[0]
    np.testing.assert_array_equal(info.rank_deficient, np.arange(2) == flat)


def test_float_shrinkage_is_convex_combination_toward_scaled_identity():
    X = np.random.default_rng(4).normal(size=(200, 4)) @ np.diag([3, 1, 0.5, 0.1])
    S = np.cov(X.T, bias=True)
    target = np.trace(S) / 4 * np.eye(4)
    g = gmm.m_step(X, np.zeros((200, 1)), shrinkage=0.3, reg_covar=0.0)
    np.testing.assert_allclose(g.covariances[0], 0.7 * S + 0.3 * target, rtol=1e-10)


@pytest.mark.parametrize("method, oracle", [("ledoit_wolf", ledoit_wolf), ("oas", oas)])
def test_estimated_shrinkage_matches_sklearn_covariance(method, oracle):
    X = np.random.default_rng(5).normal(size=(40, 6)) @ np.random.default_rng(6).normal(size=(6, 6))
    want, _ = oracle(X)
    g = gmm.m_step(X, np.zeros((40, 1)), shrinkage=method, reg_covar=0.0)
    np.testing.assert_allclose(g.covariances[0], want, rtol=1e-9)
    gt = gmm.m_step(X, np.zeros((40, 1)), covariance_type="tied", shrinkage=method, reg_covar=0.0)
    np.testing.assert_allclose(gt.covariances, want, rtol=1e-9)


def test_sample_weight_equals_repeated_rows(blobs):
    rng = np.random.default_rng(7)
    w = rng.integers(1, 4, size=len(blobs))
    g0, _ = gmm.fit(jax.random.key(0), blobs, 3, max_iter=2)
    a, ia = gmm.fit(jax.random.key(0), blobs, 3, init=g0, sample_weight=w.astype(float), max_iter=10, tol=0)
    b, ib = gmm.fit(jax.random.key(0), np.repeat(blobs, w, axis=0), 3, init=g0, max_iter=10, tol=0)
    np.testing.assert_allclose(ia.history, ib.history, rtol=1e-10)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-8)


@pytest.mark.parametrize("init", ["kmeans++", "kmeans", "random", "random_from_data"])
def test_inits_and_restarts_pick_the_best(blobs, init):
    g, info = gmm.fit(jax.random.key(8), blobs, 3, init=init, n_init=3, max_iter=200)
    assert info.lower_bounds.shape == (3,)
    assert float(info.lower_bound) == float(jnp.max(info.lower_bounds))
    assert bool(info.converged)
    assert float(info.lower_bound) > -4.3  # the three blobs are found (sklearn reaches -4.2745)


def test_jit_vmap_and_nan_under_jit(blobs):
    fit = jax.jit(lambda k, X: gmm.fit(k, X, 3, max_iter=50))
    g, info = fit(jax.random.key(0), blobs)
    g2, info2 = gmm.fit(jax.random.key(0), blobs, 3, max_iter=50)
    np.testing.assert_allclose(g.means, g2.means, rtol=1e-12)
    keys = jax.random.split(jax.random.key(1), 2)
    gs, infos = jax.vmap(lambda k: gmm.fit(k, blobs, 3, max_iter=50))(keys)
    assert gs.means.shape == (2, 3, 3)
    bad = blobs.copy()
    bad[5, 1] = np.nan
    _, info_bad = fit(jax.random.key(0), bad)
    assert not bool(info_bad.converged)


def test_sampling_moments():
    g = gmm.from_covariances(np.array([0.3, 0.7]), np.array([[0.0, 0.0], [5.0, 1.0]]),
                             np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, 0.0], [0.0, 0.2]]]))
    X, labels = gmm.sample(jax.random.key(0), g, 200_000)
    assert abs(float(jnp.mean(labels == 1)) - 0.7) < 0.005
    for c in range(2):
        m, C = gmm.weighted_moments(X, (labels == c).astype(float))
        np.testing.assert_allclose(m, g.means[c], atol=0.02)
        np.testing.assert_allclose(C, g.covariances[c], atol=0.03)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (dict(X=np.zeros(10)), r"X must be 2-D \(n_samples, n_features\), got shape \(10,\)"),
        (dict(X=np.zeros((2, 2))), "n_samples=2 should be >= n_components=3"),
        (dict(covariance_type="ful"), "covariance_type='ful' is not one of"),
        (dict(init="kmeans+"), "init='kmeans\\+' is not one of"),
        (dict(reg_covar=-1.0), r"reg_covar must be a finite number in \[0, inf\)"),
        (dict(reg_covar=float("nan")), r"reg_covar must be a finite number in \[0, inf\), got nan"),
        (dict(tol=float("nan")), r"tol must be a finite number in \[0, inf\), got nan"),
        (dict(sample_weight=-np.ones(30)), r"'sample_weight' must be non-negative, got -1 at index \(0,\)"),
        (dict(sample_weight=np.r_[np.ones(29), np.nan]), r"'sample_weight' contains NaN or inf \(first at index \(29,\)"),
        (dict(sample_weight=np.r_[np.ones(29), np.inf]), "'sample_weight' contains NaN or inf"),
        (dict(sample_weight=np.zeros(30)), "'sample_weight' must have a positive total"),
        (dict(X=np.zeros((10, 0))), r"at least one sample and one feature, got shape \(10, 0\)"),
        (dict(X=np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32) * 1e30),
         "has values up to .* too large for float32"),
        (dict(n_init=True), "n_init must be a positive int"),
        (dict(shrinkage=1.5), r"shrinkage must be None, 'ledoit_wolf', 'oas' or a float in \[0, 1\]"),
        (dict(shrinkage="oas", covariance_type="diag"), "needs covariance_type 'full' or 'tied'"),
        (dict(X=np.array([[0.0, 1.0]] * 5 + [[np.inf, 0.0]])), "X contains NaN or inf \\(first at row 5\\)"),
        (dict(sample_weight=np.ones(3)), r"sample_weight must have shape \(30,\)"),
    ],
)
def test_bad_input(kwargs, msg):
    X = kwargs.pop("X", np.random.default_rng(0).normal(size=(30, 2)))
    with pytest.raises(ValueError, match=msg):
        gmm.fit(jax.random.key(0), X, 3, **kwargs)


@pytest.mark.parametrize("k", [2, 3])  # 6-D data: k=2 runs the direct float64 path, k=3 the GEMM-feature one
def test_both_full_covariance_paths_match_sklearn(k):
    rng = np.random.default_rng(7)
    X = np.concatenate([rng.normal(size=(120, 6)) + 3 * i for i in range(k)])
    kw = dict(weights_init=np.full(k, 1 / k), means_init=X[rng.choice(len(X), k, replace=False)],
              precisions_init=np.tile(np.eye(6), (k, 1, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = GaussianMixture(k, covariance_type="full", max_iter=6, tol=0, **kw).fit(X)
    g0 = gmm.from_covariances(kw["weights_init"], kw["means_init"], np.tile(np.eye(6), (k, 1, 1)))
    g, info = gmm.fit(jax.random.key(0), X, k, init=g0, max_iter=6, tol=0.0)
    np.testing.assert_allclose(info.lower_bound, sk.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(g.covariances, sk.covariances_, rtol=1e-8, atol=1e-10)


def test_one_pass_small_path_equals_the_gemm_path(monkeypatch):
    """d=2, k=3 runs EM in one fused pass per iteration; it must agree with the two-GEMM
    feature path, zero sample weights (padding) included."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(200, 2)) + 4, rng.normal(size=(150, 2)) * 0.3, rng.normal(size=(100, 2))])
    sw = rng.uniform(0.5, 2.0, len(X))
    sw[::7] = 0.0
    assert gmm.em._small(2, 3, jnp.float64, "full", None)
    fast = gmm.fit(jax.random.key(1), X, 3, sample_weight=sw, max_iter=30, tol=0.0)
    monkeypatch.setattr(gmm.em, "_SMALL_FEATURE_TERMS", 0)
    assert not gmm.em._small(2, 3, jnp.float64, "full", None)
    ref = gmm.fit(jax.random.key(1), X, 3, sample_weight=sw, max_iter=30, tol=0.0)
    np.testing.assert_allclose(fast[1].history, ref[1].history, rtol=1e-12)
    np.testing.assert_allclose(fast[0].means, ref[0].means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast[0].covariances, ref[0].covariances, rtol=1e-10, atol=1e-12)


_HANG_SCRIPT = """
import jax, numpy as np
jax.config.update("jax_enable_x64", True)
from toolkit import gmm, conic
rng = np.random.default_rng(0)
for n, d, k, n_init in [(1200, 64, 10, 1), (1200, 32, 20, 1), (600, 32, 10, 2)]:
    g, info = gmm.fit(jax.random.key(0), rng.normal(size=(n, d)), k, max_iter=3, n_init=n_init)
    assert np.all(np.isfinite(np.asarray(g.covariances))), (n, d, k)
t = np.linspace(0, 2 * np.pi, 50)
pts = np.stack([3 * np.cos(t), np.sin(t)], -1) + 0.01 * rng.normal(size=(400, 50, 2))
assert bool(np.all(conic.fit(pts, method="hyper").ok))
print("done")
"""


def test_large_full_fits_return(tmp_path):
    """Regression: with jaxlib 0.10 on 2 cores, two independent batched Cholesky (or
    eigh) calls in flight at once deadlocked XLA's CPU worker pool, so these fits never
    returned. Run in a subprocess so a hang fails the test instead of blocking CI."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    try:
        out = subprocess.run([sys.executable, "-c", _HANG_SCRIPT], capture_output=True, text=True,
                             timeout=240, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("gmm.fit / conic.fit did not return within 240 s (deadlock?)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("done")


def test_bad_weights_under_jit_are_flagged_not_converged(blobs):
    """Under jit the values cannot raise: the fit must say it did not converge."""
    fit = jax.jit(lambda X, w: gmm.fit(jax.random.key(0), X, 3, sample_weight=w)[1].converged)
    n = len(blobs)
    assert bool(fit(blobs, np.ones(n)))
    for w in (-np.ones(n), np.zeros(n), np.r_[np.ones(n - 1), np.nan]):
        assert not bool(fit(blobs, w))


def test_float16_is_computed_in_float32_and_predict_checks_values(blobs):
    g, info = gmm.fit(jax.random.key(0), blobs.astype(np.float16), 3)
    assert g.means.dtype == np.float32 and bool(info.converged)
    with pytest.raises(ValueError, match=r"predict: X contains NaN or inf \(first at row 1\)"):
        gmm.predict(g, np.r_[blobs[:1], [[np.nan] * 3]].astype(np.float32))
    with pytest.raises(ValueError, match="too large for float32"):
        gmm.log_prob(g, (blobs * 1e30).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_more_restarts_reproduce_restart_zero_bit_for_bit(blobs, seed):
    """scikit-learn's test_init: n_init=10 must not end below n_init=1, even in the last bit."""
    _, one = gmm.fit(jax.random.key(seed), blobs, 3, n_init=1, tol=1e-8)
    _, many = gmm.fit(jax.random.key(seed), blobs, 3, n_init=4, tol=1e-8)
    assert float(many.lower_bounds[0]) == float(one.lower_bound)
    assert float(many.lower_bound) >= float(one.lower_bound)


@functools.lru_cache(maxsize=None)
def _jitted_converged(k, ct):
    """One jitted fit per option set, reused by every example of the same shape."""
    return jax.jit(lambda X, w: gmm.fit(jax.random.key(0), X, k, covariance_type=ct, sample_weight=w,
                                        max_iter=5)[1].converged)


@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([6, 30]), d=st.sampled_from([1, 3]), dtype=st.sampled_from(["float32", "float64"]),
       bad=st.sampled_from(["none", "nan_x", "inf_x", "neg_w", "nan_w", "zero_w"]), ct=st.sampled_from(COV_TYPES))
def test_property_fit_bad_input(n, d, dtype, bad, ct):
    """Random shapes, dtypes, NaN/inf positions and weights: a ValueError naming the
    argument, or a finite fit; never a NaN or a finite-looking fit of invalid input."""
    rng = np.random.default_rng(n * 7 + d)
    X = rng.normal(size=(n, d)).astype(dtype)
    w = np.ones(n)
    pos = int(rng.integers(n))
    if bad == "nan_x":
        X[pos, 0] = np.nan
    elif bad == "inf_x":
        X[pos, -1] = np.inf
    elif bad == "neg_w":
        w[pos] = -0.5
    elif bad == "nan_w":
        w[pos] = np.nan
    elif bad == "zero_w":
        w[:] = 0
    k = 2
    if bad != "none":
        with pytest.raises(ValueError, match="'?(X|sample_weight)'? (contains|must)"):
            gmm.fit(jax.random.key(0), X, k, covariance_type=ct, sample_weight=w, max_iter=5)
        # the same input under jit: reported, not converged
        conv = _jitted_converged(k, ct)(X, w)
        assert not bool(conv)
        return
    g, info = gmm.fit(jax.random.key(0), X, k, covariance_type=ct, sample_weight=w, max_iter=5)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(g))
    assert np.all(np.isfinite(np.asarray(gmm.log_prob(g, X))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_translation_and_scale_do_not_matter_or_are_flagged(blobs, dtype):
    """Shifted by 1e6 or scaled by 1e6: the same fit (lower bound moves by -d log s).
    Scaled by 1e-6 the absolute reg_covar dominates the covariances: a warning says so."""
    d = blobs.shape[1]
    ref = float(gmm.fit(jax.random.key(0), blobs.astype(dtype), 3)[1].lower_bound)
    tol = 1e-8 if dtype == np.float64 else 5e-3
    shifted = gmm.fit(jax.random.key(0), (blobs + 1e6).astype(dtype), 3)[1]
    assert bool(shifted.converged) and float(shifted.lower_bound) == pytest.approx(ref, rel=tol)
    big = gmm.fit(jax.random.key(0), (blobs * 1e6).astype(dtype), 3)[1]
    assert float(big.lower_bound) == pytest.approx(ref - d * np.log(1e6), rel=max(tol, 1e-9))
    with pytest.warns(gmm.RegularizationWarning, match="reg_covar=1e-06 is not small"):
        g, info = gmm.fit(jax.random.key(0), (blobs * 1e-6).astype(dtype), 3)
    assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(g))
    small = gmm.fit(jax.random.key(0), (blobs * 1e-6).astype(dtype), 3, reg_covar=1e-18)[1]
    assert float(small.lower_bound) == pytest.approx(ref - d * np.log(1e-6), rel=max(tol, 1e-6))
