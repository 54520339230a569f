"""Conic fitting: ellipses AND hyperbolas, batched, with geometric refinement.

A conic is ``A x^2 + B xy + C y^2 + D x + E y + F = 0`` with coefficients
``[A, B, C, D, E, F]`` of unit L2 norm. The sign is fixed so that the value at the
centre is negative (for ellipses that is ``A + C > 0``); parabolas, which have no
centre, get ``A + C > 0``.

Every fit runs in Hartley-normalised coordinates (points centred on their weighted
mean and scaled to RMS radius sqrt(2)) and the coefficients are mapped back exactly,
so results do not depend on where the data sits or on its scale (1e-3 ... 1e3).

Methods (``fit(points, kind=..., method=...)``):

* ``"direct"`` -- constrained algebraic least squares in Halir & Flusser's reduced
  3x3 form. ``kind="ellipse"`` uses Fitzgibbon's constraint ``4AC - B^2 = 1``;
  ``kind="hyperbola"`` uses the same pencil and picks the eigenvector with
  ``4AC - B^2 < 0`` and the least cost (the middle eigenvalue), so the result is
  always a hyperbola and a conic through the origin (F = 0) is no special case;
  ``kind="any"`` uses Bookstein's invariant constraint ``A^2 + B^2/2 + C^2 = 1``.
  The 3x3 generalised eigenproblem is solved in closed form (cubic + cross
  products), which is what makes batched fits fast.
* ``"taubin"`` -- Taubin's gradient-weighted algebraic fit.
* ``"hyper"`` -- Kanatani & Rangarajan's hyper least squares: the Taubin constraint
  plus the correction that removes the second-order bias.
* ``"geometric"`` -- Levenberg-Marquardt on the exact orthogonal point-to-conic
  distances (closest points by bracketed Newton in the conic's own frame),
  started from ``"hyper"``. The most accurate on short arcs and noisy data.

Circles (``kind="circle"``, :mod:`toolkit.conic.circle`): ``"direct"`` is Kasa's fit,
``"pratt"``, ``"taubin"`` and ``"hyper"`` (hyperaccurate) are the normalised algebraic
fits, ``"geometric"`` refines the centre and radius by LM from ``"hyper"``.

``taubin``/``hyper``/``geometric`` with ``kind="ellipse"`` or ``"hyperbola"`` fall
back to the direct constrained fit whenever the unconstrained answer has the wrong
type, so the requested kind is always honoured.

Kinds are reported as integer codes (so they batch and jit): ``ELLIPSE = 0``,
``HYPERBOLA = 1``, ``PARABOLA = 2``, ``DEGENERATE = 3``; ``kind_name`` turns them
into strings.

Degenerate data (collinear or identical points) gives ``ok = False`` with finite
coefficients; it never raises inside ``jit``. Non-finite points raise ValueError
when the values are concrete and give ``ok = False`` under ``jit``.
"""
from __future__ import annotations

from .curves import classify, from_geometry, geometry, residuals, sample
from .fitting import fit
from .kinds import DEGENERATE, ELLIPSE, HYPERBOLA, KINDS, PARABOLA, ConicFit, ConicGeometry, kind_name
from .methods import CIRCLE_METHODS, METHODS
from .models import CircleModel, EllipseModel, FailedEstimation
from .robust import SCORINGS, ransac
from .uncertainty import ConicCovariance, covariance

__all__ = [
    "fit",
    "ConicFit",
    "geometry",
    "ConicGeometry",
    "from_geometry",
    "residuals",
    "sample",
    "classify",
    "kind_name",
    "ELLIPSE",
    "HYPERBOLA",
    "PARABOLA",
    "DEGENERATE",
    "KINDS",
    "METHODS",
    "CIRCLE_METHODS",
    "ransac",
    "covariance",
    "ConicCovariance",
    "SCORINGS",
    "EllipseModel",
    "CircleModel",
    "FailedEstimation",
]
