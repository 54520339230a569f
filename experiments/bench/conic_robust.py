"""The robust and statistical side of the conic benchmark: batched RANSAC against
scikit-image's ``ransac`` + ``EllipseModel`` loop, circle fits against ``CircleModel``,
and ``conic.covariance`` against Monte Carlo. Called from :mod:`.conic`."""
from __future__ import annotations

import time
import warnings

import jax
import numpy as np

from toolkit import conic

from ._timing import timed


def _arc_sets(rng, n_sets, n_points, noise, arc_deg, outliers=0.0, circle=False):
    """Point sets on arcs of random ellipses (or circles) with Gaussian noise
    ``noise * a`` and a fraction of uniform outliers over the bounding box of the curve."""
    a = rng.uniform(3, 4, n_sets)
    b = a if circle else rng.uniform(1.5, 2.5, n_sets)
    ang = rng.uniform(-np.pi / 2, np.pi / 2, n_sets)
    ctr = rng.normal(size=(n_sets, 2)) * 3
    t = rng.uniform(0, 2 * np.pi, (n_sets, 1)) + np.deg2rad(arc_deg) * rng.uniform(0, 1, (n_sets, n_points))
    x, y = a[:, None] * np.cos(t), b[:, None] * np.sin(t)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    pts = np.stack([ctr[:, :1] + c * x - s * y, ctr[:, 1:] + s * x + c * y], -1)
    pts += rng.normal(size=pts.shape) * noise * a[:, None, None]
    k = int(round(outliers * n_points))
    for i in range(n_sets):
        bad = rng.choice(n_points, k, replace=False)
        pts[i, bad] = ctr[i] + rng.uniform(-1.2, 1.2, (k, 2)) * a[i]
    return pts, ctr, np.stack([a, b], 1), ang


def _success(center, ctr, a):
    """Centre error below 5% of the major semi-axis, per set (NaN counts as failure)."""
    err = np.linalg.norm(np.asarray(center, float) - ctr, axis=-1) / a
    return np.where(np.isfinite(err), err < 0.05, False)


def ransac(p, rng, ctx) -> tuple[dict, tuple]:
    """Batched conic.ransac vs scikit-image ransac + EllipseModel, same trial count."""
    pts, ctr, axes, ang = _arc_sets(rng, p.ransac_sets, p.n_points, p.noise, p.ransac_arc_degrees,
                                    outliers=p.ransac_outliers)
    truth = np.asarray(conic.from_geometry(ctr[0], axes[0], ang[0]))
    thr = p.ransac_threshold
    key = jax.random.key(p.seed)
    fn = lambda x: conic.ransac(key, x, threshold=thr, n_trials=p.ransac_trials)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the trial-count advice: same count as the peer on purpose
        (fit, inliers), t = timed(fn, jax.device_put(pts), repeat=max(1, p.repeat // 4))
    ours = _success(conic.geometry(fit.coeffs).center, ctr, axes[:, 0])
    out = {"sets": p.ransac_sets, "points": p.n_points, "outliers": p.ransac_outliers, "trials": p.ransac_trials,
           "threshold": thr, "ours": {**t, "success_rate": float(ours.mean())}}
    try:
        from skimage.measure import EllipseModel, ransac as sk_ransac
    except ImportError:
        return out, (pts[0], fit.coeffs[0], inliers[0], truth)
    k = min(p.peer_ransac_sets, p.ransac_sets)
    ok = []
    t0 = time.perf_counter()
    for i in ctx.progress(range(k), desc="scikit-image ransac"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = sk_ransac(pts[i], EllipseModel, min_samples=5, residual_threshold=thr,
                                 max_trials=p.ransac_trials, rng=i)
        ok.append(bool(model) and bool(_success(model.center, ctr[i], axes[i, 0])))
    per_set = (time.perf_counter() - t0) / k
    out["skimage"] = {"sets_timed": k, "per_set_s": per_set, "total_s": per_set * p.ransac_sets,
                      "success_rate": float(np.mean(ok))}
    out["ours"]["success_rate_same_sets"] = float(ours[:k].mean())
    out["speedup_vs_skimage"] = per_set * p.ransac_sets / t["best_s"]
    ctx.log.info("ransac on %d sets (%d%% outliers, %d trials): ours %.3fs, success %.1f%%; scikit-image %.1fs "
                 "(extrapolated from %d sets), success %.1f%%: %.0fx", p.ransac_sets, 100 * p.ransac_outliers,
                 p.ransac_trials, t["best_s"], 100 * ours.mean(), out["skimage"]["total_s"], k,
                 100 * out["skimage"]["success_rate"], out["speedup_vs_skimage"])
    return out, (pts[0], fit.coeffs[0], inliers[0], truth)


def circles(p, rng, ctx) -> dict:
    """Median centre error per arc and batched throughput against CircleModel."""
    try:
        from skimage.measure import CircleModel
    except ImportError:
        CircleModel = None
    out: dict = {}
    for arc in ctx.progress(p.circle_arcs_degrees, desc="circle arcs"):
        pts, ctr, _, _ = _arc_sets(rng, p.circle_fits, p.n_points, p.noise, arc, circle=True)
        row: dict = {}
        for spec in p.circle_methods:  # "method" or "method/residual", as in the speed section
            m, _, r = spec.partition("/")
            res, t = timed(lambda x, m=m, r=r or "exact": conic.fit(x, kind="circle", method=m, residual=r),
                           jax.device_put(pts), repeat=p.repeat)
            err = np.linalg.norm(np.asarray(conic.geometry(res.coeffs).center) - ctr, axis=1)
            row[spec] = {"median_center_error": float(np.median(err)), "fits_per_s": p.circle_fits / t["best_s"], **t}
        if CircleModel is not None:
            k = min(p.peer_fits, p.circle_fits)
            t0 = time.perf_counter()
            sk = [CircleModel.from_estimate(x) for x in pts[:k]]
            per_fit = (time.perf_counter() - t0) / k
            sk += [CircleModel.from_estimate(x) for x in pts[k:]]
            err = np.linalg.norm(np.stack([m.center if m else np.full(2, np.nan) for m in sk]) - ctr, axis=1)
            row["skimage"] = {"median_center_error": float(np.nanmedian(err)), "fits_per_s": 1.0 / per_fit}
            for m in p.circle_methods:
                row[m]["throughput_vs_skimage"] = row[m]["fits_per_s"] * per_fit
                row[m]["center_error_ratio_skimage_over_ours"] = (row["skimage"]["median_center_error"]
                                                                  / row[m]["median_center_error"])
        out[f"{arc:g}deg"] = row
        ctx.log.info("circles, %g degrees: median centre error %s", arc,
                     ", ".join(f"{k} {v['median_center_error']:.4f}" for k, v in row.items()))
    return out


def covariance(p, rng, ctx) -> dict:
    """Predicted (KCR) against Monte Carlo standard deviations of geometric ellipse fits."""
    t = np.linspace(0, np.deg2rad(p.covariance_arc_degrees), p.n_points)
    a, b, ang, ctr = 3.0, 1.5, 0.4, np.array([1.0, 2.0])
    x, y = a * np.cos(t), b * np.sin(t)
    P0 = np.stack([ctr[0] + np.cos(ang) * x - np.sin(ang) * y, ctr[1] + np.sin(ang) * x + np.cos(ang) * y], -1)
    sigma = p.noise * a
    P = P0 + sigma * rng.normal(size=(p.covariance_trials,) + P0.shape)
    fits = conic.fit(P, kind="ellipse", method="geometric")
    g = conic.geometry(fits.coeffs)
    pred = conic.covariance(conic.fit(P0, kind="ellipse").coeffs, P0, noise_std=sigma)
    mc = {"center_x": np.std(np.asarray(g.center)[:, 0]), "center_y": np.std(np.asarray(g.center)[:, 1]),
          "semi_axis_a": np.std(np.asarray(g.semi_axes)[:, 0]), "semi_axis_b": np.std(np.asarray(g.semi_axes)[:, 1]),
          "angle": np.std(np.asarray(g.angle))}
    pr = {"center_x": pred.center[0, 0], "center_y": pred.center[1, 1], "semi_axis_a": pred.semi_axes[0, 0],
          "semi_axis_b": pred.semi_axes[1, 1], "angle": pred.angle}
    out = {k: {"monte_carlo_sd": float(mc[k]), "predicted_sd": float(np.sqrt(pr[k])),
               "ratio": float(np.sqrt(pr[k]) / mc[k])} for k in mc}
    ctx.log.info("covariance (%g degree arc, %d trials): predicted / Monte Carlo sd %s", p.covariance_arc_degrees,
                 p.covariance_trials, ", ".join(f"{k} {v['ratio']:.3f}" for k, v in out.items()))
    return out


def plot_ransac(example, p, ctx) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, coeffs, inliers, truth = (np.asarray(v) for v in example)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.plot(*np.asarray(conic.sample(truth, 200)).T, "-", lw=4, color="0.85", label="true ellipse")
    ax.plot(*pts[inliers].T, ".", ms=4, color="tab:blue", label=f"inliers ({inliers.sum()})")
    ax.plot(*pts[~inliers].T, "x", ms=4, color="tab:red", label=f"outliers ({(~inliers).sum()})")
    ax.plot(*np.asarray(conic.sample(coeffs, 200)).T, "-", color="k", lw=1, label="conic.ransac fit")
    ax.set(title=f"conic.ransac: {p.ransac_outliers:.0%} outliers, {p.ransac_trials} trials", aspect="equal",
           xlabel="x", ylabel="y")
    ax.legend(fontsize=7)
    ctx.save_figure(fig, p.ransac_plot_name)
