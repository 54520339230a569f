"""``ransac``: robust conic and circle fitting, every hypothesis of every point set at once.

One jitted call draws ``n_trials`` minimal samples (5 points, 3 for circles), solves
each in closed form -- for ``kind="any"`` the conic through 5 points as the member of
the pencil of two line pairs through 4 of them that passes through the fifth; for an
ellipse or hyperbola the direct constrained fit to the 5 points (the same conic when
it has the kind; otherwise still the best one of the kind, where the interpolating
conic would be discarded: on noisy arcs that doubles the usable samples); the circle
through 3 points by cofactors -- and scores every hypothesis against every point of its set
(Sampson distances for conics, exact ones for circles). The 16 best of each set are
refitted algebraically to their own inliers and scored again (Chum et al.'s LO-RANSAC:
a hypothesis from 5 noisy points of an arc is biased). The winner's inliers are then
refitted with :func:`~toolkit.conic.fit` (``refine``), twice: the inliers of the second
refit's conic are the ones returned.
"""
from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from .._buckets import should_pad
from .._checks import as_float_array, as_scalar, check_choice, check_finite, check_trailing, is_concrete
from .._xla import tuned_jit as _jit
from .curves import _residuals
from .distance import _distances, _sampson
from .fitting import _LIGHT_MAX, _pad_host, _staged_fit
from .geometric import _kind_ok
from .kinds import (ELLIPSE, HYPERBOLA, _FIT_KINDS, _MIN_CIRCLE_POINTS, _MIN_POINTS, ConicFit, _canonical_sign,
                    _classify, _rtol, _unit)
from .linalg3 import _det3
from .circle import _circle_distance, _circle_from_moments
from .methods import CIRCLE_METHODS, METHODS, _direct, _spread
from .moments import _denormalise, _normalised, _stats

SCORINGS = ("ransac", "msac", "mlesac")
_REFITS = 2
_LOCAL = 16  # hypotheses per set given a local optimisation


def _distinct_samples(key, n, m, trials):
    """``(trials, m)`` int32: m distinct indices in ``[0, n)`` per trial (Floyd's
    algorithm, vectorised over trials; ``n`` may be traced)."""
    chosen = []
    for j, k in enumerate(jax.random.split(key, m)):
        hi = n - m + j + 1
        r = jax.random.randint(k, (trials,), 0, hi, dtype=jnp.int32)
        taken = jnp.zeros((trials,), bool)
        for c in chosen:
            taken = taken | (c == r)
        chosen.append(jnp.where(taken, hi - 1, r))
    return jnp.stack(chosen, axis=-1)


def _line(xa, ya, xb, yb):
    """Homogeneous line through two points: ``(l1, l2, l3)`` with l . (x, y, 1) = 0."""
    return ya - yb, xb - xa, xa * yb - xb * ya


def _pair(l, k):
    """Coefficients ``(..., 6)`` of the degenerate conic (l . p)(k . p)."""
    return jnp.stack([l[0] * k[0], l[0] * k[1] + l[1] * k[0], l[1] * k[1],
                      l[0] * k[2] + l[2] * k[0], l[1] * k[2] + l[2] * k[1], l[2] * k[2]], axis=-1)


def _conic_through_5(x, y):
    """The conic through 5 points ``x, y (..., 5)`` -> ``(..., 6)``: of the pencil
    spanned by the line pairs (12)(34) and (13)(24), the member through point 5."""
    p = [(x[..., i], y[..., i]) for i in range(5)]
    l12, l34, l13, l24 = _line(*p[0], *p[1]), _line(*p[2], *p[3]), _line(*p[0], *p[2]), _line(*p[1], *p[3])
    at5 = lambda l: l[0] * p[4][0] + l[1] * p[4][1] + l[2]  # noqa: E731
    v1, v2 = at5(l12) * at5(l34), at5(l13) * at5(l24)
    return _unit(v2[..., None] * _pair(l12, l34) - v1[..., None] * _pair(l13, l24))


def _constrained_through_5(x, y, kind):
    """The best ellipse (or hyperbola) for 5 points ``x, y (..., 5)`` -> ``(..., 6)``:
    the direct constrained fit, closed form. Where the conic through the points is of
    that kind it is that conic; elsewhere (a noisy sample of an ellipse can span a
    hyperbola) it is still a usable hypothesis, as scikit-image's EllipseModel gives."""
    st = _stats(jnp.stack([x, y], axis=-1), None)
    theta, ok = _direct(st.mom, kind)
    theta = _unit(_denormalise(theta, st.mean, st.scale))
    return jnp.where(ok[..., None], theta, jnp.nan)


def _circle_through_3(x, y):
    """The circle through 3 points ``x, y (..., 3)`` -> conic coefficients ``(..., 6)``:
    the null vector of the rows ``[x^2 + y^2, x, y, 1]`` by cofactors."""
    rows = [[x[..., i] ** 2 + y[..., i] ** 2, x[..., i], y[..., i], jnp.ones_like(x[..., i])] for i in range(3)]
    minor = lambda skip: _det3([[r[j] for j in range(4) if j != skip] for r in rows])  # noqa: E731
    A, D, E, F = minor(0), -minor(1), minor(2), -minor(3)
    return _unit(jnp.stack([A, jnp.zeros_like(A), A, D, E, F], axis=-1))


def _score(d, mask, thr, scoring, extent):
    """Score of hypotheses from distances ``d (B, T, N)`` (higher is better)."""
    inside = (jnp.abs(d) < thr) & mask
    if scoring == "ransac":
        return jnp.sum(inside, axis=-1).astype(d.dtype)
    d2 = jnp.where(mask, jnp.minimum(d * d, thr * thr), 0.0)
    if scoring == "msac":
        return -jnp.sum(d2, axis=-1)
    # MLESAC (Torr & Zisserman 2000): inliers N(0, sigma^2) with threshold = 1.96 sigma,
    # outliers uniform over the set's extent; the inlier fraction by a few EM steps.
    sigma = thr / 1.96
    p_in = jnp.exp(-0.5 * d * d / sigma ** 2) / (math.sqrt(2 * math.pi) * sigma)
    p_out = 1.0 / extent[:, None, None]
    n = jnp.sum(mask, axis=-1, keepdims=True)
    gamma = jnp.full(d.shape[:-1] + (1,), 0.5, d.dtype)
    for _ in range(5):
        a = gamma * p_in
        gamma = jnp.sum(jnp.where(mask, a / (a + (1 - gamma) * p_out), 0.0), axis=-1, keepdims=True) / n
    return jnp.sum(jnp.where(mask, jnp.log(gamma * p_in + (1 - gamma) * p_out), 0.0), axis=-1)


@_jit(static_argnames=("kind", "trials", "scoring"))
def _hypotheses(key, points, mask, n, thr, *, kind, trials, scoring):
    """Draw, solve and score ``trials`` minimal samples per point set.

    points ``(B, N, 2)``, mask ``(B, N)`` (1 for real points, the first ``n`` of each
    set). Returns ``(theta (B, 6) in the normalised frame of the whole set, stats,
    found (B,) bool: some hypothesis of the requested kind, spread (B,) bool: the
    points are not all on one line)``.
    """
    m = _MIN_CIRCLE_POINTS if kind == "circle" else _MIN_POINTS
    st = _stats(points, mask)
    x, y, _ = _normalised(points, mask, st)
    idx = _distinct_samples(key, n, m, trials)  # the same draws for every set: batched == looped
    xs, ys = x[:, idx], y[:, idx]  # (B, T, m)
    rtol = _rtol(points.dtype)
    if kind == "circle":
        theta = _circle_through_3(xs, ys)
    elif kind == "any":
        theta = _conic_through_5(xs, ys)
    else:
        theta = _constrained_through_5(xs, ys, kind)
    d, good = _screen(theta, x, y, kind, rtol)
    d = d / st.scale[:, None, None]  # data units
    lo, hi = jnp.min(jnp.where(mask[..., None] > 0, points, jnp.inf), axis=1), jnp.max(
        jnp.where(mask[..., None] > 0, points, -jnp.inf), axis=1)
    extent = jnp.maximum(jnp.prod(hi - lo, axis=-1), jnp.finfo(points.dtype).tiny)  # area of the bounding box
    inside = mask[:, None, :] > 0
    score = jnp.where(good, _score(d, inside, thr, scoring, extent), -jnp.inf)
    # Local optimisation (Chum et al.'s LO-RANSAC) of the best few: each refitted
    # (algebraically) to its inliers and scored again. A hypothesis from 5 noisy points
    # of an arc is biased, and the best raw score is often not the best after a refit.
    top = min(_LOCAL, trials)
    score, pick = lax.top_k(score, top)
    theta = jnp.take_along_axis(theta, pick[..., None], axis=1)  # (B, K, 6)
    d = jnp.take_along_axis(d, pick[..., None], axis=1)
    w = ((jnp.abs(d) < thr) & inside).astype(points.dtype)
    refit = _refit_algebraic(jnp.stack([x, y], axis=-1), w, kind)
    d2, ok2 = _screen(refit, x, y, kind, rtol)
    ok2 = ok2 & (jnp.sum(w, axis=-1) >= m) & jnp.isfinite(score)
    score2 = jnp.where(ok2, _score(d2 / st.scale[:, None, None], inside, thr, scoring, extent), -jnp.inf)
    use = score2 > score
    theta = jnp.where(use[..., None], refit, theta)
    best = jnp.argmax(jnp.maximum(score, score2), axis=-1)
    theta = jnp.take_along_axis(theta, best[:, None, None], axis=1)[:, 0]
    return theta, st, jnp.any(good, axis=-1), _spread(st.mom)


def _screen(theta, x, y, kind, rtol):
    """Distances ``(B, T, N)`` (normalised frame) of points ``x, y (B, N)`` to hypotheses
    ``theta (B, T, 6)`` -- exact for circles, Sampson's for conics -- and ``(B, T)``
    whether each hypothesis is a finite conic of the requested kind."""
    finite = jnp.all(jnp.isfinite(theta), axis=-1)
    if kind == "circle":
        return _circle_distance(theta, x[:, None, :], y[:, None, :]), finite & (theta[..., 0] != 0)
    return _sampson(theta, x[:, None, :], y[:, None, :]), finite & _kind_ok(_classify(theta, rtol), kind)


def _refit_algebraic(q, w, kind):
    """Algebraic refits of normalised points ``q (B, N, 2)`` with weights ``w (B, K, N)``:
    ``(B, K, 6)`` in the same frame (the direct fit; hyper for circles)."""
    B, K, N = w.shape
    pts = jnp.broadcast_to(q[:, None], (B, K, N, 2)).reshape((B * K, N, 2))
    st = _stats(pts, w.reshape((B * K, N)))
    if kind == "circle":
        theta, _ = _circle_from_moments(st.mom, "hyper")
    else:
        theta, _ = _direct(st.mom, kind)
    return _unit(_denormalise(theta, st.mean, st.scale)).reshape((B, K, 6))


@_jit(static_argnames="kind")
def _best_fit(theta, points, mask, st, thr, found, want, *, kind):
    """The best hypotheses ``theta (B, 6)`` (normalised frame of ``st``) as a
    :class:`ConicFit` in data coordinates, and their inliers ``(B, N)`` by exact
    orthogonal distance; ``residual`` is the RMS distance of the inliers."""
    x, y, _ = _normalised(points, mask, st)
    rtol = _rtol(theta.dtype)
    d = _circle_distance(theta, x, y) if kind == "circle" else _distances(theta, x, y, rtol)
    d = jnp.abs(d / st.scale[:, None])
    inliers = (d < thr) & (mask > 0)
    cnt = jnp.sum(inliers, axis=-1)
    res = jnp.sqrt(jnp.sum(jnp.where(inliers, d * d, 0.0), axis=-1) / jnp.maximum(cnt, 1))
    coeffs = _canonical_sign(_denormalise(theta, st.mean, st.scale))
    code = _classify(theta, rtol)
    right = jnp.where((want == 1) | (want == 3), code == ELLIPSE, _kind_ok(code, "any"))
    right = jnp.where(want == 2, code == HYPERBOLA, right)
    return ConicFit(coeffs, code, res, found & right), inliers


@jax.jit
def _parked(points, w):
    """Points ``(B, N, 2)`` with those of zero weight moved onto the first point of
    positive weight: the refit ignores them anyway, and far outliers would cost its
    closest-point searches many iterations (10x the time of the fit on 30% outliers)."""
    first = jnp.argmax(w > 0, axis=-1)
    anchor = jnp.take_along_axis(points, first[:, None, None], axis=1)
    return jnp.where((w > 0)[..., None], points, anchor)


@jax.jit
def _inliers_of_fit(coeffs, points, mask, thr):
    """Inliers ``(B, N)`` of fitted conics ``coeffs (B, 6)`` (data coordinates)."""
    return (jnp.abs(_residuals(coeffs, points, mask, "geometric")) < thr) & (mask > 0)


def _warn_if_too_few_trials(count, spread, n, m, trials, confidence, batch, where):
    """Warn when ``trials`` minimal samples fall short of ``confidence`` at the lowest
    inlier ratio found among the point sets not all on one line (more trials would not
    help those); Hartley & Zisserman, eq. 4.18."""
    if not np.any(spread):
        return
    i = int(np.argmin(np.where(spread, count, n + 1)))
    w = count[i] / n
    good = w ** m
    need = 1 if good >= 1 else (math.inf if good == 0 else math.ceil(math.log(1 - confidence) / math.log1p(-good)))
    if trials < need:
        at = f" (point set {tuple(int(j) for j in np.unravel_index(i, batch))})" if batch else ""
        warnings.warn(f"{where}: n_trials={trials} is too few for confidence={confidence} at the lowest inlier "
                      f"ratio found, {w:.2f}{at}: {need} trials are needed", RuntimeWarning, stacklevel=3)


def _unpad(out, inliers, nb, n, batch):
    """The first ``nb`` sets and ``n`` points, with the caller's batch shape."""
    if out.ok.shape == batch and inliers.shape == batch + (n,):
        return out, inliers
    out = ConicFit(*(x[:nb].reshape(batch + x.shape[1:]) for x in out))
    return out, inliers[:nb, :n].reshape(batch + (n,))


def ransac(key: jax.Array, points: ArrayLike, *, kind: str = "ellipse", threshold: float, n_trials: int = 500,
           min_inliers: int | None = None, refine: str | None = "geometric", scoring: str = "msac",
           confidence: float = 0.99, max_iter: int = 50, tol: float = 1e-10) -> tuple[ConicFit, jax.Array]:
    """Robust fit of a conic (or circle) to each point set, batched over leading axes.

    Args:
      key: a ``jax.random`` key. The result is a function of it: every point set draws
        the same trial indices (so a batched call equals the looped one).
      points: ``(..., N, 2)``; N >= 5 (>= 3 for circles).
      kind: "ellipse", "hyperbola", "any" or "circle": hypotheses of another kind are
        discarded.
      threshold: inlier distance, in data units (> 0).
      n_trials: minimal samples per point set.
      min_inliers: the fewest inliers a fit may have (default: the minimal sample);
        fewer gives ``ok = False``.
      refine: the :func:`fit` method for the refits on the inliers, or None to return
        the best hypothesis itself.
      scoring: "msac" (truncated squared distances; the default), "ransac" (inlier
        count) or "mlesac" (likelihood of an inlier Gaussian with sigma = threshold /
        1.96 and uniform outliers, Torr & Zisserman). On 200-degree arcs with 30%
        outliers and 1000 trials MSAC found the centre within 5% in 93% of sets,
        RANSAC and MLESAC in 78%: a count cannot tell an ellipse through the arc from
        one that also bends through an outlier or two in the unobserved part.
      confidence: the probability of drawing one all-inlier sample that ``n_trials`` is
        checked against (concrete input only): a warning gives the number needed at
        the lowest inlier ratio found.
      max_iter, tol: of the "geometric" refits.

    Returns:
      ``(ConicFit, inliers (..., N) bool)``: the refitted conic (``residual`` is the RMS
      orthogonal distance of the inliers) and the inliers of the returned conic.
      ``ok`` is False where no hypothesis had the requested kind (collinear or
      identical points) or the inliers number fewer than ``min_inliers``.

    Raises:
      ValueError: fewer points than the minimal sample, ``threshold <= 0``, a bad
        ``n_trials``/``min_inliers``/``confidence``, unknown kind/refine/scoring,
        NaN/inf points (concrete input).

    Example:
      >>> t = jnp.linspace(0, 2 * jnp.pi, 40, endpoint=False)
      >>> pts = jnp.stack([3 * jnp.cos(t) + 1, 2 * jnp.sin(t)], -1).at[::5].set(7.0)  # 8 outliers
      >>> fit, inliers = ransac(jax.random.key(0), pts, threshold=0.01)
      >>> from toolkit import conic
      >>> conic.geometry(fit.coeffs).semi_axes.round(6).tolist(), int(inliers.sum())
      ([3.0, 2.0], 32)
    """
    where = "conic.ransac"
    check_choice(kind, _FIT_KINDS, "kind", where)
    check_choice(scoring, SCORINGS, "scoring", where)
    circle = kind == "circle"
    if refine is not None:
        check_choice(refine, CIRCLE_METHODS if circle else METHODS, "refine", where)
    m = _MIN_CIRCLE_POINTS if circle else _MIN_POINTS
    pts = as_float_array(points, "points", where)
    check_trailing(pts, (None, 2), "points", where)
    n = pts.shape[-2]
    if n < m:
        raise ValueError(f"{where}: argument 'points' needs at least {m} points per set (the minimal sample of "
                         f"kind={kind!r}), got {n}")
    if not isinstance(n_trials, (int, np.integer)) or isinstance(n_trials, bool) or n_trials < 1:
        raise ValueError(f"{where}: n_trials must be a positive int, got {n_trials!r}")
    if min_inliers is None:
        min_inliers = m
    if not isinstance(min_inliers, (int, np.integer)) or not m <= min_inliers <= n:
        raise ValueError(f"{where}: min_inliers must be an int in [{m}, {n}], got {min_inliers!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"{where}: confidence must be in (0, 1), got {confidence!r}")
    if is_concrete(threshold) and not float(np.asarray(threshold)) > 0:
        raise ValueError(f"{where}: threshold must be positive, got {threshold!r}")
    concrete = is_concrete(pts)
    if concrete:
        check_finite(pts, "points", where)
    batch = pts.shape[:-2]
    nb = int(np.prod(batch, dtype=np.int64))
    if should_pad(pts):  # size buckets: extra points have zero weight, extra sets copy the last
        flat, mask = _pad_host(pts, None, nb, n)
    else:
        flat, mask = pts.reshape((nb, n, 2)), jnp.ones((nb, n), pts.dtype)
    thr = as_scalar(threshold, pts.dtype)
    light = flat.shape[0] * flat.shape[1] <= _LIGHT_MAX
    theta, st, found, spread = _hypotheses(key, flat, mask, np.int32(n), thr, kind=kind, trials=int(n_trials),
                                   scoring=scoring, light_compile=light)
    want = np.int32(_FIT_KINDS.index(kind))
    out, inliers = _best_fit(theta, flat, mask, st, thr, found, want, kind=kind, light_compile=light)
    if refine is not None:
        for _ in range(_REFITS):
            enough = jnp.sum(inliers, axis=-1) >= m
            w = jnp.where(enough[:, None], inliers, mask > 0).astype(flat.dtype)
            out, _, _ = _staged_fit(_parked(flat, w), w, kind=kind, method=refine, max_iter=max_iter,
                                    tol=as_scalar(tol, pts.dtype), residual="exact", screen_few=True)
            inliers = _inliers_of_fit(out.coeffs, flat, mask, thr)
    count = jnp.sum(inliers, axis=-1)
    out = out._replace(ok=out.ok & found & (count >= min_inliers))
    out, inliers = _unpad(out, inliers, nb, n, batch)
    if concrete:
        _warn_if_too_few_trials(np.asarray(count)[:nb], np.asarray(spread)[:nb], n, m, int(n_trials),
                                confidence, batch, where)
    return out, inliers
