"""A similarity (rotation, translation, scale) from noisy correspondences two ways:
``so3.riemannian(optax.adam(...))`` on all three parameters at once, against so3's
Levenberg-Marquardt on the rotation (after the closed-form centring), both measured by
their cost and rotation error per iteration. Writes metrics.json and so3_optax.png."""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from toolkit import so3
from toolkit.runner import output_file, require


@dataclasses.dataclass(frozen=True)
class Params:
    n_points: int = 200
    noise: float = 0.01
    scale: float = 2.5
    adam_steps: int = 2000
    learning_rate: float = 0.05
    decay_steps: int = 500  # the learning rate falls 10x every decay_steps
    lm_iterations: int = 10
    seed: int = 0
    plot: bool = True
    plot_name: str = output_file("so3_optax.png")

    def __post_init__(self):
        require(self, positive=("n_points", "scale", "adam_steps", "learning_rate", "decay_steps", "lm_iterations"),
                non_negative=("noise",))


def _problem(p: Params):
    rng = np.random.default_rng(p.seed)
    R = np.asarray(so3.exp(jnp.asarray(rng.normal(size=3))))
    t = rng.normal(size=3) * 3
    P = rng.normal(size=(p.n_points, 3))
    Q = p.scale * P @ R.T + t + p.noise * rng.normal(size=P.shape)
    return P, Q, R


def _adam(P, Q, R_true, p: Params):
    """Joint optimisation of ``{R, t, log s}``: ``(rotation errors, costs)`` per step."""
    Pj, Qj = jnp.asarray(P), jnp.asarray(Q)
    opt = so3.riemannian(optax.adam(optax.exponential_decay(p.learning_rate, p.decay_steps, 0.1)))

    def cost(par):
        pred = jnp.exp(par["log_s"]) * Pj @ par["R"].T + par["t"]
        return jnp.mean(jnp.sum((Qj - pred) ** 2, -1))

    @jax.jit
    def run(par):
        def step(carry, _):
            par, state = carry
            c, g = jax.value_and_grad(cost)(par)
            updates, state = opt.update(g, state, par)
            par = so3.apply_updates(par, updates)
            return (par, state), (c, so3.distance(par["R"], jnp.asarray(R_true)))

        (par, _), (costs, errs) = jax.lax.scan(step, (par, opt.init(par)), None, length=p.adam_steps)
        return par, costs, errs

    par0 = {"R": jnp.eye(3), "t": jnp.zeros(3), "log_s": jnp.zeros(())}
    par, costs, errs = run(par0)
    return par, np.asarray(costs), np.asarray(errs)


def _lm(P, Q, R_true, p: Params):
    """so3.fit on the centred points, stopped after 1, 2, ... iterations (max_iter is
    traced: one executable); scale and translation in closed form from the rotation."""
    Pc, Qc = P - P.mean(0), Q - Q.mean(0)
    errs, costs = [], []
    for k in range(1, p.lm_iterations + 1):
        v, info = so3.fit(Pc, Qc, max_iter=k, tol=0.0)
        R = np.asarray(so3.exp(v))
        s = np.sum(Qc * (Pc @ R.T)) / np.sum(Pc * Pc)
        costs.append(float(np.mean(np.sum((Qc - s * Pc @ R.T) ** 2, -1))))
        errs.append(float(so3.distance(jnp.asarray(R), jnp.asarray(R_true))))
    return R, s, np.array(costs), np.array(errs)


def run(p: Params, ctx) -> dict:
    P, Q, R_true = _problem(p)
    t0 = time.perf_counter()
    par, adam_costs, adam_errs = _adam(P, Q, R_true, p)
    t_adam = time.perf_counter() - t0
    t0 = time.perf_counter()
    R_lm, s_lm, lm_costs, lm_errs = _lm(P, Q, R_true, p)
    t_lm = time.perf_counter() - t0
    Rk = np.asarray(so3.kabsch(P - P.mean(0), Q - Q.mean(0)))
    R_adam = np.asarray(par["R"])
    out = {
        "adam": {"steps": p.adam_steps, "seconds_with_compile": t_adam, "final_cost": float(adam_costs[-1]),
                 "rotation_error_rad": float(adam_errs[-1]),
                 "distance_to_kabsch_rad": float(so3.distance(jnp.asarray(R_adam), jnp.asarray(Rk))),
                 "scale": float(np.exp(par["log_s"])), "orthonormality_error": float(np.abs(R_adam.T @ R_adam
                                                                                               - np.eye(3)).max())},
        "lm": {"iterations": p.lm_iterations, "seconds_with_compile": t_lm, "final_cost": float(lm_costs[-1]),
               "rotation_error_rad": float(lm_errs[-1]),
               "distance_to_kabsch_rad": float(so3.distance(jnp.asarray(R_lm), jnp.asarray(Rk))),
               "scale": float(s_lm)},
        "true_scale": p.scale,
    }
    ctx.log.info("adam (%d steps): rotation error %.2e rad, %.2e from Kabsch, scale %.5f; LM (%d iterations): "
                 "%.2e rad, %.2e from Kabsch", p.adam_steps, out["adam"]["rotation_error_rad"],
                 out["adam"]["distance_to_kabsch_rad"], out["adam"]["scale"], p.lm_iterations,
                 out["lm"]["rotation_error_rad"], out["lm"]["distance_to_kabsch_rad"])
    if p.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        axes[0].semilogy(np.arange(1, p.adam_steps + 1), adam_costs, label="riemannian(adam): R, t, s jointly")
        axes[0].semilogy(np.arange(1, p.lm_iterations + 1), lm_costs, "o-", label="so3.fit (LM) on centred points")
        axes[0].axhline(3 * p.noise ** 2, color="0.6", ls=":", label="noise floor (3 sigma^2)")
        axes[0].set(xscale="log", xlabel="iteration", ylabel="mean squared residual", title="cost")
        axes[1].loglog(np.arange(1, p.adam_steps + 1), adam_errs, label="riemannian(adam)")
        axes[1].loglog(np.arange(1, p.lm_iterations + 1), lm_errs, "o-", label="so3.fit (LM)")
        axes[1].set(xlabel="iteration", ylabel="angle to the true rotation (rad)", title="rotation error")
        for ax in axes:
            ax.legend(fontsize=7)
        ctx.save_figure(fig, p.plot_name)
    return out
