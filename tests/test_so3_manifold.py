"""so3.rplus / rminus / riemannian / apply_updates: optax on SO(3) against Kabsch and
against finite differences of the right perturbation."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from toolkit import so3


def _pair(seed=0, n=50, noise=0.01):
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, 3))
    R = np.asarray(so3.exp(jnp.asarray(rng.normal(size=3))))
    return P, P @ R.T + noise * rng.normal(size=(n, 3)), R


def test_rplus_rminus_are_inverse_and_match_exp():
    rng = np.random.default_rng(1)
    Ra = so3.exp(jnp.asarray(rng.normal(size=(5, 3))))
    Rb = so3.exp(jnp.asarray(rng.normal(size=(5, 3))))
    np.testing.assert_allclose(so3.rplus(Rb, so3.rminus(Ra, Rb)), Ra, atol=1e-12)
    d = jnp.asarray(rng.normal(size=(5, 3)) * 0.3)
    np.testing.assert_allclose(so3.rminus(so3.rplus(Ra, d), Ra), d, atol=1e-12)
    np.testing.assert_allclose(so3.rplus(Ra, d), Ra @ so3.exp(d), atol=1e-12)


def test_tangent_gradient_is_the_derivative_of_the_right_perturbation():
    from toolkit.so3.manifold import _tangent_gradient

    P, Q, _ = _pair()
    R = so3.exp(jnp.array([0.4, -0.1, 0.2]))
    f = lambda R: jnp.sum((jnp.asarray(Q) - jnp.asarray(P) @ R.T) ** 4)  # noqa: E731
    g = _tangent_gradient(R, jax.grad(f)(R))
    fd = jax.jacfwd(lambda d: f(R @ so3.exp(d)))(jnp.zeros(3))
    np.testing.assert_allclose(g, fd, rtol=1e-10)


def test_riemannian_adam_reaches_kabsch_and_stays_orthonormal():
    P, Q, _ = _pair(2)
    Pj, Qj = jnp.asarray(P), jnp.asarray(Q)
    opt = so3.riemannian(optax.adam(optax.exponential_decay(0.05, 2000, 0.1)))

    def loss(p):
        return jnp.mean(jnp.sum((Qj - Pj @ p["R"].T - p["t"]) ** 2, -1))

    params = {"R": jnp.eye(3), "t": jnp.zeros(3)}

    @jax.jit
    def run(params):
        def step(carry, _):
            params, state = carry
            updates, state = opt.update(jax.grad(loss)(params), state, params)
            return (so3.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, opt.init(params)), None, length=10_000)[0][0]

    out = run(params)
    R = out["R"]
    Rk = so3.kabsch(P - P.mean(0), Q - Q.mean(0))
    assert float(so3.distance(R, Rk)) < 1e-6
    np.testing.assert_allclose(np.asarray(R.T @ R), np.eye(3), atol=1e-12)
    assert abs(float(jnp.linalg.det(R)) - 1) < 1e-12
    np.testing.assert_allclose(out["t"], Q.mean(0) - P.mean(0) @ np.asarray(R).T, atol=1e-6)


def test_masks_batches_and_bad_use():
    rng = np.random.default_rng(3)
    targets = so3.exp(jnp.asarray(rng.normal(size=(4, 3))))
    W = jnp.asarray(rng.normal(size=(3, 3)))  # a 3x3 that is not a rotation
    loss = lambda p: jnp.sum((p["Rs"] - targets) ** 2) + jnp.sum((p["W"] - 2.0) ** 2)  # noqa: E731
    mask = {"Rs": True, "W": False}
    opt = so3.riemannian(optax.sgd(0.1), is_rotation=mask)
    params = {"Rs": jnp.broadcast_to(jnp.eye(3), (4, 3, 3)), "W": W}
    state = opt.init(params)
    for _ in range(300):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        assert updates["Rs"].shape == (4, 3) and updates["W"].shape == (3, 3)
        params = so3.apply_updates(params, updates)
    assert float(jnp.max(so3.distance(params["Rs"], targets))) < 1e-6
    np.testing.assert_allclose(params["W"], 2.0, atol=1e-6)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(jax.grad(loss)(params), state)


def test_so3_optax_experiment_runs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "experiments", "configs/so3_optax.yaml", "adam_steps=600",
                          "lm_iterations=3", "plot=false", "--out", str(root / "runs" / "test-so3-optax"), "--quiet"],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = max((root / "runs" / "test-so3-optax" / "so3_optax").iterdir())
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["adam"]["distance_to_kabsch_rad"] < 1e-6 and m["lm"]["distance_to_kabsch_rad"] < 1e-9
    assert abs(m["adam"]["scale"] - m["lm"]["scale"]) < 1e-6 and m["adam"]["orthonormality_error"] < 1e-12
