"""Conic fitting side by side: toolkit.conic vs scikit-image EllipseModel.

(1) throughput on many noisy full ellipses (ours batched, the peer in a loop),
(2) centre / semi-axis accuracy on partial arcs, median over trials,
(3) hyperbola recovery (no peer fits hyperbolas),
(4) batched RANSAC vs scikit-image's ransac loop, (5) circles vs CircleModel,
(6) conic.covariance vs Monte Carlo (the last three in :mod:`.conic_robust`).
"""
from __future__ import annotations

import dataclasses
import time
import warnings

import jax
import numpy as np

from toolkit import conic

from . import conic_robust
from ._timing import timed
from toolkit.runner import output_file


@dataclasses.dataclass(frozen=True)
class Params:
    n_fits: int = 2000
    n_points: int = 100
    noise: float = 0.01  # Gaussian sigma as a fraction of the major semi-axis
    # "method" or "method/residual" (residual mode of conic.fit: exact, sampson, none)
    speed_methods: list[str] = dataclasses.field(
        default_factory=lambda: ["direct", "direct/none", "hyper", "geometric"])
    peer_fits: int = 300  # the loop over the peer is timed on this many fits, per-fit time extrapolated
    arcs_degrees: list[float] = dataclasses.field(default_factory=lambda: [60.0, 90.0, 120.0])
    arc_trials: int = 500
    arc_methods: list[str] = dataclasses.field(default_factory=lambda: ["direct", "hyper", "geometric"])
    hyperbola_trials: int = 500
    repeat: int = 5
    seed: int = 0
    plot: bool = True
    plot_name: str = output_file("conic_arcs.png")
    # RANSAC: sets of n_points on arcs of ransac_arc_degrees, a fraction of uniform outliers;
    # the peer (scikit-image ransac + EllipseModel, same trial count) is timed on peer_ransac_sets
    ransac_sets: int = 200
    ransac_arc_degrees: float = 200.0
    ransac_outliers: float = 0.3
    ransac_trials: int = 100
    ransac_threshold: float = 0.1
    peer_ransac_sets: int = 10
    ransac_plot_name: str = output_file("conic_ransac.png")
    # circles: median centre error per arc, throughput against scikit-image's CircleModel
    circle_arcs_degrees: list[float] = dataclasses.field(default_factory=lambda: [90.0, 180.0, 360.0])
    circle_fits: int = 2000
    circle_methods: list[str] = dataclasses.field(
        default_factory=lambda: ["direct", "direct/none", "hyper", "hyper/none", "geometric"])
    # conic.covariance against the spread of geometric fits over this many noisy copies
    covariance_trials: int = 2000
    covariance_arc_degrees: float = 180.0


def _ellipses(rng, n_fits, n_points, noise, arc_deg=360.0):
    a = rng.uniform(2, 4, n_fits)
    b = rng.uniform(1, 2, n_fits)
    ang = rng.uniform(-np.pi / 2, np.pi / 2, n_fits)
    ctr = rng.normal(size=(n_fits, 2)) * 3
    start = rng.uniform(0, 2 * np.pi, (n_fits, 1))
    t = start + np.deg2rad(arc_deg) * (np.linspace(0, 1, n_points, endpoint=arc_deg < 360)
                                      if arc_deg < 360 else rng.uniform(0, 1, (n_fits, n_points)))
    x, y = a[:, None] * np.cos(t), b[:, None] * np.sin(t)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    pts = np.stack([ctr[:, :1] + c * x - s * y, ctr[:, 1:] + s * x + c * y], -1)
    pts += rng.normal(size=pts.shape) * noise * a[:, None, None]
    return pts, ctr, np.stack([a, b], 1), ang


def _skimage_fit(pts):
    """(centre, sorted semi-axes) from scikit-image, NaN when it fails."""
    from skimage.measure import EllipseModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(EllipseModel, "from_estimate"):
            m = EllipseModel.from_estimate(pts)
            if not m:
                return np.full(2, np.nan), np.full(2, np.nan)
            return np.asarray(m.center, float), np.sort(np.asarray(m.axis_lengths, float))[::-1]
        m = EllipseModel()
        if not m.estimate(pts):
            return np.full(2, np.nan), np.full(2, np.nan)
        xc, yc, a, b, _ = m.params
        return np.array([xc, yc]), np.sort([a, b])[::-1]


def _peer_available() -> bool:
    try:
        import skimage.measure  # noqa: F401
    except ImportError:  # peer is optional ([bench] extra)
        return False
    return True


def _first_call(ctx) -> dict:
    """Seconds to the first result of a small fit (50 points) in this process: tracing and
    compilation of every stage, before any other conic call compiled anything."""
    t = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    pts = np.stack([3 * np.cos(t) + 1, 2 * np.sin(t)], -1)
    out = {}
    for kind in ("ellipse", "hyperbola"):
        t0 = time.perf_counter()
        jax.block_until_ready(conic.fit(pts, kind=kind))
        out[kind] = time.perf_counter() - t0
    ctx.log.info("first call on 50 points: ellipse %.2fs, then hyperbola %.2fs", out["ellipse"], out["hyperbola"])
    return {"first_direct_ellipse_s": out["ellipse"], "then_direct_hyperbola_s": out["hyperbola"]}


def _speed(p: Params, rng, ctx) -> dict:
    pts = _ellipses(rng, p.n_fits, p.n_points, p.noise)[0]
    out: dict = {"n_fits": p.n_fits, "n_points": p.n_points}
    if _peer_available():
        k = min(p.peer_fits, p.n_fits)
        _skimage_fit(pts[0])
        t0 = time.perf_counter()
        for i in ctx.progress(range(k), desc="scikit-image fits"):  # a bar costs microseconds a fit
            _skimage_fit(pts[i])
        per_fit = (time.perf_counter() - t0) / k
        out["skimage_per_fit_s"] = per_fit
        out["skimage_total_s"] = per_fit * p.n_fits
    data = jax.device_put(pts)  # JAX users hold their data as arrays; the peer reads NumPy
    for spec in ctx.progress(p.speed_methods, desc="speed"):
        m, _, residual = spec.partition("/")
        fn = lambda x, m=m, r=residual or "exact": conic.fit(x, kind="ellipse", method=m, residual=r)
        res, t = timed(fn, data, repeat=p.repeat)
        row = dict(t)
        row["fits_per_s"] = p.n_fits / t["best_s"]
        row["all_ok"] = bool(np.all(np.asarray(res.ok)))
        if "skimage_total_s" in out:
            row["speedup_vs_skimage"] = out["skimage_total_s"] / t["best_s"]
        out[spec] = row
        ctx.log.info("speed %s: %d fits in %.4fs (compile+first %.2fs)%s", spec, p.n_fits, t["best_s"],
                     t["first_s"], f", {row['speedup_vs_skimage']:.1f}x scikit-image"
                     if "speedup_vs_skimage" in row else "")
    return out


def _accuracy(p: Params, rng, ctx) -> tuple[dict, dict]:
    out: dict = {}
    examples: dict = {}
    peer = _peer_available()
    for arc in ctx.progress(p.arcs_degrees, desc="arcs"):
        pts, ctr, axes, ang = _ellipses(rng, p.arc_trials, p.n_points, p.noise, arc)
        row: dict = {}
        if peer:
            sk = [_skimage_fit(x) for x in ctx.progress(pts, desc=f"scikit-image, {arc:g} degrees")]
            c_err = np.linalg.norm(np.stack([c for c, _ in sk]) - ctr, axis=1)
            a_err = np.abs(np.stack([a for _, a in sk]) - axes).max(1)
            row["skimage"] = {"median_center_error": float(np.nanmedian(c_err)),
                              "median_axis_error": float(np.nanmedian(a_err)),
                              "failures": int(np.isnan(c_err).sum())}
        for m in p.arc_methods:
            res = conic.fit(pts, kind="ellipse", method=m)
            g = conic.geometry(res.coeffs)
            c_err = np.linalg.norm(np.asarray(g.center) - ctr, axis=1)
            a_err = np.abs(np.asarray(g.semi_axes) - axes).max(1)
            bad = ~np.asarray(res.ok) | ~np.isfinite(c_err)
            row[m] = {"median_center_error": float(np.median(np.where(bad, np.inf, c_err))),
                      "median_axis_error": float(np.median(np.where(bad, np.inf, a_err))),
                      "failures": int(bad.sum())}
            if peer:
                row[m]["center_error_ratio_skimage_over_ours"] = (row["skimage"]["median_center_error"]
                                                                  / row[m]["median_center_error"])
        out[f"{arc:g}deg"] = row
        examples[arc] = pts[0], np.asarray(conic.from_geometry(ctr[0], axes[0], ang[0]))
        ctx.log.info("arc %g deg: median centre error %s", arc,
                     ", ".join(f"{k} {v['median_center_error']:.3f}" for k, v in row.items()))
    return out, examples


def _hyperbolas(p: Params, rng, ctx) -> dict:
    n = p.hyperbola_trials
    a, b = rng.uniform(1, 3, n), rng.uniform(1, 3, n)
    ang, ctr = rng.uniform(-np.pi / 2, np.pi / 2, n), rng.normal(size=(n, 2)) * 3
    truth = np.asarray(conic.from_geometry(ctr, np.stack([a, b], 1), ang, kind="hyperbola"))
    pts = np.asarray(conic.sample(truth, p.n_points, t_max=1.5))
    pts = pts + rng.normal(size=pts.shape) * p.noise * a[:, None, None]
    out: dict = {}
    for m in conic.METHODS:
        res = conic.fit(pts, kind="hyperbola", method=m)
        cosang = np.abs(np.sum(np.asarray(res.coeffs) * truth, 1))
        g = conic.geometry(res.coeffs)
        c_err = np.linalg.norm(np.asarray(g.center) - ctr, axis=1)
        out[m] = {"median_coeff_angle_rad": float(np.median(np.arccos(np.clip(cosang, -1, 1)))),
                  "median_center_error": float(np.median(c_err)),
                  "all_hyperbolas": bool(np.all(np.asarray(res.kind) == conic.HYPERBOLA))}
    ctx.log.info("hyperbolas: median centre error %s",
                 ", ".join(f"{k} {v['median_center_error']:.4f}" for k, v in out.items()))
    return out


def _plot(examples: dict, p: Params, ctx) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(examples), figsize=(4 * len(examples), 3.6), squeeze=False)
    for ax, (arc, (pts, truth)) in zip(axes[0], examples.items()):
        ax.plot(*np.asarray(conic.sample(truth, 200)).T, "-", lw=3, color="0.85", label="true ellipse")
        ax.plot(*pts.T, ".", ms=3, color="0.3", label="data")
        for m, style in (("direct", "--"), ("hyper", ":"), ("geometric", "-")):
            c = conic.fit(pts, kind="ellipse", method=m).coeffs
            ax.plot(*np.asarray(conic.sample(c, 200)).T, style, lw=1, label=m)
        if _peer_available():
            ctr, ab = _skimage_fit(pts)
            if np.all(np.isfinite(ctr)):
                ax.plot(*ctr, "kx", label="scikit-image centre")
        # frame the data: on short arcs a fit may be a huge ellipse that would dwarf it
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.6 * float(np.max(hi - lo))
        ax.set(title=f"{arc:g} degree arc, noise {p.noise:g} a", aspect="equal", xlabel="x", ylabel="y",
               xlim=(lo[0] - pad, hi[0] + pad), ylim=(lo[1] - pad, hi[1] + pad))
        ax.legend(fontsize=6)
    ctx.save_figure(fig, p.plot_name)


def run(p: Params, ctx) -> dict:
    rng = np.random.default_rng(p.seed)
    metrics = {"first_call": _first_call(ctx), "speed": _speed(p, rng, ctx)}
    metrics["arcs"], examples = _accuracy(p, rng, ctx)
    metrics["hyperbolas"] = _hyperbolas(p, rng, ctx)
    metrics["ransac"], ransac_example = conic_robust.ransac(p, rng, ctx)
    metrics["circles"] = conic_robust.circles(p, rng, ctx)
    metrics["covariance"] = conic_robust.covariance(p, rng, ctx)
    if p.plot:
        _plot(examples, p, ctx)
        conic_robust.plot_ransac(ransac_example, p, ctx)
    return metrics
