"""toolkit.so3 against scipy's Rotation, closed forms, autodiff and finite differences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from jax.test_util import check_grads
from scipy.spatial.transform import Rotation

from toolkit import so3

ANGLES = [0.0, 1e-12, 1e-8, 1e-4, 1.0, 3.0, np.pi - 1e-6, np.pi - 1e-10, np.pi]
TOL = {np.float64: 1e-14, np.float32: 1e-6}


def random_axes(rng, n):
    a = rng.normal(size=(n, 3))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def random_rotvecs(rng, n, max_angle=np.pi):
    return random_axes(rng, n) * rng.uniform(0, max_angle, size=(n, 1))


def vec_error(v_est, v_true, angle, tol=0.0):
    """Max error, allowing the antipodal ambiguity only where the stored angle is pi.

    (float32 cannot hold pi - 1e-10: it rounds to a float32 value above pi, for which
    the antipodal vector, of angle below pi, is the right answer.)
    """
    e = np.abs(v_est - v_true).max(-1)
    if abs(angle - np.pi) <= tol:
        e = np.minimum(e, np.abs(v_est + v_true).max(-1))
    return e.max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("angle", ANGLES)
def test_round_trips_in_every_regime(dtype, angle):
    v = (random_axes(np.random.default_rng(1), 200) * angle).astype(dtype)
    R = so3.exp(v)
    assert R.dtype == dtype
    v2 = so3.log(R)
    ambiguous = 0.0 if dtype == np.float64 else 1e-6
    assert vec_error(np.asarray(v2, np.float64), v.astype(np.float64), angle, ambiguous) <= TOL[dtype]
    assert np.abs(np.asarray(so3.exp(v2), np.float64) - np.asarray(R, np.float64)).max() <= TOL[dtype]
    # The matrix itself against scipy (float64 oracle).
    Rs = Rotation.from_rotvec(v.astype(np.float64)).as_matrix()
    assert np.abs(np.asarray(R, np.float64) - Rs).max() <= 4 * TOL[dtype]


def test_log_of_angle_just_below_pi_is_not_clamped():
    v = np.array([0.0, 0.0, np.pi - 1e-10])
    assert float(jnp.linalg.norm(so3.log(so3.exp(v)))) == pytest.approx(np.pi - 1e-10, abs=1e-15)


def test_against_scipy_on_random_rotations():
    rng = np.random.default_rng(2)
    v = random_rotvecs(rng, 500)
    rot = Rotation.from_rotvec(v)
    np.testing.assert_allclose(so3.exp(v), rot.as_matrix(), atol=1e-14)
    np.testing.assert_allclose(so3.log(rot.as_matrix()), rot.as_rotvec(), atol=1e-13)
    q_scipy = rot.as_quat(scalar_first=True)
    q_scipy *= np.sign(q_scipy[:, :1])
    np.testing.assert_allclose(so3.to_quaternion(rot.as_matrix()), q_scipy, atol=1e-14)
    np.testing.assert_allclose(so3.from_quaternion(-q_scipy * 3.0), rot.as_matrix(), atol=1e-14)
    R1, R2 = rot.as_matrix()[:250], rot.as_matrix()[250:]
    np.testing.assert_allclose(so3.compose(R1, R2), (rot[:250] * rot[250:]).as_matrix(), atol=1e-14)
    np.testing.assert_allclose(so3.distance(R1, R2), (rot[:250].inv() * rot[250:]).magnitude(), atol=1e-13)
    np.testing.assert_allclose(so3.inverse(R1), rot[:250].inv().as_matrix(), atol=1e-15)
    p = rng.normal(size=(250, 3))
    np.testing.assert_allclose(so3.apply(R1, p[:, None, :])[:, 0], rot[:250].apply(p), atol=1e-14)


def test_hat_vee_and_cross_product():
    rng = np.random.default_rng(3)
    v, p = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    np.testing.assert_allclose(jnp.einsum("nij,nj->ni", so3.hat(v), p), np.cross(v, p), atol=1e-15)
    np.testing.assert_array_equal(so3.vee(so3.hat(v)), v)


def test_distance_is_exact_for_tiny_angles():
    R = so3.exp(np.array([0.3, 0.2, -0.1]))
    R2 = R @ so3.exp(np.array([1e-9, 0.0, 0.0]))
    assert float(so3.distance(R, R2)) == pytest.approx(1e-9, rel=1e-6)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-3, 1.0, np.pi - 1e-3])
def test_exp_gradients_match_finite_differences(angle):
    v = random_axes(np.random.default_rng(4), 1)[0] * angle
    check_grads(so3.exp, (jnp.asarray(v),), order=2, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("angle", [1e-9, 1e-3, 1.0, 3.0, np.pi - 1e-4])
def test_log_gradients_match_finite_differences(angle):
    v = random_axes(np.random.default_rng(5), 1)[0] * angle
    check_grads(lambda x: so3.log(so3.exp(x)), (jnp.asarray(v),), order=1, modes=["fwd", "rev"], atol=1e-6,
                rtol=1e-6, eps=min(1e-6, angle / 10))


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-4, 1.0, np.pi - 1e-6, np.pi - 1e-10])
def test_log_exp_jacobian_is_identity_everywhere(angle):
    """d log(exp(v)) / dv = I: finite, and the radial derivative near pi is not zero."""
    v = jnp.asarray(random_axes(np.random.default_rng(6), 1)[0] * angle)
    for jac in (jax.jacfwd, jax.jacrev):
        J = jac(lambda x: so3.log(so3.exp(x)))(v)
        np.testing.assert_allclose(J, np.eye(3), atol=1e-6 if angle > 3.14 else 1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-10, 1e-5, 0.15, 0.3, 1.0, 3.0])
def test_exp_derivative_equals_jacfwd(angle):
    v = jnp.asarray(random_axes(np.random.default_rng(8), 1)[0] * angle)
    want = jnp.moveaxis(jax.jacfwd(so3.exp)(v), -1, 0)
    np.testing.assert_allclose(so3.exp_derivative(v), want, atol=1e-14)


def test_exp_derivative_matches_gallego_yezzi_formula_at_moderate_angle():
    """Gallego & Yezzi eq. (9), evaluated directly where it has no cancellation."""
    v = np.array([0.7, -0.4, 1.1])
    R = np.asarray(so3.exp(v))
    t2 = v @ v
    for i in range(3):
        e = np.eye(3)[i]
        want = (v[i] * so3.hat(v) + so3.hat(np.cross(v, (np.eye(3) - R) @ e))) @ R / t2
        np.testing.assert_allclose(so3.exp_derivative(v)[i], want, atol=1e-14)


@pytest.mark.parametrize("angle", [0.0, 1e-7, 0.1, 0.25, 1.0, 3.0])
def test_jacobians_against_autodiff_and_inverses(angle):
    v = jnp.asarray(random_axes(np.random.default_rng(9), 1)[0] * angle)
    zero = jnp.zeros(3)
    Jr = jax.jacfwd(lambda d: so3.log(so3.exp(v).T @ so3.exp(v + d)))(zero)
    Jl = jax.jacfwd(lambda d: so3.log(so3.exp(v + d) @ so3.exp(v).T))(zero)
    np.testing.assert_allclose(so3.right_jacobian(v), Jr, atol=1e-13)
    np.testing.assert_allclose(so3.left_jacobian(v), Jl, atol=1e-13)
    np.testing.assert_allclose(so3.right_jacobian(v) @ so3.right_jacobian_inv(v), np.eye(3), atol=1e-13)
    np.testing.assert_allclose(so3.left_jacobian(v) @ so3.left_jacobian_inv(v), np.eye(3), atol=1e-13)
    # d log(R exp(d)) / dd = J_r^{-1}(v)
    Jri = jax.jacfwd(lambda d: so3.log(so3.exp(v) @ so3.exp(d)))(zero)
    np.testing.assert_allclose(so3.right_jacobian_inv(v), Jri, atol=1e-12)


def test_batched_jit_vmap_agree():
    v = random_rotvecs(np.random.default_rng(10), 24).reshape(2, 3, 4, 3)
    R = so3.exp(v)
    assert R.shape == (2, 3, 4, 3, 3)
    np.testing.assert_allclose(jax.jit(so3.exp)(v), R, atol=1e-15)
    np.testing.assert_allclose(jax.vmap(so3.log)(R), so3.log(R), atol=1e-15)
    np.testing.assert_allclose(so3.log(R), v, atol=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=3, max_size=3),
       st.floats(0, np.pi - 1e-9, allow_nan=False))
@example([0.0, 1.0, 1.0], 3.0)  # found by CI: det(R) = 1 + 1.3e-15
def test_hypothesis_log_exp_round_trip(direction, angle):
    d = np.asarray(direction)
    n = np.linalg.norm(d)
    v = np.zeros(3) if n < 1e-6 else d / n * angle
    np.testing.assert_allclose(so3.log(so3.exp(v)), v, atol=2e-14)
    R = so3.exp(v)
    # a few ulp: the products R R^T and the LU inside det round too
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=4e-15)
    assert float(jnp.linalg.det(R)) == pytest.approx(1.0, abs=1e-14)


def test_project_gives_nearest_rotation_and_fixes_reflections():
    rng = np.random.default_rng(11)
    R = np.asarray(so3.exp(random_rotvecs(rng, 5)))
    np.testing.assert_allclose(so3.project(R + 1e-3 * rng.normal(size=R.shape)), R, atol=3e-3)
    Rp = so3.project(rng.normal(size=(50, 3, 3)))
    np.testing.assert_allclose(jnp.linalg.det(Rp), 1.0, atol=1e-14)
    np.testing.assert_allclose(Rp @ jnp.swapaxes(Rp, -1, -2), np.broadcast_to(np.eye(3), Rp.shape), atol=1e-14)
    # scipy's from_matrix also returns the Frobenius-nearest rotation.
    M = rng.normal(size=(3, 3))
    M *= np.sign(np.linalg.det(M))
    np.testing.assert_allclose(so3.project(M), Rotation.from_matrix(M).as_matrix(), atol=1e-12)


@pytest.mark.parametrize("planar", [False, True])
def test_kabsch_is_exact_on_noise_free_data(planar):
    rng = np.random.default_rng(12)
    P = rng.normal(size=(4, 30, 3))
    if planar:
        P[..., 2] = 0.0
    R = np.asarray(so3.exp(random_rotvecs(rng, 4)))
    Q = np.einsum("bij,bnj->bni", R, P)
    np.testing.assert_allclose(so3.kabsch(P, Q), R, atol=1e-13)
    # Weighted against scipy's align_vectors (which returns R with Q = R P).
    w = rng.uniform(0.1, 2, size=30)
    Qn = Q[0] + 0.01 * rng.normal(size=Q[0].shape)
    want = Rotation.align_vectors(Qn, P[0], weights=w)[0].as_matrix()
    np.testing.assert_allclose(so3.kabsch(P[0], Qn, w), want, atol=1e-12)


def _outlier_problem(rng, n=100, frac=0.2):
    v_true = np.array([0.4, -0.3, 0.8])
    P = rng.normal(size=(n, 3))
    Q = P @ np.asarray(so3.exp(v_true)).T + 0.01 * rng.normal(size=(n, 3))
    bad = rng.choice(n, int(frac * n), replace=False)
    Q[bad] = 5.0 * rng.normal(size=(len(bad), 3)) + 3.0
    return v_true, P, Q


@pytest.mark.parametrize("loss", ["huber", "cauchy"])
def test_robust_losses_reject_gross_outliers(loss):
    v_true, P, Q = _outlier_problem(np.random.default_rng(13))
    v_l2, _ = so3.fit(P, Q)
    v_rob, info = so3.fit(P, Q, loss=loss, scale=0.1)
    assert float(so3.distance(so3.exp(v_l2), so3.exp(v_true))) > 1e-2
    assert float(so3.distance(so3.exp(v_rob), so3.exp(v_true))) < 1e-2
    assert bool(info.converged)


def test_fit_batched_equals_looped_and_jits():
    rng = np.random.default_rng(14)
    problems = [_outlier_problem(rng, n=40) for _ in range(3)]
    P = np.stack([p[1] for p in problems])
    Q = np.stack([p[2] for p in problems])
    vb, ib = jax.jit(lambda P, Q: so3.fit(P, Q, loss="cauchy", scale=0.1))(P, Q)
    assert vb.shape == (3, 3) and ib.history.shape == (3, 51)
    for i in range(3):
        vi, _ = so3.fit(P[i], Q[i], loss="cauchy", scale=0.1)
        np.testing.assert_allclose(vb[i], vi, atol=1e-12)


def test_fit_reports_nan_under_jit_and_raises_eagerly():
    P = np.random.default_rng(15).normal(size=(10, 3))
    Q = P.copy()
    Q[3, 1] = np.nan
    with pytest.raises(ValueError, match="'Q' contains NaN"):
        so3.fit(P, Q)
    v, info = jax.jit(so3.fit)(P, Q)
    assert not bool(info.converged)


def test_fit_is_differentiable_wrt_targets():
    """Implicit in the loop: the gradient through the solver exists and is finite."""
    P = np.random.default_rng(16).normal(size=(10, 3))
    Q = P @ np.asarray(so3.exp(np.array([0.1, 0.2, 0.3]))).T
    g = jax.grad(lambda Q: jnp.sum(so3.kabsch(P, Q)))(Q)
    assert np.all(np.isfinite(g))


def test_mean_chordal_matches_scipy_and_geodesic_is_stationary():
    rng = np.random.default_rng(17)
    base = Rotation.from_rotvec([0.3, -0.5, 1.0])
    rots = base * Rotation.from_rotvec(0.3 * rng.normal(size=(20, 3)))
    w = rng.uniform(0.5, 2.0, size=20)
    np.testing.assert_allclose(so3.mean(rots.as_matrix(), w), rots.mean(weights=w).as_matrix(), atol=1e-12)
    Rg = so3.mean(rots.as_matrix(), w, method="geodesic")
    # Karcher mean: the weighted sum of log(R^T R_m) vanishes.
    resid = np.einsum("m,mi->i", w, so3.log(jnp.swapaxes(Rg, -1, -2)[None] @ rots.as_matrix()))
    np.testing.assert_allclose(resid, 0.0, atol=1e-10)
    batched = so3.mean(np.stack([rots.as_matrix()] * 2), method="geodesic")
    np.testing.assert_allclose(batched[1], so3.mean(rots.as_matrix(), method="geodesic"), atol=1e-14)


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: so3.exp(np.zeros(4)), ValueError, r"'v' must have shape \(..., 3\), got \(4,\)"),
        (lambda: so3.log(np.zeros((3, 2))), ValueError, r"'R' must have shape \(..., 3, 3\), got \(3, 2\)"),
        (lambda: so3.from_quaternion(np.zeros(3)), ValueError, r"'q' must have shape \(..., 4\)"),
        (lambda: so3.exp(np.ones(3, np.complex64)), TypeError, "must be real"),
        (lambda: so3.kabsch(np.zeros((5, 3)), np.zeros((6, 3))), ValueError, r"P \(5, 3\) and Q \(6, 3\)"),
        (lambda: so3.fit(np.zeros((5, 3)), np.zeros((4, 3))), ValueError, r"P \(5, 3\) and Q \(4, 3\)"),
        (lambda: so3.fit(np.zeros((5, 3)), np.zeros((5, 3)), loss="l1"), ValueError, "loss='l1' is not one of"),
        (lambda: so3.fit(np.zeros((5, 3)), np.zeros((5, 3)), scale=0.0), ValueError, "scale must be > 0"),
        (lambda: so3.mean(np.zeros((4, 3, 3)), method="median"), ValueError, "method='median'"),
        (lambda: so3.log(2 * np.eye(3), check=True), ValueError, "not a rotation matrix"),
    ],
)
def test_bad_input_raises_clear_errors(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_float32_default_and_integer_input():
    R = so3.exp(jnp.array([1, 0, 0]))
    assert R.dtype == jnp.result_type(float)
    np.testing.assert_allclose(R, Rotation.from_rotvec([1, 0, 0]).as_matrix(), atol=1e-15)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", ["kabsch", "fit"])
@pytest.mark.parametrize("w, msg", [(-np.ones(5), "'weights' must be non-negative"),
                                    (np.zeros(5), "'weights' must have a positive total"),
                                    (np.r_[np.nan, np.ones(4)], "'weights' contains NaN or inf")])
def test_bad_weights_raise(fn, w, msg):
    P = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match=f"so3.{fn}: argument {msg}"):
        getattr(so3, fn)(P, P, weights=w)


def test_mean_of_nothing_or_bad_weights_raises():
    Rs = np.stack([np.eye(3)] * 2)
    with pytest.raises(ValueError, match="Rs holds no rotations"):
        so3.mean(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="must have a positive total"):
        so3.mean(Rs, weights=np.zeros(2))
    with pytest.raises(ValueError, match="must be non-negative"):
        so3.mean(Rs, weights=np.r_[1.0, -1.0], method="geodesic")


def test_kabsch_refuses_points_on_one_line_through_the_origin():
    """One point, or collinear ones, leave the rotation about their line free: any answer
    would look plausible, so concrete input raises."""
    d = np.array([1.0, 2.0, -0.5])
    R = np.asarray(so3.exp(np.array([0.3, -0.2, 0.5])))
    for P in (d[None], np.outer([1.0, -2.0, 3.5], d), np.zeros((4, 3))):
        with pytest.raises(ValueError, match="so3.kabsch: argument 'P': the points .* one line through the origin"):
            so3.kabsch(P, P @ R.T)
    P = np.stack([np.outer([1.0, 2.0], d), np.eye(3)[:2]])  # set 0 degenerate, set 1 fine
    with pytest.raises(ValueError, match=r"point set \(0,\)"):
        so3.kabsch(P, P @ R.T)
    w = np.array([1.0, 0.0, 0.0])  # only one point counts
    with pytest.raises(ValueError, match="one line"):
        so3.kabsch(np.eye(3), np.eye(3) @ R.T, weights=w)
    np.testing.assert_allclose(so3.kabsch(np.eye(3)[:2], np.eye(3)[:2] @ R.T), R, atol=1e-12)


@pytest.mark.parametrize("fn", ["kabsch", "fit"])
def test_batch_shapes_that_do_not_broadcast_name_both(fn):
    with pytest.raises(ValueError, match=r"batch shapes do not broadcast: P \(0,\), Q \(2,\)"):
        getattr(so3, fn)(np.zeros((0, 5, 3)), np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"P \(3,\), weights \(2,\)"):
        getattr(so3, fn)(np.ones((3, 5, 3)), np.ones((3, 5, 3)), weights=np.ones((2, 5)))
    with pytest.raises(ValueError, match="hold no points"):
        getattr(so3, fn)(np.zeros((0, 3)), np.zeros((0, 3)))


@settings(max_examples=30, deadline=None)
@given(batch=st.sampled_from([(), (2,), (0,)]), n=st.integers(0, 6), dtype=st.sampled_from(["float32", "float64"]),
       bad=st.sampled_from(["none", "neg_w", "zero_w", "nan_w", "nan_p"]))
def test_property_kabsch_bad_input(batch, n, dtype, bad):
    """A ValueError naming the argument, or a proper rotation (the true one when the
    points determine it); never a plausible answer to invalid input."""
    rng = np.random.default_rng(n)
    P = rng.normal(size=batch + (n, 3)).astype(dtype)
    R = np.asarray(so3.exp(np.array([0.3, -0.2, 0.5])), dtype)
    Q = P @ R.T
    w = np.ones(batch + (n,), dtype)
    if n and bad == "neg_w":
        w[..., 0] = -1
    elif n and bad == "zero_w":
        w[...] = 0
    elif n and bad == "nan_w":
        w[..., -1] = np.nan
    elif n and bad == "nan_p":
        P[..., 0, 0] = np.nan
    nonempty = np.prod(batch, dtype=int) > 0
    if n == 0 or (bad != "none" and nonempty) or (n == 1 and nonempty):
        with pytest.raises(ValueError, match="so3.kabsch: (argument '(weights|P)'|P and Q hold no points)"):
            so3.kabsch(P, Q, weights=w)
        return
    out = np.asarray(so3.kabsch(P, Q, weights=w), np.float64)
    assert out.shape == batch + (3, 3)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(out @ np.swapaxes(out, -1, -2), np.broadcast_to(np.eye(3), out.shape), atol=tol)
    if n >= 2:  # two independent directions determine the rotation
        np.testing.assert_allclose(out, np.broadcast_to(R, out.shape), atol=tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("v", [[0.0, 0.0, np.pi], [np.pi * (1 - 1e-7), 0.0, 0.0], [np.pi / 3, 2 * np.pi / 3, 2 * np.pi / 3],
                               [0.0, 0.0, 0.0], [1e-4, 0.0, 0.0]])
def test_log_reverse_mode_gradient_is_finite_and_matches_forward_at_singular_points(dtype, v):
    """Regression: in float32 the unused series branch divided by w = 0 at exactly pi and
    its NaN leaked into jax.grad through the where."""
    R = so3.exp(jnp.asarray(v, dtype))
    f = lambda R: jnp.sum(so3.log(R) ** 2)  # noqa: E731
    rev, fwd = np.asarray(jax.grad(f)(R)), np.asarray(jax.jacfwd(f)(R))
    assert np.all(np.isfinite(rev))
    np.testing.assert_allclose(rev, fwd, atol=1e-5 if dtype == jnp.float32 else 1e-12)


def test_projection_gradient_holds_at_repeated_singular_values():
    """The sum of two rotations has two equal singular values, where the SVD's own
    derivative breaks; so3.project / so3.mean differentiate through the polar factor's."""
    R1, R2 = so3.exp(jnp.array([0.1, 0.2, 0.3])), so3.exp(jnp.array([0.3, -0.2, 0.1]))
    W = jnp.arange(9.0).reshape(3, 3)
    for M in [R1 + R2, jnp.eye(3), jnp.diag(jnp.array([1.0, 2.0, -3.0]))]:
        f = lambda M: jnp.sum(so3.project(M) * W)  # noqa: E731
        g = jax.grad(f)(M)
        h = 1e-6
        fd = jnp.stack([(f(M + h * e.reshape(3, 3)) - f(M - h * e.reshape(3, 3))) / (2 * h)
                        for e in jnp.eye(9)]).reshape(3, 3)
        np.testing.assert_allclose(g, fd, atol=1e-7)
    f = lambda v: jnp.sum(so3.mean(so3.exp(jnp.stack([v, jnp.array([0.3, -0.2, 0.1])]))) * W)  # noqa: E731
    v = jnp.array([0.1, 0.2, 0.3])
    fd = jnp.stack([(f(v + 1e-6 * e) - f(v - 1e-6 * e)) / 2e-6 for e in jnp.eye(3)])
    np.testing.assert_allclose(jax.grad(f)(v), fd, atol=1e-7)
