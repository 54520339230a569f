"""toolkit.conic against closed forms, brute-force distances and scikit-image's EllipseModel.

Shapes are kept to a few (50 points, batches of 8) so the suite compiles each
(kind, method) pair once.
"""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import minimize_scalar

from toolkit import conic

N = 50


def conic_points(rng, n, *, kind, a, b, angle, center, t_max=1.5, arc=2 * np.pi, start=0.0):
    if kind == "ellipse":
        t = start + np.linspace(0, arc, n, endpoint=arc < 2 * np.pi - 1e-9)
        x, y = a * np.cos(t), b * np.sin(t)
    else:
        t = np.linspace(-t_max, t_max, n)
        br = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
        x, y = br * a * np.cosh(t), b * np.sinh(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], -1)


def random_case(rng, kind, scale):
    a, b = np.sort(rng.uniform(1, 3, 2))[::-1] * scale
    return dict(kind=kind, a=a, b=b, angle=rng.uniform(-np.pi / 2, np.pi / 2),
                center=rng.normal(size=2) * 3 * scale)


def true_coeffs(case):
    return np.asarray(conic.from_geometry(np.asarray(case["center"]), np.array([case["a"], case["b"]]),
                                          case["angle"], kind=case["kind"]))


def abs_cos(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return np.abs(np.sum(u * v, -1)) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)


# --- exact recovery --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ellipse", "hyperbola"])
@pytest.mark.parametrize("method", conic.METHODS)
def test_noise_free_conics_recovered_at_every_scale(kind, method):
    rng = np.random.default_rng(0)
    cases = [random_case(rng, kind, s) for s in (1e-3, 1e-2, 1, 1, 10, 1e2, 1e3, 1e3)]
    pts = np.stack([conic_points(rng, N, **c) for c in cases])
    res = conic.fit(pts, kind=kind, method=method)
    want = np.stack([true_coeffs(c) for c in cases])
    assert np.all(np.asarray(res.ok))
    assert np.all(np.asarray(res.kind) == (conic.ELLIPSE if kind == "ellipse" else conic.HYPERBOLA))
    assert np.min(abs_cos(res.coeffs, want)) > 1 - 1e-12
    scale = np.array([c["a"] for c in cases])
    assert np.all(np.asarray(res.residual) < 1e-9 * scale)
    np.testing.assert_allclose(np.linalg.norm(res.coeffs, axis=-1), 1.0, rtol=1e-14)


@pytest.mark.parametrize("method", ["direct", "taubin", "hyper"])
def test_kind_any_finds_both_types(method):
    rng = np.random.default_rng(1)
    cases = [random_case(rng, k, 1.0) for k in ("ellipse", "hyperbola") * 4]
    pts = np.stack([conic_points(rng, N, **c) for c in cases])
    res = conic.fit(pts, kind="any", method=method)
    want = np.stack([true_coeffs(c) for c in cases])
    assert np.min(abs_cos(res.coeffs, want)) > 1 - 1e-12
    np.testing.assert_array_equal(conic.kind_name(res.kind), [c["kind"] for c in cases])


def test_float32_is_sensible():
    rng = np.random.default_rng(2)
    cases = [random_case(rng, k, 1.0) for k in ("ellipse", "hyperbola") * 4]
    pts = np.stack([conic_points(rng, N, **c) for c in cases]).astype(np.float32)
    for kind in ("ellipse", "hyperbola"):
        sel = [i for i, c in enumerate(cases) if c["kind"] == kind]
        res = conic.fit(pts[sel], kind=kind)
        assert res.coeffs.dtype == jnp.float32
        assert np.min(abs_cos(res.coeffs, np.stack([true_coeffs(cases[i]) for i in sel]))) > 1 - 1e-6


# --- agreement with scikit-image --------------------------------------------------

def test_direct_ellipse_matches_skimage_on_noisy_full_ellipses():
    skm = pytest.importorskip("skimage.measure")
    rng = np.random.default_rng(3)
    cases = [random_case(rng, "ellipse", 1.0) for _ in range(8)]
    pts = np.stack([conic_points(rng, N, **c) + rng.normal(size=(N, 2)) * 0.02 for c in cases])
    geo = conic.geometry(conic.fit(pts, kind="ellipse").coeffs)
    for i in range(len(cases)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            m = skm.EllipseModel()
            assert m.estimate(pts[i])
            xc, yc, a, b, _ = m.params
        np.testing.assert_allclose(geo.center[i], [xc, yc], atol=1e-6)
        np.testing.assert_allclose(np.sort(np.asarray(geo.semi_axes[i])), np.sort([a, b]), rtol=1e-6)


# --- short arcs: geometric < hyper <= direct --------------------------------------

def arc_errors(method, arc_deg, sigma, trials=64, seed=4):
    rng = np.random.default_rng(seed)
    cases = [dict(kind="ellipse", a=rng.uniform(2, 4), b=rng.uniform(1, 2), angle=rng.uniform(-1.5, 1.5),
                  center=rng.normal(size=2)) for _ in range(trials)]
    pts = np.stack([conic_points(rng, N, arc=np.deg2rad(arc_deg), start=rng.uniform(0, 2 * np.pi), **c)
                    + rng.normal(size=(N, 2)) * sigma * c["a"] for c in cases])
    geo = conic.geometry(conic.fit(pts, kind="ellipse", method=method).coeffs)
    centers = np.stack([c["center"] for c in cases])
    err = np.linalg.norm(np.asarray(geo.center) - centers, axis=1)
    return np.median(np.where(np.isfinite(err), err, np.inf))


def test_short_arc_accuracy_ordering():
    e = {m: arc_errors(m, 120, 0.01) for m in ("direct", "hyper", "geometric")}
    assert e["geometric"] < e["hyper"] <= e["direct"], e
    assert e["geometric"] < 0.5 * e["direct"], e


# --- geometry ---------------------------------------------------------------------

def test_geometry_of_known_conics():
    g = conic.geometry(jnp.array([4.0, 0, 9, -8, 0, -32]))  # (x-1)^2/9 + y^2/4 = 1
    assert int(g.kind) == conic.ELLIPSE
    np.testing.assert_allclose(g.center, [1, 0], atol=1e-14)
    np.testing.assert_allclose(g.semi_axes, [3, 2], rtol=1e-14)
    np.testing.assert_allclose(g.eccentricity, np.sqrt(5) / 3, rtol=1e-14)
    np.testing.assert_allclose(np.sort(np.asarray(g.foci)[:, 0]), [1 - np.sqrt(5), 1 + np.sqrt(5)], rtol=1e-14)
    assert np.all(np.isnan(g.asymptotes))
    h = conic.geometry(jnp.array([0.0, 1, 0, 0, 0, -1]))  # xy = 1: transverse axis at 45 degrees
    assert int(h.kind) == conic.HYPERBOLA
    np.testing.assert_allclose(h.semi_axes, [np.sqrt(2), np.sqrt(2)], rtol=1e-14)
    np.testing.assert_allclose(h.angle, np.pi / 4, rtol=1e-14)
    np.testing.assert_allclose(h.eccentricity, np.sqrt(2), rtol=1e-14)
    asym = np.abs(np.asarray(h.asymptotes))
    np.testing.assert_allclose(np.sort(asym, axis=0), [[0, 0], [1, 1]], atol=1e-14)  # the x and y axes
    assert int(conic.classify(jnp.array([1.0, 0, 0, 0, -1, 0]))) == conic.PARABOLA
    assert int(conic.classify(jnp.array([1.0, 0, -1, 0, 0, 0]))) == conic.DEGENERATE  # line pair
    assert int(conic.classify(jnp.array([1.0, 0, 1, 0, 0, 1]))) == conic.DEGENERATE  # imaginary


@pytest.mark.parametrize("kind", ["ellipse", "hyperbola"])
def test_geometry_round_trip_and_focal_property(kind):
    rng = np.random.default_rng(5)
    cases = [random_case(rng, kind, s) for s in (1e-3, 1, 1, 1e3)]
    c = np.stack([true_coeffs(cs) for cs in cases])
    g = conic.geometry(c)
    back = conic.from_geometry(g.center, g.semi_axes, g.angle, kind=kind)
    np.testing.assert_allclose(back, c, atol=1e-12)
    pts = np.asarray(conic.sample(c, 40))
    d = np.linalg.norm(pts[:, :, None, :] - np.asarray(g.foci)[:, None, :, :], axis=-1)
    focal = d.sum(-1) if kind == "ellipse" else np.abs(d[..., 0] - d[..., 1])
    np.testing.assert_allclose(focal / (2 * np.asarray(g.semi_axes)[:, :1]), 1.0, rtol=1e-9)
    alg = np.asarray(conic.residuals(c, pts))
    assert np.max(np.abs(alg)) < 1e-9


def test_sample_hyperbola_covers_both_branches():
    c = true_coeffs(dict(kind="hyperbola", a=1.0, b=2.0, angle=0.3, center=[1.0, -1.0]))
    pts = np.asarray(conic.sample(c, 11))
    side = (pts - [1.0, -1.0]) @ [np.cos(0.3), np.sin(0.3)]
    assert (side > 0).sum() == 6 and (side < 0).sum() == 5


# --- geometric distances against brute force -------------------------------------

def brute_distance(p, kind, a, b, angle, center):
    c, s = np.cos(angle), np.sin(angle)
    d = np.asarray(p) - center
    u, v = c * d[0] + s * d[1], -s * d[0] + c * d[1]
    if kind == "ellipse":
        curves = [lambda t: (a * np.cos(t), b * np.sin(t))]
        grid = np.linspace(0, 2 * np.pi, 4001)
    else:
        curves = [lambda t, sg=sg: (sg * a * np.cosh(t), b * np.sinh(t)) for sg in (1, -1)]
        grid = np.linspace(-8, 8, 8001)
    best = np.inf
    for f in curves:
        x, y = f(grid)
        k = int(np.argmin(np.hypot(u - x, v - y)))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        r = minimize_scalar(lambda t: np.hypot(u - f(t)[0], v - f(t)[1]), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-14})
        best = min(best, r.fun)
    return best


@pytest.mark.parametrize("kind", ["ellipse", "hyperbola"])
def test_geometric_residuals_match_brute_force(kind):
    rng = np.random.default_rng(6)
    case = random_case(rng, kind, 1.0)
    c = true_coeffs(case)
    # near the curve, far away, inside, on the axes and at the centre
    pts = np.concatenate([
        conic_points(rng, 12, **case) + rng.normal(size=(12, 2)) * 0.05,
        rng.normal(size=(24, 2)) * 5 + case["center"],
        [case["center"], np.asarray(case["center"]) + [1e-3, 0.0]],
    ])
    d = np.asarray(conic.residuals(c, pts, kind="geometric"))
    want = np.array([brute_distance(p, **case) for p in pts])
    np.testing.assert_allclose(np.abs(d), want, rtol=1e-7, atol=1e-9)
    alg = np.asarray(conic.residuals(c, pts))
    assert np.all((np.sign(d) == np.sign(alg)) | (np.abs(d) < 1e-12))


# --- batching, jit, weights, grad -------------------------------------------------

def test_batched_equals_looped_and_jit():
    rng = np.random.default_rng(7)
    cases = [random_case(rng, "ellipse", 1.0) for _ in range(8)]
    pts = np.stack([conic_points(rng, N, **c) + rng.normal(size=(N, 2)) * 0.05 for c in cases])
    batched = conic.fit(pts.reshape(2, 4, N, 2), kind="ellipse", method="geometric")
    assert batched.coeffs.shape == (2, 4, 6) and batched.ok.shape == (2, 4)
    for i in range(8):
        one = conic.fit(pts[i], kind="ellipse", method="geometric")
        np.testing.assert_allclose(one.coeffs, batched.coeffs.reshape(8, 6)[i], atol=1e-9)
    jitted = jax.jit(lambda p: conic.fit(p, kind="ellipse").coeffs)(pts)
    np.testing.assert_allclose(jitted, conic.fit(pts, kind="ellipse").coeffs, atol=1e-13)


def test_zero_weights_drop_points():
    rng = np.random.default_rng(8)
    case = random_case(rng, "ellipse", 1.0)
    pts = conic_points(rng, N, **case) + rng.normal(size=(N, 2)) * 0.02
    outliers = rng.normal(size=(10, 2)) * 10
    w = np.r_[np.ones(N), np.zeros(10)]
    for method in ("direct", "hyper", "geometric"):
        a = conic.fit(np.concatenate([pts, outliers]), kind="ellipse", method=method, weights=w)
        b = conic.fit(pts, kind="ellipse", method=method)
        np.testing.assert_allclose(a.coeffs, b.coeffs, atol=1e-10)
        np.testing.assert_allclose(a.residual, b.residual, rtol=1e-9)
    # a far zero-weight point first (where the moments take their origin) changes nothing
    far = np.concatenate([[[1e4, -1e4]], pts])
    a = conic.fit(far, kind="ellipse", weights=np.r_[0.0, np.ones(N)])
    np.testing.assert_allclose(a.coeffs, conic.fit(pts, kind="ellipse").coeffs, atol=1e-10)


def test_gradient_of_direct_fit_matches_finite_differences():
    from toolkit.autodiff import gradcheck

    rng = np.random.default_rng(9)
    pts = conic_points(rng, N, **random_case(rng, "ellipse", 1.0)) + rng.normal(size=(N, 2)) * 0.02
    w = rng.normal(size=6)
    rep = gradcheck(lambda p: conic.fit(p, kind="ellipse").coeffs @ w, jnp.asarray(pts))
    assert rep.ok, rep


def test_geometric_fit_is_differentiable_in_both_modes():
    """Reverse mode cannot run through the LM loop (a while_loop); the refinement's own
    JVP rule makes jax.grad work, equal to jax.jacfwd and to finite differences, with
    respect to the points and the weights."""
    rng = np.random.default_rng(11)
    pts = conic_points(rng, N, **random_case(rng, "ellipse", 1.0)) + rng.normal(size=(N, 2)) * 0.02
    wts = rng.uniform(0.5, 2.0, N)
    c = rng.normal(size=6)
    f = lambda p, w: conic.fit(p, method="geometric", weights=w).coeffs @ c  # noqa: E731
    rev, fwd = jax.grad(f, argnums=(0, 1))(pts, wts), jax.jacfwd(f, argnums=(0, 1))(pts, wts)
    for a, b in zip(rev, fwd):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    h = 1e-6  # central differences at a few entries (the whole gradcheck takes minutes here)
    for i in rng.choice(N, 3, replace=False):
        for j in (0, 1):
            e = np.zeros_like(pts)
            e[i, j] = h
            fd = (float(f(pts + e, wts)) - float(f(pts - e, wts))) / (2 * h)
            assert abs(fd - float(rev[0][i, j])) <= 1e-6 + 1e-5 * abs(fd), (i, j, fd, rev[0][i, j])
        e = np.zeros_like(wts)
        e[i] = h
        fd = (float(f(pts, wts + e)) - float(f(pts, wts - e))) / (2 * h)
        assert abs(fd - float(rev[1][i])) <= 1e-6 + 1e-5 * abs(fd), (i, fd, rev[1][i])
    g32 = jax.grad(lambda p: f(p, wts.astype(np.float32)))(pts.astype(np.float32))
    assert g32.dtype == np.float32 and np.all(np.isfinite(np.asarray(g32)))


# --- kinds requested against the data ---------------------------------------------

def test_reference_style_hyperbola_through_origin_any_method():
    t = np.linspace(-2, 2, N)
    # x^2 + 6xy - 2y^2 + 3x = 0 passes through the origin
    want = np.array([1.0, 6, -2, 3, 0, 0])
    pts = []
    for y in t:  # solve for x on both roots
        for sgn in (1, -1):
            disc = (6 * y + 3) ** 2 + 8 * y * y
            pts.append([(-(6 * y + 3) + sgn * np.sqrt(disc)) / 2, y])
    pts = np.array(pts)
    for method in conic.METHODS:
        res = conic.fit(pts, kind="hyperbola", method=method)
        assert bool(res.ok) and int(res.kind) == conic.HYPERBOLA
        assert abs_cos(res.coeffs, want) > 1 - 1e-12, method


def test_ellipse_requested_on_hyperbola_data_is_an_ellipse_flagged_by_residual():
    rng = np.random.default_rng(10)
    case = random_case(rng, "hyperbola", 1.0)
    pts = conic_points(rng, N, **case)
    for method in conic.METHODS:
        res = conic.fit(pts, kind="ellipse", method=method)
        assert int(res.kind) == conic.ELLIPSE
        assert float(res.residual) > 1e-2
        assert np.all(np.isfinite(res.coeffs))
    hyp = conic.fit(pts, kind="hyperbola")
    assert float(hyp.residual) < 1e-9


# --- bad input --------------------------------------------------------------------

def test_bad_input_raises_clear_errors():
    pts = np.random.default_rng(11).normal(size=(N, 2))
    with pytest.raises(ValueError, match="at least 5 points"):
        conic.fit(pts[:4])
    with pytest.raises(ValueError, match=r"'points' must have shape \(\.\.\., N, 2\)"):
        conic.fit(np.zeros((N, 3)))
    bad = pts.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        conic.fit(bad)
    with pytest.raises(ValueError, match="kind='parabola'"):
        conic.fit(pts, kind="parabola")
    with pytest.raises(ValueError, match="method='pratt' fits circles only"):
        conic.fit(pts, method="pratt")
    with pytest.raises(ValueError, match="at least 3 points"):
        conic.fit(pts[:2], kind="circle")
    with pytest.raises(ValueError, match="method='ransac'"):
        conic.fit(pts, method="ransac")
    with pytest.raises(ValueError, match="non-negative"):
        conic.fit(pts, weights=-np.ones(N))
    with pytest.raises(ValueError, match="'weights' must have shape"):
        conic.fit(pts, weights=np.ones(N + 1))
    with pytest.raises(ValueError, match="'coeffs' must have shape"):
        conic.geometry(np.ones(5))
    with pytest.raises(ValueError, match="kind='parabola'"):
        conic.from_geometry([0.0, 0.0], [1.0, 1.0], 0.0, kind="parabola")
    with pytest.raises(TypeError, match="must be real"):
        conic.fit(pts.astype(complex))


@pytest.mark.parametrize("method", conic.METHODS)
def test_degenerate_point_sets_are_flagged_without_nan(method):
    line = np.stack([np.linspace(0, 1, N), 2 * np.linspace(0, 1, N) + 1], -1)
    same = np.ones((N, 2)) * 3.0
    nan_pts = np.random.default_rng(12).normal(size=(N, 2))
    nan_pts[0] = np.nan
    for kind in ("ellipse", "any"):
        res = jax.jit(lambda p: conic.fit(p, kind=kind, method=method))(np.stack([line, same, nan_pts]))
        assert not np.any(np.asarray(res.ok)), (kind, res.ok)
        assert np.all(np.isfinite(res.coeffs))


def test_residual_modes_and_unpadded_large_batches():
    # 700 x 50 points is above the bucketing limit: the fit runs on the exact shape
    rng = np.random.default_rng(13)
    cases = [random_case(rng, "ellipse", 1.0) for _ in range(700)]
    pts = np.stack([conic_points(rng, N, **c) + rng.normal(size=(N, 2)) * 0.01 for c in cases])
    exact = conic.fit(pts, kind="ellipse")
    small = conic.fit(pts[:8], kind="ellipse")  # padded to a bucket
    np.testing.assert_allclose(small.coeffs, exact.coeffs[:8], atol=1e-12)
    np.testing.assert_allclose(small.residual, exact.residual[:8], rtol=1e-12)
    want = [np.sqrt(np.mean(np.asarray(conic.residuals(exact.coeffs[i], pts[i], kind="geometric")) ** 2))
            for i in range(3)]
    np.testing.assert_allclose(exact.residual[:3], want, rtol=1e-10)
    sampson = conic.fit(pts, kind="ellipse", residual="sampson")
    none = conic.fit(pts, kind="ellipse", residual="none")
    for other in (sampson, none):
        np.testing.assert_array_equal(other.coeffs, exact.coeffs)
        np.testing.assert_array_equal(other.ok, exact.ok)
    # first-order distance: within a few per cent of the exact one at 1% noise
    np.testing.assert_allclose(sampson.residual, exact.residual, rtol=0.05)
    assert np.all(np.isnan(none.residual))
    with pytest.raises(ValueError, match="residual"):
        conic.fit(pts[0], residual="rms")


def test_invalid_weights_under_jit_are_flagged_not_nan():
    rng = np.random.default_rng(14)
    pts = np.stack([conic_points(rng, N, **random_case(rng, "ellipse", 1.0)) for _ in range(4)])
    w = np.ones((4, N))
    w[0, 3] = -1.0  # negative
    w[1, 5] = np.nan
    w[2] = 0.0  # no weight at all
    res = jax.jit(lambda p, w: conic.fit(p, kind="ellipse", weights=w))(pts, w)
    np.testing.assert_array_equal(res.ok, [False, False, False, True])
    assert np.all(np.isfinite(res.coeffs))
    with pytest.raises(ValueError, match="non-negative"):
        conic.fit(pts, kind="ellipse", weights=np.nan_to_num(w))


def test_xla_build_without_an_option_falls_back_to_plain_jit(monkeypatch):
    # the fit's stages ask XLA for per-executable options; an XLA that lacks one must
    # still run them (with its defaults), not fail
    from toolkit import _xla

    monkeypatch.setattr(_xla, "XLA_OPTIONS", {"xla_option_that_does_not_exist": True})
    monkeypatch.setattr(_xla, "LIGHT_OPTIONS", {"xla_option_that_does_not_exist": True})
    f = _xla.tuned_jit(lambda x: 2 * x)
    for light in (False, True):
        np.testing.assert_array_equal(f(jnp.arange(3.0), light_compile=light), [0.0, 2.0, 4.0])


# ----------------------------------------------------------------------------- bad input


def _few_point_sets():
    sq = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    ell = np.stack([3 * np.cos(t), np.sin(t)], -1)
    return {
        "4 distinct (duplicates)": (np.r_[sq, sq[:3], sq[:2]], None),
        "3 distinct": (np.r_[sq[:3], sq[:3]], None),
        "4 non-zero weights": (ell, np.r_[np.ones(4), np.zeros(6)]),
    }


@pytest.mark.parametrize("method", conic.METHODS)
@pytest.mark.parametrize("case", list(_few_point_sets()))
def test_fewer_than_five_distinct_points(method, case):
    """A conic is not determined by fewer than 5 distinct weighted points: concrete input
    raises; under jit the fit says ok=False (taubin/hyper/geometric used to say True)."""
    pts, w = _few_point_sets()[case]
    with pytest.raises(ValueError, match="fewer than 5 distinct points with positive weight"):
        conic.fit(pts, method=method, weights=w)
    ok = jax.jit(lambda p: conic.fit(p, method=method, weights=w).ok)(pts)
    assert not bool(ok)
    # in a batch, the bad set is named and the others are unaffected under jit
    t = np.linspace(0, 2 * np.pi, len(pts), endpoint=False)
    good = np.stack([2 * np.cos(t), np.sin(t)], -1)
    wb = None if w is None else np.stack([np.ones(len(pts)), w])
    with pytest.raises(ValueError, match=r"point set \(1,\) has fewer than 5"):
        conic.fit(np.stack([good, pts]), method=method, weights=wb)
    res = jax.jit(lambda p: conic.fit(p, method=method, weights=wb))(np.stack([good, pts]))
    assert np.asarray(res.ok).tolist() == [True, False]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_five_distinct_points_are_enough(dtype):
    t = np.array([0.1, 1.3, 2.2, 3.9, 5.0])
    pts = np.stack([3 * np.cos(t) + 1, 2 * np.sin(t)], -1).astype(dtype)
    for method in conic.METHODS:
        res = conic.fit(np.r_[pts, pts[:2]], method=method)  # duplicates of determined sets are fine
        assert bool(res.ok), method
        c = np.asarray(res.coeffs, np.float64)
        np.testing.assert_allclose(c / c[0] * 4, [4, 0, 9, -8, 0, -32], atol=1e-6 if dtype == np.float64 else 2e-2)


@pytest.mark.parametrize("w, msg", [(-1.0, "must be non-negative"), (np.nan, "contains NaN or inf"),
                                    (np.inf, "contains NaN or inf")])
def test_bad_weights_raise_or_flag(w, msg):
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pts = np.stack([3 * np.cos(t), np.sin(t)], -1)
    weights = np.r_[w, np.ones(11)]
    for method in conic.METHODS:
        with pytest.raises(ValueError, match=f"'weights' {msg}"):
            conic.fit(pts, method=method, weights=weights)
        assert not bool(jax.jit(lambda p, ww: conic.fit(p, method=method, weights=ww).ok)(pts, weights))


@functools.lru_cache(maxsize=None)
def _jitted_fit(method):
    """One jitted fit per method, reused by every example of the same shape (a jit built
    per example compiled the whole pipeline every time)."""
    return jax.jit(lambda p, w: conic.fit(p, method=method, weights=w))


@settings(max_examples=12, deadline=None)
@given(n=st.sampled_from([6, 30]), batch=st.sampled_from([(), (3,)]), dtype=st.sampled_from([np.float32, np.float64]),
       bad=st.sampled_from(["none", "nan_p", "inf_p", "neg_w", "nan_w", "zero_w", "few"]),
       method=st.sampled_from(conic.METHODS))
def test_property_fit_bad_input(n, batch, dtype, bad, method):
    """A clear ValueError naming the argument, or finite coefficients whose ok flag is
    truthful; under jit the same input is never ok."""
    rng = np.random.default_rng(n)
    t = rng.uniform(0, 2 * np.pi, batch + (n,))
    pts = np.stack([3 * np.cos(t) + 1, 2 * np.sin(t)], -1) + 0.01 * rng.normal(size=batch + (n, 2))
    pts = pts.astype(dtype)
    w = np.ones(batch + (n,), dtype)
    idx = (0,) * len(batch) + (int(rng.integers(n)),)
    if bad == "nan_p":
        pts[idx + (0,)] = np.nan
    elif bad == "inf_p":
        pts[idx + (1,)] = np.inf
    elif bad == "neg_w":
        w[idx] = -1
    elif bad == "nan_w":
        w[idx] = np.nan
    elif bad == "zero_w":
        w[...] = 0
    elif bad == "few":
        w[..., 4:] = 0
        pts[..., 3, :] = pts[..., 0, :]  # 4 distinct weighted points
    if bad == "none":
        res = conic.fit(pts, method=method, weights=w)
        assert np.all(np.isfinite(np.asarray(res.coeffs)))
        assert np.all(np.asarray(res.ok))
        return
    with pytest.raises(ValueError, match="'(points|weights)'|fewer than 5 distinct"):
        conic.fit(pts, method=method, weights=w)
    res = _jitted_fit(method)(pts, w)
    assert np.all(np.isfinite(np.asarray(res.coeffs)))
    assert not bool(np.asarray(res.ok)[(0,) * len(batch)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shift, scale", [(1e6, 1.0), (0.0, 1e-6), (0.0, 1e6), (1e3, 1.0)])
def test_translation_and_scale_do_not_matter_or_are_flagged(dtype, shift, scale):
    """The same ellipse far from the origin or at any scale: the same geometry to the
    dtype's accuracy, or ok=False where unit-norm coefficients in data coordinates cannot
    hold the conic; never NaN with ok=True."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    pts = np.stack([3 * np.cos(t) + 1, 2 * np.sin(t)], -1)
    res = conic.fit(((pts + shift) * scale).astype(dtype), kind="ellipse")
    geo = conic.geometry(res.coeffs)
    # The fit is exact in normalised coordinates; unit-norm coefficients in data
    # coordinates then carry a relative error of about eps (offset / spread)^2, and the
    # fit says ok=False once that passes 1e-3 (float32 from offsets of ~100 spreads).
    loss = np.finfo(dtype).eps * (shift * np.sqrt(2) / np.sqrt(np.mean(np.sum((pts - pts.mean(0)) ** 2, -1)))) ** 2
    if loss >= 1e-3:
        assert not bool(res.ok)
        return
    assert bool(res.ok)
    rtol = (1e-6 if dtype == np.float64 else 2e-2) + loss
    np.testing.assert_allclose(np.asarray(geo.semi_axes, np.float64), np.array([3.0, 2.0]) * scale, rtol=rtol)
    np.testing.assert_allclose(np.asarray(geo.center, np.float64), (np.array([1.0, 0.0]) + shift) * scale,
                               rtol=rtol, atol=rtol * scale)


# --- circles ------------------------------------------------------------------------

def circle_points(rng, n, *, center, radius, arc, noise=0.0, start=0.0):
    t = start + np.sort(rng.uniform(0, arc, n))
    p = np.stack([center[0] + radius * np.cos(t), center[1] + radius * np.sin(t)], -1)
    return p + noise * rng.normal(size=p.shape)


def circle_lstsq(p, w=None):
    """Oracles: Kasa (linear least squares, A = 1) and the orthogonal-distance fit
    (scipy.optimize.least_squares), both in float64 on the host."""
    from scipy.optimize import least_squares
    w = np.ones(len(p)) if w is None else w
    M = np.stack([p[:, 0], p[:, 1], np.ones(len(p))], -1) * np.sqrt(w)[:, None]
    D, E, F = np.linalg.lstsq(M, -(p ** 2).sum(1) * np.sqrt(w), rcond=None)[0]
    kasa = np.array([-D / 2, -E / 2, np.sqrt(D * D / 4 + E * E / 4 - F)])
    geo = least_squares(lambda q: np.sqrt(w) * (np.hypot(p[:, 0] - q[0], p[:, 1] - q[1]) - q[2]), kasa,
                        xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    return kasa, geo


def center_radius(fit):
    g = conic.geometry(fit.coeffs)
    return np.asarray(g.center), np.asarray(g.semi_axes)


@pytest.mark.parametrize("method", conic.CIRCLE_METHODS)
def test_circles_recovered_exactly_from_noise_free_arcs(method):
    rng = np.random.default_rng(5)
    arcs = (np.pi / 2, np.pi, 2 * np.pi, np.pi / 2)
    scales = (1e-3, 1.0, 1e3, 10.0)
    cases = [dict(center=rng.normal(size=2) * 5 * s, radius=rng.uniform(1, 3) * s, arc=a, start=rng.uniform(0, 6))
             for a, s in zip(arcs, scales)]
    pts = np.stack([circle_points(rng, 20, **c) for c in cases])
    fit = conic.fit(pts, kind="circle", method=method)
    ctr, ax = center_radius(fit)
    assert np.all(np.asarray(fit.ok)) and np.all(np.asarray(fit.kind) == conic.ELLIPSE)
    for i, c in enumerate(cases):
        np.testing.assert_allclose(ctr[i], c["center"], atol=1e-9 * c["radius"])
        np.testing.assert_allclose(ax[i], [c["radius"]] * 2, rtol=1e-9)
    c = np.asarray(fit.coeffs)  # unit norm, A = C, B = 0
    np.testing.assert_allclose(np.linalg.norm(c, axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(c[:, 0], c[:, 2], rtol=1e-12)
    assert np.all(c[:, 1] == 0)
    assert np.all(np.asarray(fit.residual) <= 1e-9 * np.array(scales))


def test_circle_fits_match_least_squares_oracles_on_noisy_arcs():
    rng = np.random.default_rng(6)
    pts = np.stack([circle_points(rng, N, center=(2.0, -1.0), radius=3.0, arc=a, noise=0.1)
                    for a in (np.pi / 2, np.pi, 2 * np.pi)])
    w = rng.uniform(0.5, 2.0, pts.shape[:2])
    for weights in (None, w):
        kasa = conic.fit(pts, kind="circle", method="direct", weights=weights)
        geo = conic.fit(pts, kind="circle", method="geometric", weights=weights)
        for i in range(len(pts)):
            want_k, want_g = circle_lstsq(pts[i], None if weights is None else w[i])
            c, r = center_radius(kasa)
            np.testing.assert_allclose(np.r_[c[i], r[i, 0]], want_k, rtol=1e-9, atol=1e-9)
            c, r = center_radius(geo)
            np.testing.assert_allclose(np.r_[c[i], r[i, 0]], want_g, rtol=1e-7, atol=1e-7)
            d = np.hypot(pts[i, :, 0] - want_g[0], pts[i, :, 1] - want_g[1]) - want_g[2]
            ww = np.ones(N) if weights is None else w[i]
            np.testing.assert_allclose(float(geo.residual[i]), np.sqrt(np.sum(ww * d * d) / ww.sum()), rtol=1e-7)


def _pencil_oracle(p, method):
    """Centre and radius of an algebraic circle fit from scipy.linalg.eig(S, N) on the raw
    points: the eigenvector of the smallest non-negative eigenvalue."""
    from scipy.linalg import eig
    z = (p ** 2).sum(1)
    B = np.stack([z, p[:, 0], p[:, 1], np.ones(len(p))], -1)
    S = B.T @ B / len(p)
    zb, xb, yb = z.mean(), p[:, 0].mean(), p[:, 1].mean()
    N = {"pratt": [[0, 0, 0, -2], [0, 1, 0, 0], [0, 0, 1, 0], [-2, 0, 0, 0]],
         "taubin": [[4 * zb, 2 * xb, 2 * yb, 0], [2 * xb, 1, 0, 0], [2 * yb, 0, 1, 0], [0, 0, 0, 0]],
         "hyper": [[8 * zb, 4 * xb, 4 * yb, 2], [4 * xb, 1, 0, 0], [4 * yb, 0, 1, 0], [2, 0, 0, 0]]}[method]
    lam, V = eig(S, np.array(N, float))
    ok = np.isfinite(lam) & (lam.real >= -1e-12)
    A, D, E, F = V[:, np.flatnonzero(ok)[np.argmin(lam.real[ok])]].real
    c = np.array([-D / (2 * A), -E / (2 * A)])
    return c, np.sqrt(c @ c - F / A)


@pytest.mark.parametrize("method", ["pratt", "taubin", "hyper"])
def test_circle_algebraic_fits_match_the_generalised_eigenproblem(method):
    rng = np.random.default_rng(12)
    pts = np.stack([circle_points(rng, N, center=rng.normal(size=2) * 3, radius=rng.uniform(1, 4), arc=arc,
                                  noise=0.05) for arc in (np.pi / 3, np.pi, 2 * np.pi)])
    ctr, ax = center_radius(conic.fit(pts, kind="circle", method=method))
    for i in range(len(pts)):
        c, r = _pencil_oracle(pts[i], method)
        np.testing.assert_allclose(ctr[i], c, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(ax[i, 0], r, rtol=1e-8)


def test_circle_methods_rank_as_the_theory_says_on_short_arcs():
    # Kasa's fit shrinks circles on short arcs; the normalised fits do not (Chernov 2010).
    rng = np.random.default_rng(7)
    pts = np.stack([circle_points(rng, N, center=(0.0, 0.0), radius=1.0, arc=np.pi / 3, noise=0.01)
                    for _ in range(200)])
    err = {}
    for m in conic.CIRCLE_METHODS:
        _, r = center_radius(conic.fit(pts, kind="circle", method=m))
        err[m] = np.mean(r[:, 0]) - 1.0
    assert err["direct"] < -3 * max(abs(err["hyper"]), abs(err["geometric"]))
    assert abs(err["hyper"]) < abs(err["pratt"]) + 0.01


def test_circle_batched_equals_looped_and_jit_vmap_grad():
    rng = np.random.default_rng(8)
    pts = np.stack([circle_points(rng, N, center=rng.normal(size=2), radius=2.0, arc=np.pi, noise=0.05)
                    for _ in range(4)])
    for m in ("hyper", "geometric"):
        batched = conic.fit(pts, kind="circle", method=m).coeffs
        looped = np.stack([np.asarray(conic.fit(p, kind="circle", method=m).coeffs) for p in pts])
        np.testing.assert_allclose(batched, looped, atol=1e-12)
    # under the caller's jit and vmap (geometric: the algebraic stages run inside it too)
    jitted = jax.jit(lambda p: conic.fit(p, kind="circle", method="geometric").coeffs)(pts)
    np.testing.assert_allclose(jitted, looped, atol=1e-10)
    vmapped = jax.vmap(lambda p: conic.fit(p, kind="circle", method="geometric").coeffs)(pts)
    np.testing.assert_allclose(vmapped, looped, atol=1e-10)

    def radius(p, m):
        return conic.geometry(conic.fit(p, kind="circle", method=m).coeffs).semi_axes[0]

    v = rng.normal(size=pts[0].shape)
    for m in ("direct", "geometric"):
        g = jax.grad(radius)(jnp.asarray(pts[0]), m)
        h = 1e-4  # "geometric" stops at tol: its value is a few 1e-12 off the optimum, too much for h=1e-6
        fd = (radius(pts[0] + h * v, m) - radius(pts[0] - h * v, m)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=1e-5)


def test_circle_degenerate_points_flag_not_ok():
    line = np.stack([np.arange(6.0), 2 * np.arange(6.0) + 1], -1)
    same = np.ones((6, 2))
    two = np.array([[0.0, 0], [1, 1], [0, 0], [1, 1], [0, 0], [1, 1]])
    for m in conic.CIRCLE_METHODS:
        fit = conic.fit(np.stack([line, same, two]), kind="circle", method=m)
        assert not np.any(np.asarray(fit.ok)), m
        assert np.all(np.isfinite(np.asarray(fit.coeffs)))
    three = conic.fit(np.array([[0.0, 0], [2, 0], [0, 2]]), kind="circle")
    c, r = center_radius(three)
    assert bool(three.ok)
    np.testing.assert_allclose(c, [1, 1], atol=1e-12)
    np.testing.assert_allclose(r, [np.sqrt(2)] * 2, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(shift=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), scale=st.floats(1e-2, 1e2),
       turn=st.floats(-np.pi, np.pi))
def test_circle_fit_is_equivariant_under_similarity(shift, scale, turn):
    rng = np.random.default_rng(9)
    p = circle_points(rng, 12, center=(0.3, -0.2), radius=1.0, arc=2.0, noise=0.05)
    c0, r0 = center_radius(conic.fit(p, kind="circle", method="geometric"))
    R = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    q = scale * p @ R.T + np.asarray(shift)
    c1, r1 = center_radius(conic.fit(q, kind="circle", method="geometric"))
    # unit-norm coefficients in data coordinates lose eps * (offset / spread)^2 (documented in ConicFit)
    loss = 1e-7 + 10 * np.finfo(float).eps * (np.abs(shift).max() / scale) ** 2
    np.testing.assert_allclose(c1, scale * R @ c0 + np.asarray(shift), atol=loss * (scale + np.abs(shift).max()))
    np.testing.assert_allclose(r1, scale * r0, rtol=loss)
