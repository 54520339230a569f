"""so3.Rotation and so3.Slerp: scipy as the oracle, jit / vmap / grad of every constructor
and method (grad against central finite differences), exactness at 0 and pi, numpy
float64 whatever JAX's x64 setting, and bad input. scipy's own test_rotation.py runs
against the classes in tests/test_scipy_suite.py (slow)."""
import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation as SR
from scipy.spatial.transform import Slerp as SSlerp

from toolkit import so3
from toolkit.so3 import Rotation, Slerp

RNG = np.random.default_rng(7)
QUATS = RNG.normal(size=(6, 4))
AXES = SR.random(rng=3).as_matrix()  # three orthonormal Davenport axes
SEQS = ["".join(p) for p in itertools.permutations("xyz")] + [a + b + a for a, b in itertools.permutations("xyz", 2)]
SEQS = SEQS + [s.upper() for s in SEQS]


def test_all_24_euler_sequences_match_scipy_both_ways():
    assert len(SEQS) == 24
    r, s = Rotation.from_quat(QUATS), SR.from_quat(QUATS)
    for seq in SEQS:
        np.testing.assert_allclose(r.as_euler(seq), s.as_euler(seq), atol=1e-13, err_msg=seq)
        angles = s.as_euler(seq, degrees=True)
        np.testing.assert_allclose(Rotation.from_euler(seq, angles, degrees=True).as_matrix(),
                                   SR.from_euler(seq, angles, degrees=True).as_matrix(), atol=1e-14)


@pytest.mark.parametrize("order", ["e", "intrinsic"])
def test_davenport_matches_scipy(order):
    r, s = Rotation.from_quat(QUATS), SR.from_quat(QUATS)
    np.testing.assert_allclose(r.as_davenport(AXES, order), s.as_davenport(AXES, order), atol=1e-13)
    angles = RNG.uniform(-1, 1, size=(6, 3))
    np.testing.assert_allclose(Rotation.from_davenport(AXES, order, angles).as_matrix(),
                               SR.from_davenport(AXES, order, angles).as_matrix(), atol=1e-14)


def test_conversions_products_and_reductions_match_scipy():
    r, s = Rotation.from_quat(QUATS), SR.from_quat(QUATS)
    close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-14)  # noqa: E731
    close(r.as_quat(), s.as_quat())
    close(r.as_quat(canonical=True, scalar_first=True), s.as_quat(canonical=True, scalar_first=True))
    close(r.as_matrix(), s.as_matrix())
    close(r.as_rotvec(degrees=True), s.as_rotvec(degrees=True))
    close(r.as_mrp(), s.as_mrp())
    m = s.as_matrix()
    close(Rotation.from_matrix(m).as_quat(), SR.from_matrix(m).as_quat())  # scipy's sign too
    close(Rotation.from_matrix(m + 0.01).as_quat(), SR.from_matrix(m + 0.01).as_quat())  # projected
    close(Rotation.from_rotvec(s.as_rotvec()).as_quat(), SR.from_rotvec(s.as_rotvec()).as_quat())
    close(Rotation.from_mrp(s.as_mrp()).as_quat(), SR.from_mrp(s.as_mrp()).as_quat())
    close((r * r[::-1]).as_quat(), (s * s[::-1]).as_quat())
    close((r ** 0.3).as_quat(), (s ** 0.3).as_quat())
    close((r ** -1).as_quat(), (s ** -1).as_quat())
    close(r.magnitude(), s.magnitude())
    v = RNG.normal(size=(6, 3))
    close(r.apply(v), s.apply(v))
    close(r.apply(v, inverse=True), s.apply(v, inverse=True))
    w = RNG.uniform(0.1, 2.0, size=6)
    assert (r.mean(w) * Rotation.from_quat(s.mean(w).as_quat()).inv()).magnitude() < 1e-14
    left, right = Rotation.random(4, rng=1), Rotation.random(3, rng=2)
    got, li, ri = r.reduce(left, right, return_indices=True)
    want, wli, wri = s.reduce(SR.from_quat(left.as_quat()), SR.from_quat(right.as_quat()), return_indices=True)
    np.testing.assert_array_equal(li, wli)
    np.testing.assert_array_equal(ri, wri)
    close(got.as_quat(), want.as_quat())
    np.testing.assert_array_equal(r.approx_equal(r * Rotation.from_rotvec([0, 0, 1e-9])), np.ones(6, bool))


def test_align_vectors_matches_scipy_including_an_infinite_weight():
    a, b = RNG.normal(size=(7, 3)), RNG.normal(size=(7, 3))
    got, want = Rotation.align_vectors(a, b, return_sensitivity=True), SR.align_vectors(a, b, return_sensitivity=True)
    np.testing.assert_allclose(got[0].as_quat(), want[0].as_quat(), atol=1e-14)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-12)
    w = np.ones(7)
    w[3] = np.inf
    got, want = Rotation.align_vectors(a, b, w), SR.align_vectors(a, b, w)
    np.testing.assert_allclose(got[0].as_quat(), want[0].as_quat(), atol=1e-14)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    got, want = Rotation.align_vectors(a[0], b[0]), SR.align_vectors(a[0], b[0])  # one pair: the smallest turn
    np.testing.assert_allclose(got[0].as_quat(), want[0].as_quat(), atol=1e-14)


def test_slerp_matches_scipy():
    times = [0.0, 0.5, 2.0, 3.0]
    key = Rotation.random(4, rng=5)
    t = np.linspace(0, 3, 23)
    got = Slerp(times, key)(t).as_quat()
    want = SSlerp(times, SR.from_quat(key.as_quat()))(t).as_quat()
    np.testing.assert_allclose(got, want, atol=1e-14)
    assert Slerp(times, key)(1.0).single


def test_numpy_in_numpy_out_float64_whatever_x64():
    with jax.enable_x64(False):
        r = Rotation.from_euler("xyz", [0.1, 0.2, 0.3])
        q = r.as_quat()
        assert isinstance(q, np.ndarray) and q.dtype == np.float64 and q.flags.writeable
        np.testing.assert_allclose(q, SR.from_euler("xyz", [0.1, 0.2, 0.3]).as_quat(), atol=1e-16)
        assert isinstance(r.magnitude(), np.float64)
        assert isinstance(r.approx_equal(r), np.bool_)
        rj = Rotation.from_rotvec(jnp.array([0.1, 0.2, 0.3]))  # JAX in: JAX out, JAX's dtype
        assert isinstance(rj.as_matrix(), jax.Array) and rj.as_matrix().dtype == jnp.float32
        want = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
        assert float(jnp.abs(rj.as_matrix() - want.astype(np.float32)).max()) < 1e-6


def test_float32_jax_inputs_stay_float32_and_accurate():
    v = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
    r = Rotation.from_rotvec(v)
    for out in (r.as_quat(), r.as_matrix(), r.as_euler("zyx"), r.as_rotvec(), r.magnitude()):
        assert out.dtype == jnp.float32
    np.testing.assert_allclose(r.as_rotvec(), SR.from_rotvec(np.asarray(v, np.float64)).as_rotvec(), atol=5e-6)


def test_exact_at_zero_and_pi():
    for angle in [0.0, 1e-12, 1e-6, np.pi - 1e-9, np.pi]:
        v = np.array([0.6, 0.0, 0.8]) * angle
        r = Rotation.from_rotvec(v)
        np.testing.assert_allclose(r.as_rotvec(), v, atol=1e-15, rtol=1e-15)
        np.testing.assert_allclose(r.magnitude(), angle, atol=1e-15, rtol=1e-15)
        np.testing.assert_allclose(Rotation.from_matrix(r.as_matrix()).as_rotvec(), v, atol=4e-15, rtol=1e-14)
    g = jax.grad(lambda v: jnp.sum(Rotation.from_rotvec(v).as_rotvec() * jnp.array([1.0, 2.0, 3.0])))(jnp.zeros(3))
    np.testing.assert_allclose(g, [1.0, 2.0, 3.0], atol=1e-15)
    g = jax.grad(lambda v: Rotation.from_rotvec(v).as_matrix()[1, 0])(jnp.zeros(3))
    np.testing.assert_allclose(g, [0.0, 0.0, 1.0], atol=1e-15)


# -- jit, vmap and grad through every constructor and method ---------------------------
_X3 = np.array([0.3, -0.5, 0.7])
CONSTRUCTORS = {
    "from_rotvec": (lambda x: Rotation.from_rotvec(x), _X3),
    "from_rotvec_deg": (lambda x: Rotation.from_rotvec(x, degrees=True), _X3 * 50),
    "from_quat": (lambda x: Rotation.from_quat(x), np.array([0.2, -0.1, 0.4, 0.9])),
    "from_quat_scalar_first": (lambda x: Rotation.from_quat(x, scalar_first=True), np.array([0.9, 0.2, -0.1, 0.4])),
    # at a rotation, finite differences step off it, into the projected branch: compare
    # like with like (the projected branch itself is the next entry)
    "from_matrix": (lambda x: Rotation.from_matrix(x, assume_valid=True), np.asarray(SR.from_rotvec(_X3).as_matrix())),
    "from_matrix_projected": (lambda x: Rotation.from_matrix(x), np.asarray(SR.from_rotvec(_X3).as_matrix()) + 0.05),
    "from_mrp": (lambda x: Rotation.from_mrp(x), _X3 / 3),
    "from_euler": (lambda x: Rotation.from_euler("zyx", x), _X3),
    "from_euler_intrinsic_deg": (lambda x: Rotation.from_euler("XZX", x, degrees=True), _X3 * 40),
    "from_davenport": (lambda x: Rotation.from_davenport(AXES, "e", x), _X3),
}
R2 = Rotation.from_rotvec(np.array([-0.2, 0.1, 0.4]))
V = np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]])
METHODS = {
    "as_quat": lambda r: r.as_quat(),
    "as_quat_canonical": lambda r: r.as_quat(canonical=True, scalar_first=True),
    "as_matrix": lambda r: r.as_matrix(),
    "as_rotvec": lambda r: r.as_rotvec(),
    "as_rotvec_deg": lambda r: r.as_rotvec(degrees=True),
    "as_mrp": lambda r: r.as_mrp(),
    "as_euler": lambda r: r.as_euler("xyz"),
    "as_euler_symmetric": lambda r: r.as_euler("ZYZ", degrees=True),
    "as_davenport": lambda r: r.as_davenport(AXES, "i"),
    "apply": lambda r: r.apply(V),
    "apply_inverse": lambda r: r.apply(V, inverse=True),
    "inv": lambda r: r.inv().as_quat(),
    "mul": lambda r: (r * R2).as_quat(),
    "rmul": lambda r: (R2 * r).as_quat(),
    "pow": lambda r: (r ** 0.7).as_quat(),
    "pow_int": lambda r: (r ** -1).as_quat(),
    "magnitude": lambda r: r.magnitude(),
    "approx_equal_margin": lambda r: (R2 * r.inv()).magnitude(),
    "mean": lambda r: Rotation.concatenate([r, R2]).mean(np.array([1.0, 2.0])).as_matrix(),
    "reduce": lambda r: r.reduce(Rotation.from_quat(np.eye(4))).as_quat(),
    "slerp": lambda r: Slerp([0.0, 1.0], Rotation.concatenate([R2, r]))(0.3).as_matrix(),
    "getitem": lambda r: Rotation.concatenate([r, R2, r])[1:].as_quat(),
    "setitem": lambda r: _set_second(Rotation.concatenate([R2, R2, R2]), r).as_quat(),
    "iter": lambda r: jnp.stack([one.magnitude() for one in Rotation.concatenate([r, R2])]),
    "identity_random_mul": lambda r: (Rotation.identity(2) * r * Rotation.random(rng=1)).as_quat(),
    "align_vectors": lambda r: Rotation.align_vectors(r.apply(V), V + np.array([[0.0, 0.01, 0.0], [0.0, 0.0, 0.0]]))[0]
    .as_quat(),
}


def _set_second(rots, r):
    rots[1] = r
    return rots


@pytest.mark.parametrize("cname", list(CONSTRUCTORS))
def test_jit_and_grad_through_every_constructor(cname):
    make, x = CONSTRUCTORS[cname]
    eager = make(x).as_matrix()
    np.testing.assert_allclose(jax.jit(lambda x: make(x).as_matrix())(jnp.asarray(x)), eager, atol=1e-13)
    _check_grad(lambda x: make(x).as_matrix(), x)


@pytest.mark.parametrize("mname", list(METHODS))
def test_jit_vmap_and_grad_of_every_method(mname):
    method = METHODS[mname]
    x = np.array([0.4, -0.3, 0.9])
    f = lambda v: jnp.asarray(method(Rotation.from_rotvec(v)))  # noqa: E731
    eager = np.asarray(method(Rotation.from_rotvec(x)))  # numpy path
    np.testing.assert_allclose(jax.jit(f)(jnp.asarray(x)), eager, atol=1e-13)
    xs = np.stack([x, 0.5 * x, -x + 0.1])
    batched = jax.vmap(f)(jnp.asarray(xs))
    for k in range(3):
        np.testing.assert_allclose(batched[k], np.asarray(method(Rotation.from_rotvec(xs[k]))), atol=1e-13)
    _check_grad(f, x)


def _check_grad(f, x, h=1e-6):
    x = np.asarray(x, np.float64)
    w = np.asarray(RNG.normal(size=np.shape(f(jnp.asarray(x)))))
    loss = lambda v: jnp.sum(f(v) * w)  # noqa: E731
    g = jax.grad(loss)(jnp.asarray(x))
    steps = np.eye(x.size).reshape((x.size,) + x.shape)
    fd = np.array([(loss(jnp.asarray(x + h * e)) - loss(jnp.asarray(x - h * e))) / (2 * h) for e in steps
                   ]).reshape(x.shape)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, fd, atol=1e-6 * max(1.0, np.abs(fd).max()), rtol=1e-5)


def test_rotation_is_a_pytree_through_jit_scan_and_vmap():
    r = Rotation.from_rotvec(jnp.asarray(RNG.normal(size=(5, 3))))
    out = jax.jit(lambda r: r * r)(r)
    assert isinstance(out, Rotation) and out.shape == (5,)
    np.testing.assert_allclose(out.as_quat(), (r * r).as_quat(), atol=1e-15)
    mags = jax.vmap(lambda one: one.magnitude())(r)
    np.testing.assert_allclose(mags, r.magnitude(), atol=1e-15)
    step = Rotation.from_rotvec(jnp.array([0.0, 0.0, 0.1]))
    final, _ = jax.lax.scan(lambda c, _: (c * step, None), Rotation.identity().__class__.from_quat(
        jnp.array([0.0, 0.0, 0.0, 1.0])), None, length=10)
    np.testing.assert_allclose(final.as_rotvec(), [0.0, 0.0, 1.0], atol=1e-14)
    fixed = Rotation.from_euler("xyz", [0.1, 0.2, 0.3])  # numpy-built, applied to traced points
    np.testing.assert_allclose(jax.jit(fixed.apply)(jnp.ones((4, 3))), fixed.apply(np.ones((4, 3))), atol=1e-15)
    keyed = Rotation.random(3, jax.random.key(0))
    assert isinstance(keyed.as_quat(), jax.Array) and keyed.shape == (3,)
    np.testing.assert_allclose(jnp.linalg.norm(keyed.as_quat(), axis=-1), 1.0, atol=1e-15)


def test_bad_input_errors_and_nan_under_jit():
    with pytest.raises(ValueError, match="zero norm"):
        Rotation.from_quat([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="zero norm"):
        Rotation.from_quat(jnp.zeros(4))
    q = jax.jit(lambda q: Rotation.from_quat(q).as_quat())(jnp.zeros(4))
    assert np.all(np.isnan(q))
    with pytest.raises(ValueError, match="Non-positive determinant"):
        Rotation.from_matrix(np.diag([1.0, 1.0, -1.0]))
    assert np.all(np.isnan(jax.jit(lambda m: Rotation.from_matrix(m).as_quat())(jnp.diag(jnp.array([1.0, 1, -1])))))
    with pytest.raises(ValueError, match="Expected axes from `seq`"):
        Rotation.from_euler("xYz", [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="consecutive axes to be different"):
        Rotation.from_euler("xxz", [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="Expected `quat` to have shape"):
        Rotation.from_quat(np.ones(3))
    with pytest.raises(ValueError, match="Cannot broadcast"):
        Rotation.random(2, rng=0) * Rotation.random(3, rng=0)
    with pytest.raises(ValueError, match="same shapes"):
        Rotation.align_vectors(np.ones((3, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="at least 2 rotations"):
        Slerp([0.0], Rotation.random(1, rng=0))
    with pytest.raises(TypeError, match="must be real"):
        Rotation.from_rotvec(np.array([1j, 0, 0]))
    key = Rotation.from_rotvec(jnp.asarray(RNG.normal(size=(3, 3))))
    q = jax.jit(lambda k, t: Slerp(jnp.array([0.0, 1.0, 2.0]), k)(t).as_quat())(key, jnp.array([0.5, 3.0]))
    assert np.all(np.isfinite(q[0])) and np.all(np.isnan(q[1]))


def test_gimbal_lock_warns_as_scipy_and_not_under_jit():
    r = Rotation.from_euler("xyz", [0.3, np.pi / 2, 0.1])
    with pytest.warns(UserWarning, match="Gimbal lock"):
        angles = r.as_euler("xyz")
    np.testing.assert_allclose(Rotation.from_euler("xyz", angles).as_matrix(), r.as_matrix(), atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the gimbal-lock warning is a UserWarning
        r.as_euler("xyz", suppress_warnings=True)
        jax.jit(lambda v: Rotation.from_rotvec(v).as_euler("xyz"))(jnp.asarray(r.as_rotvec()))


def test_riemannian_adam_on_rotation_leaves_reaches_kabsch():
    import optax

    P = RNG.normal(size=(40, 3))
    R_true = Rotation.from_rotvec(np.array([0.7, -1.2, 0.4]))
    Q = R_true.apply(P) + 0.01 * RNG.normal(size=P.shape)
    target = so3.kabsch(P, Q)
    params = {"r": Rotation.from_quat(jnp.array([0.0, 0.0, 0.0, 1.0]))}
    loss = lambda p: jnp.sum((p["r"].apply(jnp.asarray(P)) - Q) ** 2)  # noqa: E731
    opt = so3.riemannian(optax.adam(0.05))
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return so3.apply_updates(params, updates), state

    for _ in range(600):
        params, state = step(params, state)
    r = params["r"]
    assert isinstance(r, Rotation)
    assert float(so3.distance(r.as_matrix(), target)) < 1e-6
    assert abs(float(jnp.linalg.norm(r.as_quat())) - 1.0) < 1e-12
