"""toolkit.conic.ransac: recovery under 30-50% outliers, closed-form minimal solvers
against SVD null vectors, determinism, batching, flags and bad input."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import conic
from toolkit.conic import robust

CENTER, AXES, ANGLE = np.array([1.0, -2.0]), np.array([4.0, 2.0]), 0.5


def arc_with_outliers(rng, n=100, outliers=0.3, noise=0.01, circle=False):
    t = rng.uniform(0, 1.2 * np.pi, n)
    a, b = (3.0, 3.0) if circle else AXES
    x, y = a * np.cos(t), b * np.sin(t)
    c, s = np.cos(ANGLE), np.sin(ANGLE)
    p = np.stack([CENTER[0] + c * x - s * y, CENTER[1] + s * x + c * y], -1) + noise * rng.normal(size=(n, 2))
    bad = rng.choice(n, int(outliers * n), replace=False)
    p[bad] = CENTER + rng.uniform(-7, 7, (len(bad), 2))
    return p, bad


def test_minimal_solvers_match_svd_null_vectors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 50, 5))
    theta = np.asarray(robust._conic_through_5(jnp.asarray(x), jnp.asarray(y)))
    for i in range(50):
        Z = np.stack([x[i] ** 2, x[i] * y[i], y[i] ** 2, x[i], y[i], np.ones(5)], -1)
        null = np.linalg.svd(Z)[2][-1]
        assert abs(abs(theta[i] @ null) - 1) < 1e-9
    theta = np.asarray(robust._circle_through_3(jnp.asarray(x[:, :3]), jnp.asarray(y[:, :3])))
    for i in range(50):
        Z = np.stack([x[i, :3] ** 2 + y[i, :3] ** 2, x[i, :3], y[i, :3], np.ones(3)], -1)
        null = np.linalg.svd(Z)[2][-1]
        t4 = theta[i][[0, 3, 4, 5]]
        assert abs(abs(t4 @ null) / np.linalg.norm(t4) - 1) < 1e-9 and theta[i][0] == theta[i][2]


def test_distinct_samples_are_distinct_and_cover_the_range():
    idx = np.asarray(robust._distinct_samples(jax.random.key(3), jnp.int32(9), 5, 4000))
    assert idx.min() == 0 and idx.max() == 8
    assert all(len(set(r)) == 5 for r in idx)
    counts = np.bincount(idx.ravel(), minlength=9) / idx.size
    np.testing.assert_allclose(counts, 1 / 9, atol=0.01)  # uniform over the points


@pytest.mark.parametrize("scoring", conic.SCORINGS)
@pytest.mark.parametrize("outliers", [0.3, 0.5])
def test_recovers_the_ellipse_under_outliers(scoring, outliers):
    rng = np.random.default_rng(1)
    sets = [arc_with_outliers(rng, outliers=outliers) for _ in range(16)]
    P = np.stack([p for p, _ in sets])
    fit, inliers = conic.ransac(jax.random.key(0), P, threshold=0.04, n_trials=400, scoring=scoring)
    g = conic.geometry(fit.coeffs)
    err = np.linalg.norm(np.asarray(g.center) - CENTER, axis=-1) / AXES[0]
    assert np.all(np.asarray(fit.ok))
    assert np.mean(err < 0.05) >= 15 / 16
    np.testing.assert_allclose(np.median(np.asarray(g.semi_axes), axis=0), AXES, rtol=0.02)
    inl = np.asarray(inliers)
    for i, (p, bad) in enumerate(sets):
        d = np.abs(np.asarray(conic.residuals(fit.coeffs[i], p, kind="geometric")))
        np.testing.assert_array_equal(inl[i], d < 0.04)  # the inliers of the returned model
        truth = np.ones(len(p), bool)
        truth[bad] = False
        assert np.mean(inl[i] == truth) > 0.9


def test_circles_and_refine_none():
    rng = np.random.default_rng(2)
    P = np.stack([arc_with_outliers(rng, circle=True, outliers=0.4)[0] for _ in range(8)])
    fit, inliers = conic.ransac(jax.random.key(1), P, kind="circle", threshold=0.04, n_trials=200)
    g = conic.geometry(fit.coeffs)
    np.testing.assert_allclose(np.asarray(g.center), np.broadcast_to(CENTER, (8, 2)), atol=0.02)
    np.testing.assert_allclose(np.asarray(g.semi_axes), 3.0, atol=0.02)
    c = np.asarray(fit.coeffs)
    assert np.all(c[:, 1] == 0) and np.allclose(c[:, 0], c[:, 2])
    raw, raw_in = conic.ransac(jax.random.key(1), P, kind="circle", threshold=0.04, n_trials=200, refine=None)
    assert np.all(np.asarray(raw.ok)) and np.all(np.asarray(raw.residual) < 0.04)
    d = np.abs(np.asarray(conic.residuals(raw.coeffs, P, kind="geometric")))
    np.testing.assert_array_equal(np.asarray(raw_in), d < 0.04)


def test_deterministic_and_batched_equals_looped():
    rng = np.random.default_rng(3)
    P = np.stack([arc_with_outliers(rng)[0] for _ in range(3)])
    key = jax.random.key(7)
    a = conic.ransac(key, P, threshold=0.04, n_trials=100)
    b = conic.ransac(key, P, threshold=0.04, n_trials=100)
    np.testing.assert_array_equal(a[0].coeffs, b[0].coeffs)
    for i in range(3):
        one = conic.ransac(key, P[i], threshold=0.04, n_trials=100)
        np.testing.assert_allclose(one[0].coeffs, a[0].coeffs[i], atol=1e-8)
        np.testing.assert_array_equal(one[1], a[1][i])
    c = conic.ransac(jax.random.key(8), P, threshold=0.04, n_trials=100)
    np.testing.assert_allclose(np.abs(np.sum(np.asarray(c[0].coeffs) * np.asarray(a[0].coeffs), -1)), 1, atol=1e-3)


@pytest.mark.slow  # one compilation of the whole pipeline as a single program: ~25 s cold
def test_under_the_callers_jit():
    rng = np.random.default_rng(3)
    P = np.stack([arc_with_outliers(rng)[0] for _ in range(3)])
    key = jax.random.key(7)
    a = conic.ransac(key, P, threshold=0.04, n_trials=100)
    jitted = jax.jit(lambda k, p, t: conic.ransac(k, p, threshold=t, n_trials=100))(key, P, 0.04)
    np.testing.assert_allclose(jitted[0].coeffs, a[0].coeffs, atol=1e-8)
    np.testing.assert_array_equal(jitted[1], a[1])


def test_degenerate_sets_and_min_inliers_give_not_ok():
    rng = np.random.default_rng(4)
    line = np.stack([np.linspace(0, 1, 30), np.linspace(0, 2, 30)], -1)
    same = np.ones((30, 2))
    good = arc_with_outliers(rng, n=30)[0]
    for kind in ("ellipse", "circle"):
        fit, _ = conic.ransac(jax.random.key(0), np.stack([line, same, good]), kind=kind, threshold=0.05,
                              n_trials=300)
        assert np.asarray(fit.ok).tolist() == [False, False, True]
        assert np.all(np.isfinite(np.asarray(fit.coeffs)))
    fit, inliers = conic.ransac(jax.random.key(0), good, threshold=0.05, n_trials=300, min_inliers=29)
    assert not bool(fit.ok) and int(inliers.sum()) < 29


def test_bad_input():
    p = arc_with_outliers(np.random.default_rng(5), n=20)[0]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 5 points"):
        conic.ransac(key, p[:4], threshold=0.1)
    with pytest.raises(ValueError, match="at least 3 points"):
        conic.ransac(key, p[:2], kind="circle", threshold=0.1)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="threshold must be positive"):
            conic.ransac(key, p, threshold=bad)
    with pytest.raises(ValueError, match="n_trials"):
        conic.ransac(key, p, threshold=0.1, n_trials=0)
    with pytest.raises(ValueError, match="min_inliers"):
        conic.ransac(key, p, threshold=0.1, min_inliers=21)
    with pytest.raises(ValueError, match="scoring"):
        conic.ransac(key, p, threshold=0.1, scoring="lmeds")
    with pytest.raises(ValueError, match="refine"):
        conic.ransac(key, p, threshold=0.1, refine="pratt")
    q = p.copy()
    q[3] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        conic.ransac(key, q, threshold=0.1)
    with pytest.warns(RuntimeWarning, match=r"n_trials=3 is too few .* trials are needed"):
        conic.ransac(key, arc_with_outliers(np.random.default_rng(6), outliers=0.5)[0], threshold=0.04, n_trials=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conic.ransac(key, arc_with_outliers(np.random.default_rng(6), outliers=0.0)[0], threshold=0.04, n_trials=30)
