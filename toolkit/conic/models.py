"""``EllipseModel`` and ``CircleModel``: drop-ins for scikit-image 0.26's classes.

They keep scikit-image's conventions where they differ from :func:`fit`'s:
``axis_lengths`` are the semi-axes ``(a, b)`` with ``a >= b``, ``theta`` is the angle of
the first axis in ``[0, pi)`` (``float(pi)`` included: it is below pi; within 1e-12
of the wrap the side is :mod:`toolkit.conic.wrap`'s convention), a circle's
``residuals`` are ``radius - distance`` (positive inside) and an ellipse's are unsigned distances. They keep its API
generation too: ``from_estimate`` (a classmethod returning a model, or a falsy
:class:`FailedEstimation` that says why), the deprecated ``estimate`` and ``params``
with scikit-image's warnings, and the protocol ``skimage.measure.ransac`` needs::

    model, inliers = skimage.measure.ransac(points, conic.EllipseModel, min_samples=5,
                                            residual_threshold=1.0)

Estimation runs :func:`~toolkit.conic.fit` in float64 (whatever JAX's x64 setting)
on data shifted to its mean and scaled by its standard deviation, so data far from
the origin or at any scale keeps full precision. ``method`` picks the fitter: the
default ``"direct"`` computes what scikit-image computes (Halir-Flusser for ellipses,
Kasa's fit for circles), to round-off; ``"geometric"`` minimises orthogonal
distances, which is what both classes' documentation promises ("total least
squares"), and is the more accurate on noisy arcs. Ellipse residuals are exact
orthogonal distances computed in one jitted call (scikit-image solves one least-squares
problem per point).

Every result is numpy (float64), as scikit-image's.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._checks import scoped_x64
from .wrap import near_wrap, on_side, wrap_side

_SINCE, _UNTIL = "0.26", "2.2"


class FailedEstimationAccessError(AttributeError):
    """Raised when a :class:`FailedEstimation` is used as if it were a model."""


class FailedEstimation:
    """What ``from_estimate`` returns when the data determine no model: falsy, and its
    ``str`` is the reason. Using it as a model raises :class:`FailedEstimationAccessError`.

    >>> bad = CircleModel.from_estimate(np.ones((4, 2)))
    >>> bool(bad), str(bad)
    (False, 'CircleModel: Standard deviation of data is too small to estimate circle with meaningful precision.')
    """

    def __init__(self, message: str):
        self.message = message

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise FailedEstimationAccessError(f"{type(self).__name__} has no attribute {name!r}: {self.message}. "
                                          "Test the result of from_estimate for truth before using it.")

    def __call__(self, *args, **kwargs):
        raise FailedEstimationAccessError(f"{type(self).__name__} is not callable: {self.message}")


class _Failure(Exception):
    """An estimation failure. ``warn``: scikit-image's deprecated ``estimate`` reports
    it as a RuntimeWarning and still returns True (kept for compatibility)."""

    def __init__(self, message, *, warn):
        super().__init__(message)
        self.warn = warn


_DEPRECATED = object()  # the default of the deprecated ``params`` argument


def _points(data):
    """``data`` as a float64 ``(N, 2)`` array; ValueError naming the expected shape."""
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"Input data must have shape (N, 2). Got {arr.shape}.")
    return arr.astype(np.float64)


def _normalised(data, kind):
    """Data shifted to its mean and scaled by its standard deviation: ``(q, origin, scale)``."""
    origin = data.mean(axis=0)
    q = data - origin
    scale = q.std()
    if not scale >= np.finfo(np.float64).tiny:
        raise _Failure(f"Standard deviation of data is too small to estimate {kind} with meaningful precision.",
                       warn=True)
    return q / scale, origin, scale


class _Model:
    """What both models share: construction, the deprecations, estimation's protocol."""

    _fields: tuple = ()
    _kind = ""

    def __init__(self, *args, **kwargs):
        if not args and not kwargs:
            warnings.warn(f"Calling ``{type(self).__name__}()`` (without arguments) has been deprecated since "
                          f"version {_SINCE} and will be removed in version {_UNTIL}; see help for "
                          f"``{type(self).__name__}``.", FutureWarning, stacklevel=2)
            for f in self._fields:
                setattr(self, f, None)
            return
        self._set(*self._checked(*args, **kwargs))

    def _set(self, *values):
        for f, v in zip(self._fields, values):
            setattr(self, f, v)

    @classmethod
    def from_estimate(cls, data, *, method: str = "direct"):
        """Estimate the model from points ``data (N, 2)``: the model, or a falsy
        :class:`FailedEstimation` saying why there is none. ``method``: see the module."""
        model = cls.__new__(cls)
        try:
            model._set(*cls._estimate(_points(data), method))
        except _Failure as failure:
            return FailedEstimation(f"{cls.__name__}: {failure}")
        return model

    def estimate(self, data, *, method: str = "direct") -> bool:
        """Deprecated (as in scikit-image 0.26): estimate in place; use ``from_estimate``.

        Returns True on success, and, as scikit-image does, also after warning that
        there are too few points or too little spread (the model is then unchanged).
        """
        name = type(self).__name__
        warnings.warn(f"`estimate` is deprecated since version {_SINCE} and will be removed in version {_UNTIL}. "
                      f"Please use `{name}.from_estimate` class constructor instead.", FutureWarning, stacklevel=2)
        try:
            self._set(*self._estimate(_points(data), method))
        except _Failure as failure:
            if failure.warn:
                warnings.warn(str(failure), RuntimeWarning, stacklevel=2)
            return failure.warn
        return True

    @property
    def params(self):
        """Deprecated: the model's fields as one 1-D array."""
        names = ", ".join(self._fields)
        warnings.warn(f"`params` is deprecated since version {_SINCE} and will be removed in version {_UNTIL}. "
                      f"`params` attribute deprecated; use `{names}` attributes instead.", FutureWarning,
                      stacklevel=2)
        return np.r_[tuple(getattr(self, f) for f in self._fields)]

    def _values(self, params, where):
        """The fields, from ``params`` (deprecated) or the model itself."""
        if params is not _DEPRECATED:
            warnings.warn(f"Parameter `params` is deprecated since version {_SINCE} and will be removed in "
                          f"{_UNTIL} (or later). To avoid this warning, please do not use the parameter `params`. "
                          f"For more details, see the documentation of `{where}`.", FutureWarning, stacklevel=3)
            return self._from_params(np.array(params))
        if getattr(self, self._fields[0]) is None:
            name = type(self).__name__
            raise ValueError(f"`params` argument must be specified when applied to model initialized with "
                             f"``{name}()``; create the {name} with its parameters or with "
                             f"``{name}.from_estimate``.")
        return tuple(getattr(self, f) for f in self._fields)

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields) + ")"


class CircleModel(_Model):
    """A circle ``center (2,)``, ``radius``: scikit-image's ``CircleModel``.

    >>> t = np.linspace(0, 2 * np.pi, 25)
    >>> xy = CircleModel((2, 3), 4).predict_xy(t)
    >>> model = CircleModel.from_estimate(xy)
    >>> model.center.round(9) + 0.0, round(float(model.radius), 9)
    (array([2., 3.]), 4.0)
    >>> float(np.abs(model.residuals(xy)).max()) < 1e-9
    True
    """

    _fields = ("center", "radius")
    _kind = "circle"

    @staticmethod
    def _checked(center, radius):
        center = np.array(center)
        if len(center) != 2:
            raise ValueError("Center coordinates should be length 2")
        return center, radius

    def _from_params(self, params):
        if len(params) != 3:
            raise ValueError("Input `params` should be length 3")
        return self._checked(params[:2], params[2])

    @staticmethod
    def _estimate(data, method):
        from .curves import geometry
        from .fitting import fit

        q, origin, scale = _normalised(data, "circle")
        if len(q) < 3:
            raise _Failure("Input does not contain enough significant data points.", warn=True)
        with scoped_x64():
            out = fit(q, kind="circle", method=method, residual="none")
            ok = bool(out.ok)
            g = geometry(out.coeffs)
            center, radius = np.asarray(g.center), float(g.semi_axes[0])
        if not ok:
            raise _Failure("Input does not contain enough significant data points.", warn=True)
        return center * scale + origin, radius * scale

    def residuals(self, data):
        """``radius - distance to the centre`` for points ``data (N, 2)`` -> ``(N,)``."""
        p = _points(data)
        (xc, yc), r = self.center, self.radius
        return r - np.sqrt((p[:, 0] - xc) ** 2 + (p[:, 1] - yc) ** 2)

    def predict_xy(self, t, params=_DEPRECATED):
        """Points ``(..., 2)`` at angles ``t (...)`` (radians from the x-axis)."""
        t = np.asanyarray(t)
        (xc, yc), r = self._values(params, "predict_xy")
        return np.stack([xc + r * np.cos(t), yc + r * np.sin(t)], axis=-1)


class EllipseModel(_Model):
    """An ellipse ``center (2,)``, ``axis_lengths (a, b)`` (semi-axes), ``theta`` (angle of
    the first axis): scikit-image's ``EllipseModel``.

    >>> em = EllipseModel((10, 15), (8, 4), np.deg2rad(30))
    >>> xy = em.predict_xy(np.linspace(0, 2 * np.pi, 25))
    >>> ellipse = EllipseModel.from_estimate(xy)
    >>> ellipse.center.round(9) + 0.0, ellipse.axis_lengths.round(9), round(ellipse.theta, 2)
    (array([10., 15.]), array([8., 4.]), 0.52)
    >>> float(ellipse.residuals(xy).max()) < 1e-9
    True
    """

    _fields = ("center", "axis_lengths", "theta")
    _kind = "ellipse"

    @staticmethod
    def _checked(center, axis_lengths, theta):
        center, axis_lengths = np.array(center), np.array(axis_lengths)
        if len(center) != 2:
            raise ValueError("Center coordinates should be length 2")
        if len(axis_lengths) != 2:
            raise ValueError("Axis lengths should be length 2")
        return center, axis_lengths, theta

    def _from_params(self, params):
        if len(params) != 5:
            raise ValueError("Input `params` should be length 5")
        return self._checked(params[:2], params[2:4], params[4])

    @staticmethod
    def _estimate(data, method):
        from .curves import geometry
        from .fitting import fit

        if len(data) < 5:
            raise _Failure("Need at least 5 data points to estimate an ellipse.", warn=True)
        q, origin, scale = _normalised(data, "ellipse")
        if len(np.unique(q, axis=0)) < 5:
            raise _Failure("Need at least 5 distinct data points to estimate an ellipse.", warn=True)
        with scoped_x64():
            out = fit(q, kind="ellipse", method=method, residual="none")
            ok = bool(out.ok)
            g = geometry(out.coeffs)
            center, axes, angle = np.asarray(g.center), np.asarray(g.semi_axes), float(g.angle)
        if not ok:
            raise _Failure("No ellipse fits the data (collinear or degenerate points).", warn=False)
        # float(pi) is below pi, so in [0, pi); the side of a round-off angle is wrap.py's convention
        theta = on_side(angle, wrap_side(data)) if near_wrap(angle) else angle % math.pi
        return center * scale + origin, axes * scale, theta

    def residuals(self, data):
        """Unsigned orthogonal distances of points ``data (N, 2)`` to the ellipse -> ``(N,)``."""
        from .curves import from_geometry, residuals

        p = _points(data) - np.asarray(self.center, np.float64)  # in the ellipse's frame: exact far away too
        with scoped_x64():
            coeffs = from_geometry(np.zeros(2), np.asarray(self.axis_lengths, np.float64), float(self.theta))
            return np.abs(np.asarray(residuals(coeffs, p, kind="geometric")))

    def predict_xy(self, t, params=_DEPRECATED):
        """Points ``(..., 2)`` at parametric angles ``t (...)``."""
        t = np.asanyarray(t)
        (xc, yc), (a, b), theta = self._values(params, "predict_xy")
        ct, st = np.cos(t), np.sin(t)
        c, s = math.cos(theta), math.sin(theta)
        return np.stack([xc + a * c * ct - b * s * st, yc + a * s * ct + b * c * st], axis=-1)
