"""so(3) side by side: toolkit.so3 vs scipy Rotation vs jaxlie (speed and precision), and batched fitting."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from toolkit import so3

from ._timing import timed

REGIMES = {"0": 0.0, "1e-12": 1e-12, "1e-8": 1e-8, "1e-4": 1e-4, "1": 1.0, "3": 3.0,
           "pi-1e-6": np.pi - 1e-6, "pi-1e-10": np.pi - 1e-10, "pi": np.pi}


@dataclasses.dataclass(frozen=True)
class Params:
    n: int = 1_000_000
    dtypes: list[str] = dataclasses.field(default_factory=lambda: ["float64", "float32"])
    repeat: int = 5
    precision_n: int = 2000
    fit_problems: int = 10_000
    fit_points: int = 100
    scipy_fit_problems: int = 200
    seed: int = 0


def _jaxlie():
    try:
        import jaxlie
    except ImportError:  # peer is optional ([bench] extra)
        return None
    return jaxlie


def _rotvecs(rng, n, dtype, angle=None):
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    ang = rng.uniform(0, np.pi, size=(n, 1)) if angle is None else np.full((n, 1), angle)
    return (axes * ang).astype(dtype)


def _round_trip_error(v, v2, angle):
    e = np.abs(v2 - v).max(-1)
    if angle >= np.pi - 1e-6:  # antipodal vectors are the same rotation at (or past, in float32) pi
        e = np.minimum(e, np.abs(v2 + v).max(-1))
    return float(e.max())


def run(p: Params, ctx) -> dict:
    from scipy.spatial.transform import Rotation

    jaxlie = _jaxlie()
    rng = np.random.default_rng(p.seed)
    out: dict = {"n": p.n, "speed": {}, "precision": {}}
    ours_exp, ours_log = jax.jit(so3.exp), jax.jit(so3.log)
    ours_quat = jax.jit(lambda R: so3.from_quaternion(so3.to_quaternion(R)))
    if jaxlie is not None:
        lie_exp = jax.jit(jax.vmap(lambda v: jaxlie.SO3.exp(v).as_matrix()))
        lie_log = jax.jit(jax.vmap(lambda R: jaxlie.SO3.from_matrix(R).log()))
        lie_quat = jax.jit(jax.vmap(lambda R: jaxlie.SO3(jaxlie.SO3.from_matrix(R).wxyz).as_matrix()))
    for dt in ctx.progress(p.dtypes, desc="so3 dtypes"):
        v = _rotvecs(rng, p.n, dt)
        R = np.asarray(so3.exp(v))
        res: dict = {}
        _, res["ours_exp"] = timed(ours_exp, v, repeat=p.repeat)
        _, res["ours_log"] = timed(ours_log, R, repeat=p.repeat)
        _, res["ours_quat_round_trip"] = timed(ours_quat, R, repeat=p.repeat)
        v64, R64 = v.astype(np.float64), R.astype(np.float64)
        _, res["scipy_exp"] = timed(lambda x: Rotation.from_rotvec(x).as_matrix(), v64, repeat=p.repeat)
        _, res["scipy_log"] = timed(lambda x: Rotation.from_matrix(x).as_rotvec(), R64, repeat=p.repeat)
        _, res["scipy_quat_round_trip"] = timed(
            lambda x: Rotation.from_quat(Rotation.from_matrix(x).as_quat()).as_matrix(), R64, repeat=p.repeat)
        if jaxlie is not None:
            _, res["jaxlie_exp"] = timed(lie_exp, v, repeat=p.repeat)
            _, res["jaxlie_log"] = timed(lie_log, R, repeat=p.repeat)
            _, res["jaxlie_quat_round_trip"] = timed(lie_quat, R, repeat=p.repeat)
        for op in ("exp", "log", "quat_round_trip"):
            for peer in ("scipy", "jaxlie"):
                if f"{peer}_{op}" in res:
                    res[f"speedup_{op}_vs_{peer}"] = res[f"{peer}_{op}"]["best_s"] / res[f"ours_{op}"]["best_s"]
        out["speed"][dt] = res
        ctx.log.info("%s: exp %.3fs (scipy %.3fs, jaxlie %s), log %.3fs (scipy %.3fs, jaxlie %s)", dt,
                     res["ours_exp"]["best_s"], res["scipy_exp"]["best_s"],
                     f"{res['jaxlie_exp']['best_s']:.3f}s" if jaxlie else "n/a", res["ours_log"]["best_s"],
                     res["scipy_log"]["best_s"], f"{res['jaxlie_log']['best_s']:.3f}s" if jaxlie else "n/a")
        prec: dict = {}
        for name, ang in REGIMES.items():
            vv = _rotvecs(rng, p.precision_n, dt, ang)
            row = {"ours": _round_trip_error(vv, np.asarray(ours_log(ours_exp(vv))), ang)}
            vv64 = vv.astype(np.float64)
            row["scipy"] = _round_trip_error(vv64, Rotation.from_rotvec(vv64).as_rotvec(), ang)
            if jaxlie is not None:
                got = np.asarray(lie_log(lie_exp(vv)))
                row["jaxlie"] = _round_trip_error(vv, got, ang)
                row["jaxlie_angle"] = float(np.linalg.norm(got[0].astype(np.float64)))
            row["ours_angle"] = float(np.linalg.norm(np.asarray(ours_log(ours_exp(vv[:1])))[0].astype(np.float64)))
            prec[name] = row
        out["precision"][dt] = prec
        out["precision"][f"{dt}_worst_ours"] = max(r["ours"] for r in prec.values())
    out["fit"] = _bench_fit(p, rng, ctx)
    out["rotation"] = _bench_rotation(p, rng, ctx)
    return out


def _bench_rotation(p: Params, rng, ctx) -> dict:
    """so3.Rotation / Slerp against scipy's on the same 1e6 inputs (float64): JAX arrays
    in (the jitted path), and numpy in, numpy out (scipy's own contract, eager)."""
    import jax.numpy as jnp
    from scipy.spatial.transform import Rotation as SR
    from scipy.spatial.transform import Slerp as SSlerp

    from toolkit.so3 import Rotation, Slerp

    n = p.n
    angles = rng.uniform(-np.pi, np.pi, size=(n, 3))
    quats = rng.normal(size=(n, 4))
    keys = rng.normal(size=(101, 4))
    key_times = np.linspace(0.0, 100.0, 101)
    times = np.sort(rng.uniform(0.0, 100.0, size=n))
    slerp_jax = Slerp(jnp.asarray(key_times), Rotation.from_quat(jnp.asarray(keys)))
    slerp_np, slerp_sp = Slerp(key_times, Rotation.from_quat(keys)), SSlerp(key_times, SR.from_quat(keys))
    cases = {
        "from_euler_as_quat": (jax.jit(lambda a: Rotation.from_euler("xyz", a).as_quat()),
                               lambda a: Rotation.from_euler("xyz", a).as_quat(),
                               lambda a: SR.from_euler("xyz", a).as_quat(), angles),
        "from_quat_as_rotvec": (jax.jit(lambda q: Rotation.from_quat(q).as_rotvec()),
                                lambda q: Rotation.from_quat(q).as_rotvec(),
                                lambda q: SR.from_quat(q).as_rotvec(), quats),
        "slerp": (jax.jit(lambda t: slerp_jax(t).as_quat()), lambda t: slerp_np(t).as_quat(),
                  lambda t: slerp_sp(t).as_quat(), times),
    }
    res: dict = {}
    for name, (ours_jit, ours_np, peer, x) in ctx.progress(cases.items(), desc="Rotation conversions"):
        with jax.enable_x64(True):
            xj = jnp.asarray(x)
            got_jit, t_jit = timed(ours_jit, xj, repeat=p.repeat)
        got_np, t_np = timed(ours_np, x, repeat=p.repeat)
        want, t_peer = timed(peer, x, repeat=p.repeat)
        err = max(float(np.abs(np.asarray(got_jit) - want).max()), float(np.abs(got_np - want).max()))
        res[name] = {"ours_jit": t_jit, "ours_numpy": t_np, "scipy": t_peer, "max_abs_diff_vs_scipy": err,
                     "speedup_jit_vs_scipy": t_peer["best_s"] / t_jit["best_s"],
                     "speedup_numpy_vs_scipy": t_peer["best_s"] / t_np["best_s"]}
        ctx.log.info("Rotation %s on %d: jit %.3fs (compile+run %.2fs), numpy in/out %.3fs, scipy %.3fs -> %.1fx / "
                     "%.1fx; max diff %.1e", name, n, t_jit["best_s"], t_jit["first_s"], t_np["best_s"],
                     t_peer["best_s"], res[name]["speedup_jit_vs_scipy"], res[name]["speedup_numpy_vs_scipy"], err)
    return res


def _bench_fit(p: Params, rng, ctx) -> dict:
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    v_true = _rotvecs(rng, p.fit_problems, np.float64)
    P = rng.normal(size=(p.fit_problems, p.fit_points, 3))
    Q = np.einsum("bij,bnj->bni", np.asarray(so3.exp(v_true)), P) + 0.01 * rng.normal(size=P.shape)
    init = np.zeros((p.fit_problems, 3))  # same start as scipy: identity
    fit = jax.jit(lambda P, Q, v0: so3.fit(P, Q, init=v0))
    (v, info), t = timed(fit, P, Q, init, repeat=3)
    k = p.scipy_fit_problems

    def scipy_loop():
        res = []
        for i in ctx.progress(range(k), desc="scipy least_squares fits"):
            f = lambda x, i=i: (Rotation.from_rotvec(x).apply(P[i]) - Q[i]).ravel()  # noqa: E731
            res.append(least_squares(f, np.zeros(3), method="lm").x)
        return np.array(res)

    vs, ts = timed(scipy_loop, repeat=1)
    per_ours = t["best_s"] / p.fit_problems
    per_scipy = ts["best_s"] / k
    agree = float(np.abs(np.asarray(v)[:k] - vs).max())
    ctx.log.info("fit: %d problems in %.3fs (%.1f us each); scipy least_squares %.0f us each -> %.0fx",
                 p.fit_problems, t["best_s"], 1e6 * per_ours, 1e6 * per_scipy, per_scipy / per_ours)
    return {"problems": p.fit_problems, "points": p.fit_points, "ours": t, "scipy_per_problem_s": per_scipy,
            "ours_per_problem_s": per_ours, "speedup_vs_scipy": per_scipy / per_ours,
            "max_abs_diff_vs_scipy": agree, "all_converged": bool(np.all(info.converged))}
