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
