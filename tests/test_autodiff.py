"""toolkit.autodiff against closed forms, jax.jacfwd/jacrev and finite differences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st
from jax.experimental import sparse as jsparse

from toolkit import autodiff as ad


def poly(x):
    return jnp.stack([x[0] ** 2 * x[1], 3 * x[1] ** 3 + x[2], jnp.sin(x[0]) * x[2], x[0] + x[1] + x[2]])


def poly_jac(x):
    x0, x1, x2 = x
    return np.array([[2 * x0 * x1, x0 ** 2, 0], [0, 9 * x1 ** 2, 1], [np.cos(x0) * x2, 0, np.sin(x0)], [1, 1, 1]])


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 5])
def test_jacobian_closed_form_all_modes_and_chunks(mode, chunk_size):
    x = np.array([0.7, -1.3, 2.0])
    J = ad.jacobian(poly, mode=mode, chunk_size=chunk_size)(x)
    np.testing.assert_allclose(J, poly_jac(x), rtol=1e-14)


def test_jacobian_of_softmax_closed_form():
    x = np.array([0.1, -2.0, 1.5, 0.3])
    s = np.exp(x) / np.exp(x).sum()
    want = np.diag(s) - np.outer(s, s)
    for mode in ["fwd", "rev"]:
        np.testing.assert_allclose(ad.jacobian(jax.nn.softmax, mode=mode, chunk_size=3)(x), want, atol=1e-15)


def test_jacobian_outer_product_layout():
    x = np.array([1.0, 2.0, 3.0])
    J = ad.jacobian(lambda x: jnp.outer(x, x), chunk_size=2)(x)
    assert J.shape == (3, 3, 3)
    want = np.einsum("ik,j->ijk", np.eye(3), x) + np.einsum("jk,i->ijk", np.eye(3), x)
    np.testing.assert_allclose(J, want)


def _random_fn(key, n_in, n_out):
    W = jax.random.normal(key, (n_out, n_in))

    def f(x, y):
        return {"a": jnp.tanh(W @ x) * y.sum(), "b": (x[:2] * y[0, 0]).reshape(1, 2)}

    return f


@pytest.mark.parametrize("mode", ["fwd", "rev", "auto"])
def test_jacobian_pytrees_argnums_tuple_and_aux_match_jax(mode):
    f = _random_fn(jax.random.key(0), 4, 6)
    x, y = jnp.linspace(-1, 1, 4), jnp.arange(6.0).reshape(2, 3) / 5

    def with_aux(x, y):
        return f(x, y), {"n": x.sum()}

    want = jax.jacrev(f, argnums=(0, 1))(x, y)
    got, aux = ad.jacobian(with_aux, argnums=(0, 1), mode=mode, has_aux=True, chunk_size=3)(x, y)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-14), got, want)
    assert float(aux["n"]) == pytest.approx(float(x.sum()))
    got1 = ad.jacobian(f, argnums=1, mode=mode)(x, y)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-14), got1,
                           jax.jacfwd(f, argnums=1)(x, y))


def test_jacobian_auto_picks_mode_by_size(monkeypatch):
    calls = []
    real_fwd, real_rev = jax.jacfwd, jax.jacrev
    monkeypatch.setattr(jax, "jacfwd", lambda *a, **k: calls.append("fwd") or real_fwd(*a, **k))
    monkeypatch.setattr(jax, "jacrev", lambda *a, **k: calls.append("rev") or real_rev(*a, **k))
    ad.jacobian(lambda x: jnp.concatenate([x, x, x]))(jnp.ones(2))
    ad.jacobian(lambda x: x.sum(keepdims=True))(jnp.ones(5))
    assert calls == ["fwd", "rev"]


def test_jacobian_jit_and_vmap():
    x = np.random.default_rng(0).normal(size=(5, 3))
    J = jax.jit(jax.vmap(ad.jacobian(poly, chunk_size=2)))(x)
    np.testing.assert_allclose(J, np.stack([poly_jac(r) for r in x]), rtol=1e-13)


def test_vjp_validates_structure_and_dtype_and_handles_pytrees():
    f = lambda x, y: {"p": x * y, "q": x.sum()}  # noqa: E731
    x, y = jnp.arange(3.0), jnp.ones(3)
    gx, gy = ad.vjp(f, x, y, cotangent={"p": jnp.ones(3), "q": jnp.asarray(2.0)})
    np.testing.assert_allclose(gx, y + 2)
    np.testing.assert_allclose(gy, x)
    with pytest.raises(ValueError, match="pytree structure"):
        ad.vjp(f, x, y, cotangent=jnp.ones(3))
    with pytest.raises(ValueError, match="dtype float32 does not match output dtype float64"):
        ad.vjp(lambda x: 2 * x, x, cotangent=jnp.ones(3, jnp.float32))


def test_jvp_matches_jacobian_product_and_validates():
    x, t = jnp.array([0.3, 0.5, -0.2]), jnp.array([1.0, -2.0, 0.5])
    out, tout = ad.jvp(poly, (x,), (t,))
    np.testing.assert_allclose(tout, poly_jac(np.asarray(x)) @ np.asarray(t), rtol=1e-14)
    with pytest.raises(ValueError, match=r"tangents shape .*\(2,\).* does not match primals shape .*\(3,\)"):
        ad.jvp(poly, (x,), (jnp.ones(2),))


def test_hessian_and_hvp_against_closed_form():
    A = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 1.0]])
    f = lambda x: 0.5 * x @ A @ x + jnp.sum(x ** 4)  # noqa: E731
    x, v = jnp.array([0.2, -0.4, 1.0]), jnp.array([1.0, 2.0, -1.0])
    H = A + np.diag(12 * np.asarray(x) ** 2)
    np.testing.assert_allclose(ad.hessian(f)(x), H, rtol=1e-14)
    np.testing.assert_allclose(ad.hvp(f, x, v), H @ np.asarray(v), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(lambda x, v: ad.hvp(f, x, v))(x, v), H @ np.asarray(v), rtol=1e-14)
    with pytest.raises(ValueError, match="does not match"):
        ad.hvp(f, x, jnp.ones(2))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_elementwise_grad_higher_orders_of_sin(order):
    x = jnp.linspace(-2, 2, 7)
    want = [jnp.cos, lambda x: -jnp.sin(x), lambda x: -jnp.cos(x), jnp.sin][order - 1](x)
    np.testing.assert_allclose(jax.jit(ad.elementwise_grad(jnp.sin, order))(x), want, atol=1e-15)


def test_elementwise_grad_vmap_and_check():
    f = lambda x: jnp.exp(2 * x)  # noqa: E731
    x = jnp.linspace(0, 1, 6).reshape(2, 3)
    np.testing.assert_allclose(jax.vmap(ad.elementwise_grad(f, 2))(x), 4 * np.exp(2 * np.asarray(x)), rtol=1e-14)
    with pytest.raises(ValueError, match="not elementwise"):
        ad.elementwise_grad(lambda x: jnp.cumsum(x), check=True)(jnp.arange(4.0))
    with pytest.raises(ValueError, match="same shape"):
        ad.elementwise_grad(lambda x: x.sum())(jnp.arange(4.0))
    with pytest.raises(ValueError, match="order must be"):
        ad.elementwise_grad(jnp.sin, order=0)


def test_per_example_grads_against_loop():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=3)), "b": jnp.asarray(0.5)}
    X, y = jnp.asarray(rng.normal(size=(8, 3))), jnp.asarray(rng.normal(size=8))
    loss = lambda p, ex: (ex[0] @ p["w"] + p["b"] - ex[1]) ** 2  # noqa: E731
    g = ad.per_example_grads(loss, params, (X, y))
    for i in range(8):
        gi = jax.grad(loss)(params, (X[i], y[i]))
        np.testing.assert_allclose(g["w"][i], gi["w"], rtol=1e-14)
        np.testing.assert_allclose(g["b"][i], gi["b"], rtol=1e-14)
    with pytest.raises(ValueError, match="same leading axis"):
        ad.per_example_grads(loss, params, (X, y[:5]))


# --- gradcheck: a correct and a deliberately wrong custom VJP of column normalisation


def make_colnorm(buggy: bool):
    @jax.custom_vjp
    def colnorm(x):
        return x / jnp.sum(x, axis=0)

    def fwd(x):
        s = jnp.sum(x, axis=0)
        return x / s, (x, s)

    def bwd(res, g):
        x, s = res
        gx = g / s
        if not buggy:  # d(x_ij / s_j)/dx_kj = delta_ik / s_j - x_ij / s_j^2
            gx = gx - jnp.sum(g * x, axis=0) / s ** 2
        return (gx,)

    colnorm.defvjp(fwd, bwd)
    return colnorm


def test_gradcheck_passes_correct_custom_vjp_and_says_forward_skipped():
    x = jnp.asarray(np.random.default_rng(2).uniform(0.5, 2.0, size=(3, 4)), jnp.float32)
    rep = ad.gradcheck(make_colnorm(False), x)
    assert rep.ok and rep.modes_checked == ("rev",) and "custom_vjp" in rep.note
    assert rep.analytic.shape == (12, 12) and rep.max_abs_error < 1e-8


def test_gradcheck_catches_buggy_custom_vjp_and_names_the_entry():
    x = jnp.asarray(np.random.default_rng(2).uniform(0.5, 2.0, size=(3, 4)))
    rep = ad.gradcheck(make_colnorm(True), x)
    assert not rep.ok and rep.max_abs_error > 1e-2
    with pytest.raises(AssertionError, match=r"rev-mode d out\[\d+, \d+\] / d args\[0\]\[\d+, \d+\]: analytic"):
        ad.assert_gradcheck(make_colnorm(True), x)


def test_gradcheck_checks_both_modes_on_plain_functions_and_pytrees():
    rep = ad.gradcheck(lambda p, y: {"o": jnp.sin(p["a"]) * y}, {"a": jnp.array([0.1, 0.2])}, jnp.array(3.0))
    assert rep.ok and rep.modes_checked == ("rev", "fwd")

    @jax.custom_jvp
    def bad(x):
        return jnp.sin(x)

    bad.defjvp(lambda p, t: (jnp.sin(p[0]), 2.0 * t[0]))  # wrong derivative
    rep = ad.gradcheck(bad, jnp.array([0.3, 0.4]))
    assert not rep.ok and "analytic 2" in rep.worst


def test_gradcheck_uses_coarser_step_for_float32_functions():
    f = lambda x: jnp.tanh(x.astype(jnp.float32) * 3)  # noqa: E731
    assert ad.gradcheck(f, jnp.array([0.1, 0.5])).ok


# --- sparse Jacobians


def banded(x):
    return jnp.concatenate([x[:1] ** 2, x[:-2] - 2 * x[1:-1] ** 3 + jnp.sin(x[2:]), x[-1:] * 3])


def banded_pattern(n):
    return sp.diags_array([1.0, 1.0, 1.0], offsets=[-1, 0, 1], shape=(n, n), format="csr") != 0


def test_sparse_jacobian_banded_equals_dense_with_three_colours():
    n = 50
    x = jnp.linspace(-1, 1, n)
    col = ad.jacobian_coloring(banded_pattern(n))
    assert col.n_colors == 3
    J = ad.sparse_jacobian(banded, x, col)
    assert isinstance(J, jsparse.BCOO) and J.nse == banded_pattern(n).nnz
    np.testing.assert_allclose(J.todense(), jax.jacfwd(banded)(x), atol=1e-15)
    J2 = jax.jit(lambda x: ad.sparse_jacobian(banded, x, col).data)(x)
    np.testing.assert_allclose(J2, J.data)


@settings(max_examples=8, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.floats(0.05, 0.6), st.integers(0, 10_000))
def test_sparse_jacobian_random_patterns_equal_dense(n_out, n_in, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.uniform(size=(n_out, n_in)) < density
    W = jnp.asarray(rng.normal(size=(n_out, n_in)) * mask)
    f = lambda x: jnp.tanh(W @ (x ** 2))  # noqa: E731  Jacobian pattern = mask (almost surely)
    x = jnp.asarray(rng.uniform(0.5, 1.5, size=n_in))
    col = ad.jacobian_coloring(mask)
    # A valid distance-2 colouring: no two columns of one colour share a row.
    for r in range(n_out):
        cs = col.colors[mask[r]]
        assert len(cs) == len(set(cs))
    J = ad.sparse_jacobian(f, x, jsparse.BCOO.fromdense(jnp.asarray(mask)))
    np.testing.assert_allclose(J.todense(), jax.jacfwd(f)(x), atol=1e-13)


def test_sparse_jacobian_rejects_mismatched_pattern():
    with pytest.raises(ValueError, match=r"sparsity shape \(4, 4\) does not match"):
        ad.sparse_jacobian(banded, jnp.ones(5), np.eye(4, dtype=bool))


# --- tagged intermediates


def test_intermediate_grads_like_retain_grad():
    def f(x):
        h = ad.tag("h", x * 2.0)
        g = ad.tag("g", jnp.sin(h))
        return jnp.sum(g ** 2)

    x = jnp.array([0.3, -0.7])
    value, grads = jax.jit(lambda x: ad.intermediate_grads(f, x))(x)
    h = 2 * np.asarray(x)
    assert float(value) == pytest.approx(np.sum(np.sin(h) ** 2))
    np.testing.assert_allclose(grads["g"], 2 * np.sin(h), rtol=1e-14)
    np.testing.assert_allclose(grads["h"], 2 * np.sin(h) * np.cos(h), rtol=1e-14)
    assert float(f(x)) == pytest.approx(float(value))  # tag is the identity outside


def test_intermediate_grads_errors():
    def twice(x):
        return jnp.sum(ad.tag("a", x) + ad.tag("a", x))

    with pytest.raises(ValueError, match="'a' is used twice"):
        ad.intermediate_grads(twice, jnp.ones(2))

    def nested(x):
        ad.intermediate_grads(lambda y: jnp.sum(ad.tag("b", y)), x)
        return jnp.sum(x)

    with pytest.raises(RuntimeError, match="nested"):
        ad.intermediate_grads(nested, jnp.ones(2))
    with pytest.raises(ValueError, match="scalar"):
        ad.intermediate_grads(lambda x: ad.tag("v", x), jnp.ones(2))


def test_bad_options():
    with pytest.raises(ValueError, match="mode='sideways'"):
        ad.jacobian(jnp.sin, mode="sideways")
    with pytest.raises(ValueError, match="chunk_size"):
        ad.jacobian(jnp.sin, chunk_size=0)


# ----------------------------------------------------------------------------- bad input


def test_gradcheck_fails_on_nan_or_inf_and_says_where():
    """A NaN in the numeric Jacobian (sqrt at 0) used to be skipped and pass as ok."""
    @jax.custom_vjp
    def sqrt_(x):
        return jnp.sqrt(x)

    sqrt_.defvjp(lambda x: (jnp.sqrt(x), x), lambda x, g: (g * 0.5 / jnp.sqrt(x),))
    rep = ad.gradcheck(sqrt_, jnp.array([0.0, 1.0]))
    assert not rep.ok
    assert "[0]" in rep.worst and ("nan" in rep.worst or "inf" in rep.worst)
    assert rep.max_abs_error == np.inf
    # a finite, correct function still passes
    assert ad.gradcheck(lambda x: jnp.sqrt(x), jnp.array([1.0, 2.0])).ok


@pytest.mark.parametrize("kw", [{"eps": 0.0}, {"eps": -1e-6}, {"eps": float("nan")}, {"eps": float("inf")},
                                {"atol": float("nan")}, {"rtol": -1.0}, {"atol": float("inf")}])
def test_gradcheck_rejects_bad_tolerances(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"gradcheck: {name} must be"):
        ad.gradcheck(jnp.sin, jnp.ones(2), **kw)


def test_intermediate_grads_repeated_calls_are_identical():
    def f(x):
        return jnp.sum(ad.tag("h", x * 2.0) ** 2)

    x = jnp.array([1.0, 2.0])
    first = ad.intermediate_grads(f, x)
    for _ in range(3):
        again = ad.intermediate_grads(f, x)
        assert float(again[0]) == float(first[0])
        np.testing.assert_array_equal(again[1]["h"], first[1]["h"])


def test_integer_inputs_name_the_argument():
    with pytest.raises(TypeError, match="argument 0 must be floating point"):
        ad.jacobian(lambda x: x ** 2, chunk_size=2)(jnp.arange(3))
    with pytest.raises(TypeError, match="argument 0 must be floating point"):
        ad.jacobian(lambda x: x ** 2)(jnp.arange(3))
    with pytest.raises(TypeError, match="sparse_jacobian: x must be floating point"):
        ad.sparse_jacobian(lambda x: x ** 2, jnp.arange(3), np.eye(3, dtype=bool))


@pytest.mark.parametrize("kw", [{}, {"chunk_size": 2}, {"mode": "fwd"}, {"mode": "rev"}])
def test_has_aux_without_a_pair_is_a_clear_error(kw):
    with pytest.raises(ValueError, match=r"has_aux=True needs f to return a pair \(out, aux\)"):
        ad.jacobian(lambda x: x ** 2, has_aux=True, **kw)(jnp.ones(3))
    with pytest.raises(ValueError, match="has_aux=True needs f to return a pair"):
        ad.jacobian(lambda x: (x, x, x), has_aux=True, **kw)(jnp.ones(3))


def test_sparsity_pattern_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"sparsity shape \(4, 4\) does not match"):
        ad.sparse_jacobian(lambda x: x ** 2, jnp.ones(3), np.eye(4, dtype=bool))


@settings(max_examples=40, deadline=None)
@given(shape=st.sampled_from([(3,), (2, 2)]), dtype=st.sampled_from(["float32", "float64", "int32"]),
       bad=st.sampled_from(["none", "nan", "inf"]), chunk=st.sampled_from([None, 1, 3]))
def test_property_jacobian_bad_input(shape, dtype, bad, chunk):
    """Random shapes, dtypes and NaN/inf: either a clear TypeError naming the argument, or
    a Jacobian that agrees with jax.jacfwd (NaN where the input is NaN, never hidden)."""
    x = np.arange(1, np.prod(shape) + 1, dtype=dtype).reshape(shape)
    if bad != "none" and dtype != "int32":
        x.flat[0] = np.nan if bad == "nan" else np.inf
    f = lambda v: jnp.sin(v) * v  # noqa: E731
    if dtype == "int32":
        with pytest.raises(TypeError, match="argument 0"):
            ad.jacobian(f, chunk_size=chunk)(jnp.asarray(x))
        return
    J = np.asarray(ad.jacobian(f, chunk_size=chunk)(jnp.asarray(x)))
    ref = np.asarray(jax.jacfwd(f)(jnp.asarray(x)))
    # where NaN/inf shows beyond the bad entry depends on the mode; it must show, though
    assert np.all(np.isfinite(J)) == bool(np.all(np.isfinite(x)))
    both = np.isfinite(J) & np.isfinite(ref)
    np.testing.assert_allclose(J[both], ref[both], rtol=1e-5)
    rep = ad.gradcheck(f, jnp.asarray(x))
    assert rep.ok == bool(np.all(np.isfinite(x)))
