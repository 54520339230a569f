"""Sparsity detection, colouring and sparse derivatives (issue: automatic sparsity).

Oracles: the dense ``jax.jacfwd`` / ``jax.hessian`` at several random points (detected
patterns must contain every non-zero, and equal the structural pattern), known optimal
colour counts on small patterns, and the densest row as a lower bound. (A periodic band
of width w on n columns needs more than w colours unless w divides n, so the families
use n = 84.)"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from toolkit import autodiff as ad

N = 84  # a multiple of 3, 4 and 7: periodic stencils of those widths colour optimally
M2 = 5  # 2-D grids M2 x M2


def _grid(f):
    return lambda x: f(x.reshape(M2, M2)).ravel()


def _lap_slices(u):
    p = jnp.pad(u, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u + u ** 3


def _lap_roll(u):
    return jnp.roll(u, 1, 0) + jnp.roll(u, -1, 0) + jnp.roll(u, 1, 1) + jnp.roll(u, -1, 1) - 4 * jnp.sin(u)


def _lap_conv(u):
    k = jnp.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
    return jax.scipy.signal.convolve2d(u, k, mode="same") + u ** 2


def _stepper(x):
    def step(c, _):
        return c + 0.1 * (jnp.roll(c, 1) - 2 * c + jnp.roll(c, -1)) - 0.01 * c ** 3, None
    return jax.lax.scan(step, x, None, length=3)[0]


def _fori_stepper(x):
    return jax.lax.fori_loop(0, 4, lambda i, v: v.at[i + 1].set(v[i] * v[i + 1]), x)


JACOBIAN_FAMILIES = {
    "stencil1d_slices": (lambda x: x[2:] - 2 * x[1:-1] + x[:-2] + x[1:-1] ** 3, N),
    "stencil1d_roll": (lambda x: jnp.roll(x, 1) - 2 * x + jnp.roll(x, -1) + jnp.exp(x), N),
    "stencil1d_conv": (lambda x: jnp.convolve(x, jnp.array([1.0, -2.0, 1.0]), mode="same") * x, N),
    "stencil2d_slices": (_grid(_lap_slices), M2 * M2),
    "stencil2d_roll": (_grid(_lap_roll), M2 * M2),
    "stencil2d_conv": (_grid(_lap_conv), M2 * M2),
    "banded_nonlinear": (lambda x: x ** 3 + jnp.pad(x[:-2] * x[1:-1], (2, 0)) - jnp.tanh(jnp.pad(x[3:], (0, 3))), N),
    "masked_product": (lambda x: x * jnp.asarray(np.arange(N) % 3 != 0) + jnp.roll(x, 1) * (np.arange(N) % 2), N),
    "arrowhead": (lambda x: jnp.concatenate([jnp.sum(x ** 2)[None], x[1:] * x[0]]), N),
    "scan_stepper": (_stepper, N),
    "fori_stepper": (_fori_stepper, N),
    "vmap_blocks": (lambda x: jax.vmap(lambda b: jnp.sin(b) * jnp.sum(b ** 2))(x.reshape(-1, 4)).ravel(), N),
    "gather_scatter": (lambda x: jnp.zeros(N).at[jnp.arange(0, N, 3)].add(x[jnp.arange(1, N, 3)] ** 2) + x[::-1], N),
    "cumsum_dot": (lambda x: jnp.cumsum(x)[:5] + jnp.asarray(np.eye(5, N, k=7)) @ jnp.sin(x), N),
    "dense": (lambda x: jnp.sin(jnp.mean(x)) * x, N),
}


def _dense_pattern(f, n, points=3):
    P = None
    for s in range(points):
        x = jnp.asarray(np.random.default_rng(s).normal(size=n))
        J = np.asarray(jax.jacfwd(lambda z: jnp.ravel(f(z)))(x)) != 0
        P = J if P is None else P | J
    return P


@pytest.mark.parametrize("name", list(JACOBIAN_FAMILIES))
def test_detected_jacobian_pattern_is_exact_and_sparse_jacobian_equals_jacfwd(name):
    f, n = JACOBIAN_FAMILIES[name]
    truth = _dense_pattern(f, n)
    P = ad.jacobian_sparsity(f, jax.ShapeDtypeStruct((n,), jnp.float64))
    assert sp.issparse(P) and P.dtype == bool and P.shape == truth.shape
    np.testing.assert_array_equal(P.toarray(), truth)  # contains every non-zero, and no more
    x = jnp.asarray(np.random.default_rng(9).normal(size=n))
    J = ad.sparse_jacobian(f, x)
    np.testing.assert_allclose(J.todense(), jax.jacfwd(lambda z: jnp.ravel(f(z)))(x), atol=1e-12, rtol=1e-12)
    fn = ad.sparse_jacobian_fn(f, x)
    np.testing.assert_allclose(fn(x + 1.0).todense(), jax.jacfwd(lambda z: jnp.ravel(f(z)))(x + 1.0), atol=1e-12,
                               rtol=1e-12)
    col = ad.jacobian_coloring(P, mode="auto")
    densest = max(int(P.sum(axis=1).max()), 1) if col.mode == "fwd" else max(int(P.sum(axis=0).max()), 1)
    assert col.n_colors <= KNOWN_OPTIMUM.get(name, densest), (name, col.n_colors, densest)


# where the densest row is not the optimum: out_i reads x_{i-2}, x_{i-1}, x_i, x_{i+3}, so
# any 6 consecutive columns share a row and need 6 colours (the densest row has 4)
KNOWN_OPTIMUM = {"banded_nonlinear": 6}


def test_where_and_cond_give_the_union_of_their_branches():
    a, b = (lambda x: x ** 2), (lambda x: jnp.roll(x, 1) * 2.0)
    union = _dense_pattern(a, 8) | _dense_pattern(b, 8)
    for f in (lambda x: jnp.where(x > 0, a(x), b(x)), lambda x: jax.lax.cond(x[0] > 0, a, b, x),
              lambda x: jax.lax.select(x > 0, a(x), b(x))):
        np.testing.assert_array_equal(ad.jacobian_sparsity(f, jnp.zeros(8)).toarray(), union)
    # a branch index known at trace time picks its branch only
    g = lambda x: jax.lax.cond(True, a, b, x)  # noqa: E731
    np.testing.assert_array_equal(ad.jacobian_sparsity(g, jnp.zeros(8)).toarray(), _dense_pattern(a, 8))


def test_while_loop_is_a_conservative_fixed_point():
    f = lambda x: jax.lax.while_loop(lambda s: s[1] < 2, lambda s: (s[0] * jnp.roll(s[0], 1), s[1] + 1), (x, 0))[0]  # noqa
    P = ad.jacobian_sparsity(f, jnp.zeros(6)).toarray()
    assert np.all(P >= _dense_pattern(f, 6))


def test_unknown_primitive_warns_and_stays_conservative():
    A = jnp.asarray(np.random.default_rng(0).normal(size=(5, 5)))
    f = lambda x: jnp.concatenate([jnp.linalg.solve(A, x[:5]), x[5:] ** 2])  # noqa: E731
    with pytest.warns(UserWarning, match="custom_linear_solve"):
        P = ad.jacobian_sparsity(f, jnp.zeros(8)).toarray()
    assert np.all(P >= _dense_pattern(f, 8))
    assert not P[5:, :5].any()  # the rest of the function stays exact


def _rosenbrock(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


HESSIAN_FAMILIES = {
    "partially_separable": (_rosenbrock, N),
    "arrowhead": (lambda x: x[0] * jnp.sum(x ** 2) + jnp.sum(jnp.cos(x)), N),
    "banded": (lambda x: jnp.sum(jnp.sin(x[:-2] * x[2:])) + jnp.sum(x ** 4), N),
    "stencil2d_energy": (lambda x: jnp.sum(_lap_slices(x.reshape(M2, M2)) ** 2), M2 * M2),
    "with_linear_term": (lambda x: jnp.sum(x[:-1] * x[1:]) + jnp.sum(jnp.arange(N) * x) + 3.0, N),
    "blocks": (lambda x: jnp.sum(jax.vmap(lambda b: jnp.prod(b) + b @ b)(x.reshape(-1, 3))), N),
    "scan_energy": (lambda x: jnp.sum(_stepper(x) ** 2), N),
    "dense": (lambda x: jnp.sum(x) ** 2 + jnp.sum(x), N),
}


def _dense_hessian_pattern(f, n, points=3):
    P = None
    for s in range(points):
        x = jnp.asarray(np.random.default_rng(s).normal(size=n))
        H = np.asarray(jax.hessian(f)(x)) != 0
        P = H if P is None else P | H
    return P


@pytest.mark.parametrize("name", list(HESSIAN_FAMILIES))
def test_detected_hessian_pattern_is_exact_and_sparse_hessian_equals_jax_hessian(name):
    f, n = HESSIAN_FAMILIES[name]
    truth = _dense_hessian_pattern(f, n)
    P = ad.hessian_sparsity(f, jnp.zeros(n))
    np.testing.assert_array_equal(P.toarray(), truth)
    assert (P != P.T).nnz == 0
    x = jnp.asarray(np.random.default_rng(5).normal(size=n))
    H = ad.sparse_hessian(f, x)
    np.testing.assert_allclose(H.todense(), jax.hessian(f)(x), atol=1e-12 * max(1.0, float(jnp.abs(H.data).max())),
                               rtol=1e-12)
    hess = ad.sparse_hessian_fn(f, x)
    np.testing.assert_allclose(hess(x * 0.5).todense(), jax.hessian(f)(x * 0.5), atol=1e-9, rtol=1e-12)
    sym = ad.hessian_coloring(P)  # star colouring, or columns where those are fewer
    assert sym.n_colors <= ad.jacobian_coloring(P).n_colors


def test_a_linear_term_adds_nothing_to_the_hessian_pattern():
    assert ad.hessian_sparsity(lambda x: jnp.sum(3.0 * x) + x[0], jnp.zeros(5)).nnz == 0
    P = ad.hessian_sparsity(lambda x: jnp.sum(3.0 * x) + x[1] * x[3], jnp.zeros(5)).toarray()
    assert P.sum() == 2 and P[1, 3] and P[3, 1]


def _banded(n, lo, hi):
    return sp.diags([np.ones(n - abs(k)) for k in range(-lo, hi + 1)], list(range(-lo, hi + 1)), format="csr") != 0


def test_colour_counts_against_known_optima():
    assert ad.jacobian_coloring(sp.identity(7, format="csr") != 0).n_colors == 1
    assert ad.jacobian_coloring(_banded(50, 1, 1)).n_colors == 3
    assert ad.jacobian_coloring(_banded(50, 2, 2)).n_colors == 5
    assert ad.jacobian_coloring(_banded(50, 0, 3)).n_colors == 4
    m = 12
    T = sp.diags([np.ones(m - 1), np.ones(m), np.ones(m - 1)], [-1, 0, 1])
    lap = (sp.kron(sp.identity(m), T) + sp.kron(T, sp.identity(m))) != 0
    assert ad.jacobian_coloring(lap).n_colors == 5  # optimal: (i + 2j) mod 5
    assert ad.jacobian_coloring(sp.block_diag([sp.csr_matrix(np.ones((3, 3)))] * 6) != 0).n_colors == 3
    assert ad.jacobian_coloring(np.ones((4, 9), bool), mode="auto").n_colors == 4  # rows: 4 < 9 columns
    assert ad.jacobian_coloring(np.ones((4, 9), bool), mode="auto").mode == "rev"
    arrow = np.eye(10, dtype=bool)
    arrow[0] = arrow[:, 0] = True
    assert ad.hessian_coloring(arrow).n_colors == 2
    assert ad.jacobian_coloring(arrow).n_colors == 10
    assert ad.hessian_coloring(_banded(30, 1, 1)).n_colors == 3


def _valid_coloring(pattern, col):
    A = sp.csr_matrix(pattern)
    G = (A.T @ A) if col.mode == "fwd" else (A @ A.T)
    G = sp.coo_matrix(G)
    off = G.row != G.col
    return not np.any(col.colors[G.row[off]] == col.colors[G.col[off]])


# few examples: each compiles its own evaluation (the pattern is part of the executable)
@settings(max_examples=8, deadline=None)
@given(n_out=st.integers(1, 30), n_in=st.integers(1, 30), density=st.floats(0.02, 0.4), seed=st.integers(0, 10_000))
def test_property_random_patterns_colour_validly_and_recover_exactly(n_out, n_in, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_out, n_in)) < density
    A = jnp.asarray(np.where(mask, rng.normal(size=mask.shape), 0.0))
    f = lambda x: A @ jnp.sin(x) + (A != 0) @ x ** 2  # noqa: E731 - pattern = mask
    P = ad.jacobian_sparsity(f, jnp.zeros(n_in)).toarray()
    np.testing.assert_array_equal(P, mask)
    col = ad.jacobian_coloring(mask, mode="auto")
    assert _valid_coloring(mask, col)
    assert col.n_colors <= max(1, min(mask.sum(1).max(initial=0), mask.sum(0).max(initial=0))) + \
        max(mask.sum(1).max(initial=0), mask.sum(0).max(initial=0))  # greedy bound, loose
    x = jnp.asarray(rng.normal(size=n_in))
    np.testing.assert_allclose(ad.sparse_jacobian(f, x, col).todense(), jax.jacfwd(f)(x), atol=1e-12)


@settings(max_examples=5, deadline=None)
@given(n=st.integers(2, 25), density=st.floats(0.02, 0.3), seed=st.integers(0, 10_000))
def test_property_star_colouring_recovers_random_symmetric_hessians(n, density, seed):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density, 1)
    W = jnp.asarray(np.where(upper, rng.normal(size=(n, n)), 0.0))
    f = lambda x: jnp.sum(W * jnp.outer(x, x)) + jnp.sum(x ** 4)  # noqa: E731
    x = jnp.asarray(rng.normal(size=n))
    H = ad.sparse_hessian(f, x)
    np.testing.assert_allclose(H.todense(), jax.hessian(f)(x), atol=1e-11)


def test_bad_input():
    f = lambda x: x[1:] * x[:-1]  # noqa: E731
    with pytest.raises(TypeError, match="floating"):
        ad.jacobian_sparsity(f, jnp.zeros(4, jnp.int32))
    with pytest.raises(TypeError, match="floating"):
        ad.sparse_jacobian(f, jnp.zeros(4, jnp.complex128))
    with pytest.raises(TypeError, match="floating"):
        ad.sparse_hessian(lambda x: jnp.sum(x ** 2), jnp.arange(3))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 4\)"):
        ad.sparse_jacobian(f, jnp.ones(4), np.eye(4, dtype=bool))
    with pytest.raises(ValueError, match="scalar"):
        ad.sparse_hessian(lambda x: x ** 2, jnp.ones(3))
    # a pattern that misses the x[:-1] dependence: detectable with check=True
    missing = np.eye(3, 4, k=1, dtype=bool)
    with pytest.raises(ValueError, match="misses non-zeros"):
        ad.sparse_jacobian(f, jnp.arange(1.0, 5.0), missing, check=True)
    J = ad.sparse_jacobian(f, jnp.arange(1.0, 5.0), np.eye(3, 4, dtype=bool) | missing, check=True)
    np.testing.assert_allclose(J.todense(), jax.jacfwd(f)(jnp.arange(1.0, 5.0)))
    with pytest.raises(ValueError, match="misses non-zeros"):
        ad.sparse_hessian(lambda x: jnp.sum(x[:-1] * x[1:]), jnp.ones(4), np.eye(4, dtype=bool), check=True)


def test_sparse_functions_are_jit_reusable_and_compile_once():
    from toolkit._monitor import CompileLog

    f, n = JACOBIAN_FAMILIES["stencil2d_slices"]
    jac = ad.sparse_jacobian_fn(f, jnp.zeros(n))
    xs = [jnp.full(n, float(s)) for s in range(4)]
    jac(xs[0])
    with CompileLog() as log:
        for x in xs[1:]:
            jac(x)
    assert log.compiles == 0, log.compiled
    J = jax.jit(lambda x: ad.sparse_jacobian(f, x, ad.jacobian_coloring(ad.jacobian_sparsity(f, x))).data)
    assert J(jnp.ones(n)).shape == (ad.jacobian_sparsity(f, jnp.zeros(n)).nnz,)


def test_detection_and_colouring_scale():
    """Not a timing test: a 2-D stencil of 10^4 unknowns and a band of 10^5 detect and colour."""
    m = 100

    def lap(x):
        return _lap_slices(x.reshape(m, m)).ravel()

    P = ad.jacobian_sparsity(lap, jax.ShapeDtypeStruct((m * m,), jnp.float64))
    assert P.nnz == 5 * m * m - 4 * m
    assert ad.jacobian_coloring(P).n_colors == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "primitive not understood" here
        Pb = ad.jacobian_sparsity(lambda x: x[2:] * x[1:-1] - x[:-2], jnp.zeros(100_000))
    assert ad.jacobian_coloring(Pb).n_colors == 3
