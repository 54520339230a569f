"""toolkit.conic.EllipseModel / CircleModel against scikit-image's classes on the same data.

scikit-image's own test module runs against them in tests/test_skimage_suite.py (slow).
"""
import warnings

import numpy as np
import pytest
import skimage.measure as skm

from toolkit import conic


def ellipse_points(rng, n, center, axes, theta, noise=0.0, arc=2 * np.pi):
    t = rng.uniform(0, arc, n)
    c, s = np.cos(theta), np.sin(theta)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    p = np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], -1)
    return p + noise * rng.normal(size=p.shape)


@pytest.mark.parametrize("seed", range(4))
def test_ellipse_model_computes_what_scikit_image_computes(seed):
    rng = np.random.default_rng(seed)
    p = ellipse_points(rng, 40, rng.normal(size=2) * 10, np.sort(rng.uniform(1, 5, 2))[::-1],
                       rng.uniform(0, np.pi), noise=0.2, arc=rng.uniform(2, 2 * np.pi))
    ours, theirs = conic.EllipseModel.from_estimate(p), skm.EllipseModel.from_estimate(p)
    np.testing.assert_allclose(ours.center, theirs.center, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(ours.axis_lengths, theirs.axis_lengths, rtol=1e-8)
    dtheta = (ours.theta - theirs.theta + np.pi / 2) % np.pi - np.pi / 2
    assert abs(dtheta) < 1e-8 and 0 <= ours.theta < np.pi
    q = p[:7] + 0.3
    np.testing.assert_allclose(ours.residuals(q), theirs.residuals(q), atol=1e-6)  # theirs: scipy leastsq per point
    np.testing.assert_allclose(ours.predict_xy(np.arange(3.0)), theirs.predict_xy(np.arange(3.0)), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_circle_model_computes_what_scikit_image_computes(seed):
    rng = np.random.default_rng(10 + seed)
    t = rng.uniform(0, rng.uniform(1, 2 * np.pi), 30)
    c, r = rng.normal(size=2) * 5, rng.uniform(0.5, 4)
    p = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], -1) + 0.1 * rng.normal(size=(30, 2))
    ours, theirs = conic.CircleModel.from_estimate(p), skm.CircleModel.from_estimate(p)
    np.testing.assert_allclose(ours.center, theirs.center, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.radius, theirs.radius, rtol=1e-9)
    np.testing.assert_allclose(ours.residuals(p), theirs.residuals(p), atol=1e-9)
    # "geometric" minimises the orthogonal distances: never a larger sum of squares
    geo = conic.CircleModel.from_estimate(p, method="geometric")
    assert np.sum(geo.residuals(p) ** 2) <= np.sum(ours.residuals(p) ** 2) + 1e-12


def test_ellipse_theta_is_the_orientation_mod_pi_at_every_degree():
    t = np.linspace(0, 2 * np.pi, 20)
    for deg in range(0, 181):
        th = np.deg2rad(deg)
        R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        m = conic.EllipseModel.from_estimate((R @ np.array([100 * np.cos(t), 50 * np.sin(t)])).T)
        np.testing.assert_allclose(m.axis_lengths, [100, 50], rtol=1e-10)
        assert abs((m.theta - th + np.pi / 2) % np.pi - np.pi / 2) < 1e-12, deg
        assert 0 <= m.theta <= np.pi  # float(pi) is below pi: it is in [0, pi)
        assert abs(m.theta - th) < 1e-12, deg  # scikit-image's test: the side of the wrap too


def test_theta_at_the_wrap_follows_the_turn_that_made_the_points():
    # scikit-image's test_ellipse_parameter_stability asks for 0 and float(pi): a fit's
    # angle is +-1e-16 by round-off; the side comes from the points' exact moments
    from toolkit.conic.wrap import on_side, wrap_side

    t = np.linspace(0, 2 * np.pi, 20)
    xy = np.stack([100 * np.cos(t), 50 * np.sin(t)], axis=-1)
    for turn, want in [(0.0, 0.0), (np.pi, np.pi), (-1e-13, np.pi - 1e-13), (1e-13, 1e-13)]:
        R = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        m = conic.EllipseModel.from_estimate(xy @ R.T)
        assert abs(m.theta - want) < 1e-14 and 0 <= m.theta <= np.pi, (turn, m.theta)
    # the sign of the turn, whichever axis is the longer; exact symmetry reports 0
    for turn in [1e-9, -1e-9]:
        R = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        assert wrap_side(xy @ R.T) == wrap_side(xy[:, ::-1] @ R.T) == np.sign(turn)
    assert wrap_side(np.array([[1.0, 0], [-1, 0], [0, 2], [0, -2]])) == 0
    assert on_side(3e-17, 1) == 3e-17 and on_side(-3e-17, -1) == np.pi and on_side(np.pi + 1e-17, 1) < 1e-16


def test_geometry_keeps_tiny_angles_on_both_sides_of_zero():
    # the angle is folded by flipping the axis, not by adding pi: 1e-17 must survive
    for angle in [1e-17, -1e-17, 1e-300, np.pi / 2, -np.pi / 2 + 1e-12]:
        coeffs = conic.from_geometry(np.zeros(2), np.array([2.0, 1.0]), angle)
        got = float(conic.geometry(coeffs).angle)
        want = angle if angle > -np.pi / 2 else angle + np.pi
        assert abs(got - want) <= 1e-15 * abs(want) + 1e-30 or abs(got - want) < 1e-15, (angle, got)
        assert -np.pi / 2 < got <= np.pi / 2


def test_models_are_exact_far_from_the_origin_and_at_tiny_scales():
    t = np.linspace(0.1, 6.0, 12)
    em = conic.EllipseModel((1e6, 2e6), (0.5, 0.1), 0.5)
    m = conic.EllipseModel.from_estimate(em.predict_xy(t))
    np.testing.assert_allclose(m.center, em.center, rtol=1e-12)
    np.testing.assert_allclose(m.axis_lengths, em.axis_lengths, rtol=1e-6)
    assert abs(m.theta - 0.5) < 1e-6
    cm = conic.CircleModel((1.23e-90, 2.34e-90), 3.45e-100)
    m = conic.CircleModel.from_estimate(cm.predict_xy(t), method="geometric")
    np.testing.assert_allclose(m.center, cm.center, rtol=1e-12)
    # the points carry the centre's round-off, 5e-106 = 1.5e-6 of the radius: the limit here
    np.testing.assert_allclose(m.radius, cm.radius, rtol=1e-5)
    assert np.all(np.abs(m.residuals(cm.predict_xy(t))) < 1e-105)


def test_failed_estimation_is_falsy_and_says_why():
    for cls, data, why in [
        (conic.CircleModel, np.ones((6, 2)), "Standard deviation of data is too small"),
        (conic.CircleModel, np.array([[0.0, 0], [1, 1], [2, 2]]), "not contain enough significant data points"),
        (conic.EllipseModel, np.array([[50.0, 80], [51, 81], [52, 80]]), "Need at least 5 data points"),
        (conic.EllipseModel, np.stack([np.arange(6.0), np.arange(6.0)], -1), "No ellipse fits the data"),
    ]:
        bad = cls.from_estimate(data)
        assert not bad and why in str(bad) and str(bad).startswith(cls.__name__)
        with pytest.raises(conic.models.FailedEstimationAccessError, match="no attribute 'residuals'"):
            bad.residuals(data)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        conic.EllipseModel.from_estimate(np.zeros((6, 3)))
    with pytest.raises(ValueError, match="method"):
        conic.EllipseModel.from_estimate(np.random.default_rng(0).normal(size=(9, 2)), method="nope")


def test_deprecated_api_warns_as_scikit_image_does():
    p = ellipse_points(np.random.default_rng(3), 20, (1, 2), (3, 1), 0.3)
    with pytest.warns(FutureWarning, match=r"Calling ``EllipseModel\(\)``"):
        m = conic.EllipseModel()
    with pytest.warns(FutureWarning, match="`estimate` is deprecated"):
        assert m.estimate(p)
    new = conic.EllipseModel.from_estimate(p)
    np.testing.assert_array_equal(m.center, new.center)
    with pytest.warns(FutureWarning, match="`params` attribute deprecated"):
        np.testing.assert_array_equal(m.params, np.r_[new.center, new.axis_lengths, new.theta])
    with pytest.warns(FutureWarning, match="Parameter `params` is deprecated"):
        np.testing.assert_allclose(m.predict_xy([0.0], [0, 0, 1, 1, 0]), [[1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        conic.CircleModel((0, 0), 1).predict_xy([0.0])  # the current API warns about nothing
    assert "center=array([0, 0])" in repr(conic.CircleModel((0, 0), 1))


def test_scikit_image_ransac_runs_with_our_models():
    rng = np.random.default_rng(4)
    p = ellipse_points(rng, 100, (5, -3), (4, 2), 0.7, noise=0.01)
    p[::4] = rng.uniform(-10, 10, (25, 2))  # 25% outliers
    model, inliers = skm.ransac(p, conic.EllipseModel, min_samples=5, residual_threshold=0.05, max_trials=500,
                                rng=0)
    np.testing.assert_allclose(model.center, [5, -3], atol=0.05)
    np.testing.assert_allclose(model.axis_lengths, [4, 2], atol=0.05)
    assert not inliers[::4].any() and inliers.sum() >= 70
