"""A short tour of every module on small synthetic data (what `make run` runs)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from toolkit.runner import output_file, require


@dataclasses.dataclass(frozen=True)
class So3Part:
    seed: int = 1001
    n_points: int = 100
    noise: float = 0.01
    v_true: tuple[float, float, float] = (0.3, -0.2, 0.1)

    def __post_init__(self):
        require(self, positive=("n_points",), non_negative=("noise",))


@dataclasses.dataclass(frozen=True)
class GmmPart:
    seed: int = 0
    n_points: int = 500
    n_components: int = 4
    reg_covar: float = 1e-6

    def __post_init__(self):
        require(self, positive=("n_points", "n_components"), non_negative=("reg_covar",))


@dataclasses.dataclass(frozen=True)
class ConicPart:
    seed: int = 7
    n_points: int = 60
    noise: float = 0.01
    arc_degrees: float = 120.0

    def __post_init__(self):
        require(self, positive=("n_points", "arc_degrees"), non_negative=("noise",))


@dataclasses.dataclass(frozen=True)
class Params:
    modules: list[str] = dataclasses.field(default_factory=lambda: ["autodiff", "gmm", "conic", "so3"])
    so3: So3Part = dataclasses.field(default_factory=So3Part)
    gmm: GmmPart = dataclasses.field(default_factory=GmmPart)
    conic: ConicPart = dataclasses.field(default_factory=ConicPart)
    plot: bool = True
    plot_name: str = output_file("quickstart.png")


def _autodiff(ctx) -> dict:
    from toolkit import autodiff as ad

    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    g = ad.vjp(lambda x: jnp.outer(x, x), x, cotangent=jnp.ones((4, 4)))  # torch: y.backward(ones)
    d2 = ad.elementwise_grad(lambda a: a ** 3 / 3, order=2)(jnp.array([2.0, 3.0]))

    @jax.custom_vjp
    def colnorm(x):
        return x / jnp.sum(x, axis=0)

    colnorm.defvjp(lambda x: (colnorm(x), (x, jnp.sum(x, 0))),
                   lambda r, g: (g / r[1] - jnp.sum(g * r[0], 0) / r[1] ** 2,))
    rep = ad.gradcheck(colnorm, jnp.ones((3, 2)) + jnp.arange(6.0).reshape(3, 2))
    ctx.log.info("autodiff: vjp(outer, ones) = %s; d2/da2 a^3/3 = %s; gradcheck(custom colnorm) ok=%s",
                 np.asarray(g), np.asarray(d2), rep.ok)
    return {"vjp": g, "second_derivative": d2, "gradcheck_ok": rep.ok, "gradcheck_max_abs_error": rep.max_abs_error}


def _so3(p: So3Part, ctx) -> tuple[dict, dict]:
    from toolkit import so3

    np.random.seed(p.seed)  # the reference case's recipe: legacy seed, p1 first, then the noise
    p1 = np.random.randn(p.n_points, 3)
    v_true = np.asarray(p.v_true)
    p2 = p1 @ np.asarray(so3.exp(v_true)).T + p.noise * np.random.randn(p.n_points, 3)
    v, info = so3.fit(p1, p2, init=np.zeros(3))
    err = float(so3.distance(so3.exp(v), so3.exp(v_true)))
    ctx.log.info("so3: fit v = %s (true %s), error %.2e rad, %d LM iterations, converged=%s",
                 np.round(np.asarray(v), 4), v_true, err, int(info.n_iter), bool(info.converged))
    hist = np.asarray(info.history)[: int(info.n_iter) + 1]
    return {"v": v, "angle_error_rad": err, "n_iter": info.n_iter, "converged": info.converged}, {"history": hist}


def _gmm(p: GmmPart, ctx) -> tuple[dict, dict]:
    from toolkit import gmm

    # Rank-deficient data: a noise-free circle in the plane z = 0 of 3-D space, so every
    # covariance is singular; reg_covar keeps EM finite.
    t = np.linspace(0, 2 * np.pi, p.n_points, endpoint=False)
    X = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)
    g, info = gmm.fit(jax.random.key(p.seed), X, p.n_components, reg_covar=p.reg_covar)
    finite = bool(all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(g)))
    deficient = int(np.sum(np.asarray(info.rank_deficient)))
    ctx.log.info("gmm: %d components on a circle in 3-D (singular covariances): converged=%s after %d iterations, "
                 "lower bound %.3f, all parameters finite=%s, %d component(s) reported rank-deficient",
                 p.n_components, bool(info.converged), int(info.n_iter), float(info.lower_bound), finite, deficient)
    return ({"converged": info.converged, "n_iter": info.n_iter, "lower_bound": info.lower_bound,
             "finite": finite, "rank_deficient_components": deficient}, {"X": X, "gmm": g})


def _conic(p: ConicPart, ctx) -> tuple[dict, dict]:
    from toolkit import conic

    rng = np.random.default_rng(p.seed)
    # a 120-degree arc of an ellipse, and both branches of a hyperbola through the origin
    t = np.deg2rad(np.linspace(0.0, p.arc_degrees, p.n_points))
    ell = np.stack([1 + 3 * np.cos(t), -1 + 1.5 * np.sin(t)], 1) @ np.array([[0.8, 0.6], [-0.6, 0.8]])
    ell = ell + p.noise * 3 * rng.normal(size=ell.shape)
    hyp_true = np.array([1.0, 6.0, -2.0, 3.0, 0.0, 0.0])  # x^2 + 6xy - 2y^2 + 3x = 0
    hyp = np.asarray(conic.sample(hyp_true, p.n_points, t_max=2.5))
    hyp = hyp + p.noise * rng.normal(size=hyp.shape)
    fits = {m: conic.fit(ell, kind="ellipse", method=m) for m in ("direct", "geometric")}
    hfit = conic.fit(hyp, kind="hyperbola", method="geometric")
    cos = abs(float(np.dot(np.asarray(hfit.coeffs), hyp_true / np.linalg.norm(hyp_true))))
    out = {f"ellipse_{m}": {"coeffs": f.coeffs, "residual": f.residual, "ok": f.ok,
                            "geometry": conic.geometry(f.coeffs)._asdict()} for m, f in fits.items()}
    out["hyperbola"] = {"coeffs": hfit.coeffs, "residual": hfit.residual, "ok": hfit.ok,
                        "abs_cos_to_truth": cos}
    g = conic.geometry(fits["geometric"].coeffs)
    ctx.log.info("conic: 120-degree arc -> ellipse centre %s, semi-axes %s (true [1.4, -0.2], [3, 1.5]); "
                 "hyperbola through the origin recovered with |cos| = %.6f", np.round(np.asarray(g.center), 3),
                 np.round(np.asarray(g.semi_axes), 3), cos)
    tt = np.linspace(0.0, 2 * np.pi, 200)
    ell_true = np.stack([1 + 3 * np.cos(tt), -1 + 1.5 * np.sin(tt)], 1) @ np.array([[0.8, 0.6], [-0.6, 0.8]])
    hyp_curve = np.asarray(conic.sample(hyp_true, 200, t_max=2.7))
    return out, {"ell": ell, "hyp": hyp, "fits": fits, "hfit": hfit, "ell_true": ell_true, "hyp_true": hyp_curve}


def _plot_conic(ax, ex):
    from toolkit import conic

    ax.plot(*ex["ell_true"].T, "-", lw=3, color="0.85", label="true ellipse")
    for br, lab in ((ex["hyp_true"][:100], "true hyperbola"), (ex["hyp_true"][100:], None)):
        ax.plot(*br.T, "-", lw=3, color="tab:pink", alpha=0.35, label=lab)
    ax.plot(*ex["ell"].T, ".", ms=3, color="0.4", label="ellipse arc (data)")
    for (m, f), style in zip(ex["fits"].items(), ("--", "-")):
        ax.plot(*np.asarray(conic.sample(f.coeffs, 200)).T, style, lw=1, label=f"ellipse, {m}")
    ax.plot(*ex["hyp"].T, ".", ms=3, color="tab:red", label="hyperbola (data)")
    h = np.asarray(conic.sample(ex["hfit"].coeffs, 200, t_max=2.7))
    for br in (h[:100], h[100:]):
        ax.plot(*br.T, "-", lw=1, color="tab:purple", label="hyperbola, geometric" if br is h[:100] else None)
    ax.set(title="conic.fit: ellipse arc and hyperbola", aspect="equal", xlim=(-6, 6), ylim=(-6, 6), xlabel="x",
           ylabel="y")
    ax.legend(fontsize=6, loc="lower left")


def _plot_gmm(ax, X, g):
    from toolkit import gmm

    xs = np.linspace(-1.5, 1.5, 120)
    gx, gy = np.meshgrid(xs, xs)
    grid = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    lp = np.asarray(gmm.log_prob(g, grid)).reshape(gx.shape)
    ax.contour(gx, gy, np.maximum(lp, lp.max() - 30), levels=12, linewidths=0.7)
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), "-", lw=1, color="0.6", zorder=1, label="true circle (data lie on it)")
    ax.scatter(X[:, 0], X[:, 1], s=6, c=np.asarray(gmm.predict(g, X)), cmap="tab10", zorder=3,
               label="data, by component")
    ax.plot(*np.asarray(g.means)[:, :2].T, "k+", ms=10, label="fitted means")
    ax.set(title="gmm.fit on a circle in 3-D (z = 0 plane)", aspect="equal", xlabel="x", ylabel="y",
           xlim=(-1.6, 1.6), ylim=(-1.6, 1.6))
    ax.legend(fontsize=6, loc="lower left")


def run(p: Params, ctx) -> dict:
    metrics: dict = {}
    extras: dict = {}
    for name in p.modules:
        if name == "autodiff":
            metrics["autodiff"] = _autodiff(ctx)
        elif name == "so3":
            metrics["so3"], extras["so3"] = _so3(p.so3, ctx)
        elif name == "gmm":
            metrics["gmm"], extras["gmm"] = _gmm(p.gmm, ctx)
        elif name == "conic":
            metrics["conic"], extras["conic"] = _conic(p.conic, ctx)
        else:
            raise ValueError(f"quickstart: unknown module {name!r}")
    if p.plot and extras:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(extras), figsize=(4.5 * len(extras), 3.5), squeeze=False)
        for ax, (name, ex) in zip(axes[0], extras.items()):
            if name == "gmm":
                _plot_gmm(ax, ex["X"], ex["gmm"])
            elif name == "conic":
                _plot_conic(ax, ex)
            elif name == "so3":
                ax.semilogy(ex["history"], "o-", label="cost after each iteration")
                ax.set(title="so3.fit: Levenberg-Marquardt cost", xlabel="iteration", ylabel="cost")
                ax.legend(fontsize=6)
        ctx.save_figure(fig, p.plot_name)
    return metrics
