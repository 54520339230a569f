"""toolkit.conic.covariance (first-order / KCR) against Monte Carlo over noisy refits."""
import jax
import numpy as np
import pytest

from toolkit import conic


def _arc(kind, n=40):
    if kind == "hyperbola":
        t = np.linspace(-1.2, 1.2, n)
        x, y = 2.0 * np.cosh(t), 1.0 * np.sinh(t)
    else:
        t = np.linspace(0, np.pi, n)
        a, b = (3.0, 3.0) if kind == "circle" else (3.0, 1.5)
        x, y = a * np.cos(t), b * np.sin(t)
    c, s = np.cos(0.4), np.sin(0.4)
    return np.stack([1 + c * x - s * y, 2 + s * x + c * y], -1)


@pytest.mark.parametrize("kind", ["ellipse", "hyperbola", "circle"])
def test_covariance_matches_monte_carlo_within_15_percent(kind):
    rng = np.random.default_rng({"ellipse": 0, "hyperbola": 1, "circle": 2}[kind])
    sigma, reps = 0.02, 1000  # the sd of a sample sd is ~2% here: 15% is > 6 of them
    P0 = _arc(kind)
    P = P0 + sigma * rng.normal(size=(reps,) + P0.shape)
    fits = conic.fit(P, kind=kind, method="geometric")
    assert np.all(np.asarray(fits.ok))
    g = conic.geometry(fits.coeffs)
    c0 = np.asarray(conic.fit(P0, kind=kind).coeffs)
    C = np.asarray(fits.coeffs)
    C = C * np.sign(C @ c0)[:, None]
    pred = conic.covariance(c0, P0, noise_std=sigma, kind=kind)

    def close(mc, pr):
        np.testing.assert_allclose(mc, pr, rtol=0.15)

    close(np.std(np.asarray(g.center), 0), np.sqrt(np.diag(pred.center)))
    close(np.std(np.asarray(g.semi_axes), 0), np.sqrt(np.diag(pred.semi_axes)))
    big = np.diag(pred.coeffs) > 1e-6 * np.max(np.diag(pred.coeffs))  # B of a circle is exactly 0
    close(np.std(C, 0)[big], np.sqrt(np.diag(pred.coeffs))[big])
    np.testing.assert_allclose(np.cov(C.T)[np.ix_(big, big)], np.asarray(pred.coeffs)[np.ix_(big, big)],
                               atol=0.2 * np.max(np.diag(pred.coeffs)))  # correlations too
    if kind == "circle":
        assert np.isnan(float(pred.angle))
        np.testing.assert_allclose(pred.semi_axes, np.full((2, 2), pred.semi_axes[0, 0]))
    else:
        close(np.std(np.asarray(g.angle)), np.sqrt(float(pred.angle)))
    # estimated from each noisy fit's residuals, batched: the same figures on average
    est = conic.covariance(fits.coeffs, P, kind=kind)
    np.testing.assert_allclose(np.mean(np.asarray(est.noise_std)), sigma, rtol=0.03)
    np.testing.assert_allclose(np.sqrt(np.mean(np.diagonal(np.asarray(est.center), axis1=-2, axis2=-1), 0)),
                               np.sqrt(np.diag(pred.center)), rtol=0.1)


def test_covariance_scales_with_sigma_and_units():
    P0 = _arc("ellipse")
    c0 = conic.fit(P0, kind="ellipse").coeffs
    a = conic.covariance(c0, P0, noise_std=0.01)
    b = conic.covariance(c0, P0, noise_std=0.02)
    np.testing.assert_allclose(b.center, 4 * np.asarray(a.center), rtol=1e-10)
    np.testing.assert_allclose(b.angle, 4 * float(a.angle), rtol=1e-10)
    # the same problem in units 1000x larger: lengths' variances x1e6, the angle's unchanged
    k = conic.covariance(conic.fit(1000 * P0, kind="ellipse").coeffs, 1000 * P0, noise_std=10.0)
    np.testing.assert_allclose(k.center, 1e6 * np.asarray(a.center), rtol=1e-6)
    np.testing.assert_allclose(k.angle, float(a.angle), rtol=1e-6)
    # jit gives the same
    j = jax.jit(lambda c, p: conic.covariance(c, p, noise_std=0.01))(c0, P0)
    np.testing.assert_allclose(j.coeffs, a.coeffs, rtol=1e-10, atol=1e-14)


def test_covariance_bad_input():
    P0 = _arc("ellipse")
    c0 = conic.fit(P0, kind="ellipse").coeffs
    with pytest.raises(ValueError, match="at least 6 points"):
        conic.covariance(c0, P0[:5])
    with pytest.raises(ValueError, match="at least 4 points"):
        conic.covariance(c0, P0[:3], kind="circle")
    with pytest.raises(ValueError, match="'coeffs' must have shape"):
        conic.covariance(c0[:5], P0)
    with pytest.raises(ValueError, match="kind"):
        conic.covariance(c0, P0, kind="parabola")
