"""Every worked case of ../shared/reference_cases.json, checked through the public API.

The file is read from ../shared when present, else from the copy in tests/data/.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from toolkit import autodiff as ad
from toolkit import gmm, so3

COVERED = {
    "autodiff": {"elementwise_first_and_second_derivative", "grad_of_mean", "squared_loss_grad",
                 "grad_through_a_derivative", "vjp_with_cotangent", "vjp_bad_cotangent", "jacobian_of_square",
                 "gradient_of_sum"},
    "gmm": {"weighted_moments_of_a_map", "rank_deficient_data_fits"},
    "so3": {"axis_angle_least_squares", "exp_log_round_trip_regimes"},
    "conic": {"hyperbola_through_origin"},
}


def test_every_reference_case_has_a_check(reference_cases):
    for section, cases in reference_cases.items():
        if section.startswith("_"):
            continue
        ids = {c["id"] for c in cases}
        assert ids <= COVERED.get(section, set()), f"unchecked reference cases in {section}: {ids - COVERED[section]}"


def random_axes(rng, n):
    a = rng.normal(size=(n, 3))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def vec_error(v_est, v_true, angle):
    e = np.abs(v_est - v_true).max(-1)
    if angle == np.pi:
        e = np.minimum(e, np.abs(v_est + v_true).max(-1))
    return e.max()


def test_reference_round_trip_case(reference_cases):
    case = next(c for c in reference_cases["so3"] if c["id"] == "exp_log_round_trip_regimes")
    rng = np.random.default_rng(7)
    for angle in [0, 1e-12, 1e-6, 1e-3, 1, 3, np.pi - 1e-6, np.pi - 1e-9]:
        v = random_axes(rng, 20) * angle
        assert vec_error(np.asarray(so3.log(so3.exp(v))), v, angle) <= case["tol_float64"]
        R = np.asarray(so3.exp(v))
        assert np.abs(np.asarray(so3.exp(so3.log(R))) - R).max() <= case["tol_float64"]


def test_reference_axis_angle_least_squares(reference_cases):
    case = next(c for c in reference_cases["so3"] if c["id"] == "axis_angle_least_squares")
    np.random.seed(case["seed"])
    p1 = np.random.randn(case["n"], 3)
    p2 = p1 @ np.asarray(so3.exp(np.array(case["v_true"]))).T + case["noise"] * np.random.randn(case["n"], 3)
    v, info = so3.fit(p1, p2)
    assert bool(info.converged)
    np.testing.assert_allclose(v, case["v_true"], atol=case["tol"])
    # From a poor start LM still reaches the same optimum (= Kabsch for l2).
    v2, info2 = so3.fit(p1, p2, init=np.array([-1.0, 2.0, 0.5]))
    np.testing.assert_allclose(v2, v, atol=1e-10)
    assert int(info2.n_iter) > 1 and np.all(np.diff(np.asarray(info2.history)) <= 1e-12)


def test_reference_weighted_moments_of_a_map(reference_cases):
    case = next(c for c in reference_cases["gmm"] if c["id"] == "weighted_moments_of_a_map")
    W = np.array(case["W"])
    ij = np.stack(np.meshgrid(np.arange(W.shape[0]), np.arange(W.shape[1]), indexing="ij"), -1).reshape(-1, 2)
    mean, cov = gmm.weighted_moments(ij, W.ravel())
    np.testing.assert_allclose(mean, case["mean"], atol=case["tol"])
    np.testing.assert_allclose(cov, case["cov"], atol=case["tol"])


def test_reference_rank_deficient_data_fits(reference_cases):
    case = next(c for c in reference_cases["gmm"] if c["id"] == "rank_deficient_data_fits")
    t = np.linspace(0, 2 * np.pi, 500, endpoint=False)
    X = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)  # on a circle in the plane z = 0
    g, info = gmm.fit(jax.random.key(0), X, 4, covariance_type="full", reg_covar=1e-6)
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.all(np.isfinite(leaf))
    assert np.all(np.isfinite(gmm.log_prob(g, X)))
    assert bool(info.converged), case["expect"]


def test_reference_autodiff_cases(reference_cases):
    cases = {c["id"]: c for c in reference_cases["autodiff"]}
    c = cases["elementwise_first_and_second_derivative"]
    b = jnp.array(c["b"])
    Q = lambda a: a ** 3 / 3 - b ** 2 / 2  # noqa: E731
    np.testing.assert_allclose(ad.elementwise_grad(Q)(jnp.array(c["a"])), c["Q_a"])
    np.testing.assert_allclose(ad.elementwise_grad(Q, order=2)(jnp.array(c["a"])), c["Q_aa"])
    c = cases["grad_of_mean"]
    g = ad.vjp(lambda x: jnp.mean(3 * (x + 2) ** 2), jnp.ones(c["x_shape"]), cotangent=1.0)
    np.testing.assert_allclose(g, c["grad"])
    c = cases["squared_loss_grad"]
    g = ad.vjp(lambda w: (w * c["x"] - c["y"]) ** 2, jnp.asarray(c["w"]), cotangent=jnp.asarray(1.0))
    assert float(g) == c["grad_w"]
    c = cases["grad_through_a_derivative"]

    def z(w, x):
        dy_dx = ad.jacobian(lambda x: w[0] * x + w[1])(x)
        return w[2] * x + dy_dx ** 2

    np.testing.assert_allclose(ad.jacobian(z)(jnp.array(c["w"]), c["x"]), c["dz_dw"])
    c = cases["vjp_with_cotangent"]
    out = ad.vjp(lambda x: jnp.outer(x, x), jnp.array(c["x"]), cotangent=jnp.ones(c["cotangent_shape"]))
    np.testing.assert_allclose(out, c["vjp"])
    c = cases["vjp_bad_cotangent"]
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 4\)"):
        ad.vjp(lambda x: jnp.outer(x, x), jnp.array(c["x"]), cotangent=jnp.ones(c["cotangent_shape"]))
    c = cases["jacobian_of_square"]
    np.testing.assert_allclose(ad.jacobian(lambda x: x ** 2)(jnp.array(c["x"])), c["jacobian"])
    c = cases["gradient_of_sum"]
    g = ad.vjp(lambda x: x[0] ** 2 + 5 * x[1], jnp.array(c["x"]), cotangent=1.0)
    np.testing.assert_allclose(g, c["grad"])


@pytest.mark.parametrize("method", ["direct", "taubin", "hyper", "geometric"])
def test_reference_hyperbola_through_origin(reference_cases, method):
    from toolkit import conic

    case = next(c for c in reference_cases["conic"] if c["id"] == "hyperbola_through_origin")
    pts = np.stack([case["x"], case["y"]], axis=-1)
    res = conic.fit(pts, kind="hyperbola", method=method)
    want = np.asarray(case["coeffs"], float)
    cos = abs(float(np.dot(np.asarray(res.coeffs), want))) / np.linalg.norm(want)
    assert bool(res.ok) and int(res.kind) == conic.HYPERBOLA
    assert cos > 1 - 1e-9
