"""``so3.Rotation``: scipy's ``Rotation`` API as a JAX pytree, over the so3 kernels.

A ``Rotation`` holds quaternions ``(..., 4)`` in scipy's scalar-last order; its shape is
their leading shape (``()`` for a single rotation). Numpy or list input gives numpy output
in float64, as scipy's; JAX input gives JAX output and works under ``jit``, ``vmap`` and
``grad`` (see :mod:`toolkit.so3.dispatch`). Bad input raises scipy's errors where the
values can be read; under ``jit`` it gives NaN quaternions instead, as scipy does for JAX.
"""
from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import euler as E
from . import quaternions as Q
from .averaging import _mean
from .._checks import is_concrete
from .dispatch import coerce, is_host, run, scalar_out
from .maps import _from_quaternion

_DEG = np.pi / 180.0

# Kernels, compiled once per shape, dtype and static option.
_k_normalize = jax.jit(Q._normalize)
_k_canonical = jax.jit(Q._canonical)
_k_from_rotvec = jax.jit(Q._from_rotvec)
_k_as_rotvec = jax.jit(Q._as_rotvec)
_k_as_matrix = jax.jit(Q._as_matrix)
_k_from_matrix = jax.jit(Q._from_matrix, static_argnames="assume_valid")
_k_from_mrp = jax.jit(Q._from_mrp)
_k_as_mrp = jax.jit(Q._as_mrp)
_k_magnitude = jax.jit(Q._magnitude)
_k_power = jax.jit(Q._power)
_k_apply = jax.jit(Q._apply, static_argnames="inverse")
_k_approx_equal = jax.jit(Q._approx_equal)
_k_from_euler = jax.jit(E.from_euler, static_argnames="extrinsic")
_k_as_euler = jax.jit(E.as_euler, static_argnames="extrinsic")
_k_from_davenport = jax.jit(E.from_davenport, static_argnames="extrinsic")
_k_as_davenport = jax.jit(E.as_davenport, static_argnames="extrinsic")


@jax.jit
def _k_compose(p, q):
    return Q._normalize(Q._qmul(p, q))


@jax.jit
def _k_mean(q, w):
    """Chordal mean over the last rotation axis: so3.mean's closed form, as a quaternion
    (the eigenvector mean of Markley et al. minimises the same chordal distance)."""
    R = _from_quaternion(Q._to_wxyz(q))
    return Q._from_orthogonal(_mean(R, w, 0.0, 0, "chordal"))


@jax.jit
def _k_reduce(p, left, right):
    """For each p, the l, r maximising |w| of ``l p r``: its smallest-angle equivalent."""
    lpr = Q._qmul(Q._qmul(left[None, :, None], p[:, None, None]), right[None, None, :])  # (P, L, R, 4)
    score = jnp.abs(lpr[..., 3]).reshape(p.shape[0], -1)
    best = jnp.argmax(score, -1)
    nr = right.shape[0]
    li, ri = best // nr, best % nr
    return lpr[jnp.arange(p.shape[0]), li, ri], li, ri


def _broadcastable(a, b) -> bool:
    try:
        np.broadcast_shapes(tuple(a), tuple(b))
        return True
    except ValueError:
        return False


def _check_shape_arg(num, shape):
    if num is not None and shape is not None:
        raise ValueError("Only one of `num` or `shape` can be specified.")
    if shape is None:
        return () if num is None else (int(num),)
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        return (int(shape),)
    if isinstance(shape, tuple) and all(isinstance(s, (int, np.integer)) for s in shape):
        return tuple(int(s) for s in shape)
    raise ValueError("`shape` must be an int or a tuple of ints.")


def _nan_where(mask, q):
    """Traced bad input: NaN quaternions where ``mask`` (scipy's behaviour for JAX)."""
    return jnp.where(mask[..., None], jnp.nan, q)


@jax.tree_util.register_pytree_node_class
class Rotation:
    """Rotations in 3-D, with the API of ``scipy.spatial.transform.Rotation``.

    Build one with a ``from_*`` constructor, :meth:`identity`, :meth:`random` or
    :meth:`align_vectors`; compose with ``*``, invert with :meth:`inv`, index like an
    array. Quaternions are scalar-last ``(x, y, z, w)`` unless ``scalar_first=True``.

    It is a pytree (its leaf: the quaternions), so it passes through ``jax.jit``,
    ``vmap``, ``grad`` and ``lax`` control flow, and optax via :func:`so3.riemannian`.

    Args:
      quat: ``(..., 4)`` quaternions.
      normalize: scale them to unit norm (scipy's default); False trusts the input.
      copy: copy when not normalising.
      scalar_first: ``quat`` is ``(w, x, y, z)``.

    Example:
      >>> from toolkit.so3 import Rotation
      >>> r = Rotation.from_euler("z", 90, degrees=True)
      >>> r.apply([1.0, 0.0, 0.0]).round(12).tolist()
      [0.0, 1.0, 0.0]
      >>> (r * r).as_rotvec().round(12).tolist()  # numpy in, numpy out (float64)
      [0.0, 0.0, 3.14159265359]
      >>> jax.jit(lambda v: Rotation.from_rotvec(v).as_quat())(jnp.zeros(3)).tolist()
      [0.0, 0.0, 0.0, 1.0]
    """

    def __init__(self, quat: Any, normalize: bool = True, copy: bool = True, scalar_first: bool = False):
        q = coerce(quat, "quat")
        if q.ndim < 1 or q.shape[-1] != 4:
            raise ValueError(f"Expected `quat` to have shape (..., 4), got {tuple(q.shape)}.")
        host = is_host(q)
        if scalar_first:
            q = np.roll(q, -1, axis=-1) if host else jnp.roll(q, -1, axis=-1)
        if normalize:
            q = _normalized(q)
        elif copy and host:
            q = np.array(q)
        self._quat = q

    # -- pytree -----------------------------------------------------------------------
    def tree_flatten(self):
        return (self._quat,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls._wrap(children[0])

    @classmethod
    def _wrap(cls, quat) -> "Rotation":
        obj = object.__new__(cls)
        obj._quat = quat
        return obj

    @property
    def _host(self) -> bool:
        return isinstance(self._quat, np.ndarray)

    def _run(self, kernel, *args, **static):
        return run(self._host, kernel, *args, **static)

    def _coerce(self, x, name):
        """Other input in this rotation's mode and float dtype."""
        return coerce(x, name, host=self._host, dtype=None if self._host else self._quat.dtype)

    # -- constructors -----------------------------------------------------------------
    @staticmethod
    def from_quat(quat: Any, *, scalar_first: bool = False) -> "Rotation":
        """From quaternions ``(..., 4)``, ``(x, y, z, w)`` or, with ``scalar_first``, ``(w, x, y, z)``;
        normalised. A zero quaternion is a ValueError."""
        return Rotation(quat, normalize=True, scalar_first=scalar_first)

    @staticmethod
    def from_matrix(matrix: Any, *, assume_valid: bool = False) -> "Rotation":
        """From matrices ``(..., 3, 3)``. Unless ``assume_valid``, a matrix that is not
        orthogonal is replaced by the nearest rotation (SVD), and a non-positive determinant
        is a ValueError."""
        m = coerce(matrix, "matrix")
        if m.ndim < 2 or m.shape[-2:] != (3, 3):
            raise ValueError(f"Expected `matrix` to have shape (..., 3, 3), got {tuple(m.shape)}")
        host = is_host(m)
        bad = None
        if not assume_valid and m.size:
            if is_concrete(m):
                det = np.linalg.det(np.asarray(m))
                if np.any(det <= 0):
                    ind = int(np.flatnonzero(np.atleast_1d(det <= 0))[0])
                    shown = np.asarray(m).reshape(-1, 3, 3)[ind]
                    raise ValueError("Non-positive determinant (left-handed or null coordinate frame) in rotation "
                                     f"matrix {ind}: {shown}.")
            else:
                bad = jnp.linalg.det(m) <= 0
        q = run(host, _k_from_matrix, m, assume_valid=bool(assume_valid))
        return Rotation._wrap(q if bad is None else _nan_where(bad, q))

    @staticmethod
    def from_rotvec(rotvec: Any, degrees: bool = False) -> "Rotation":
        """From rotation vectors ``(..., 3)`` (axis times angle; degrees if ``degrees``)."""
        v = coerce(rotvec, "rotvec")
        if v.ndim < 1 or v.shape[-1] != 3:
            raise ValueError(f"Expected `rot_vec` to have shape (..., 3), got {tuple(v.shape)}")
        if degrees:
            v = v * _DEG
        return Rotation._wrap(run(is_host(v), _k_from_rotvec, v))

    @staticmethod
    def from_mrp(mrp: Any) -> "Rotation":
        """From modified Rodrigues parameters ``(..., 3)``, ``axis * tan(angle / 4)``."""
        p = coerce(mrp, "mrp")
        if p.ndim < 1 or p.shape[-1] != 3:
            raise ValueError(f"Expected `mrp` to have shape (..., 3), got {tuple(p.shape)}")
        return Rotation._wrap(run(is_host(p), _k_from_mrp, p))

    @staticmethod
    def from_euler(seq: str, angles: Any, degrees: bool = False) -> "Rotation":
        """From Euler angles: ``seq`` of 1-3 axes, "xyz"-style extrinsic (fixed axes) or
        "XYZ"-style intrinsic (moving axes); ``angles (..., len(seq))`` or a scalar for one axis."""
        axes, extrinsic = E.parse_sequence(seq, exactly_three=False)
        a = coerce(angles, "angles")
        a = a[None] if a.ndim == 0 else a
        if a.shape[-1] != len(axes):
            raise ValueError("Expected last dimension of `angles` to match number of sequence axes specified, "
                             f"got {a.shape[-1]}.")
        if degrees:
            a = a * _DEG
        return Rotation._wrap(run(is_host(a), _k_from_euler, a, axes, extrinsic=extrinsic))

    @staticmethod
    def from_davenport(axes: Any, order: str, angles: Any, degrees: bool = False) -> "Rotation":
        """From angles about 1-3 arbitrary axes ``(..., n, 3)`` (consecutive ones
        orthogonal), ``order`` "extrinsic"/"e" or "intrinsic"/"i"; ``angles (..., n)``."""
        extrinsic = E.parse_order(order)
        host = is_host(axes) and is_host(angles)
        ax = coerce(axes, "axes", host=host)
        an = coerce(angles, "angles", host=host, dtype=None if host else ax.dtype)
        if ax.ndim < 1 or ax.shape[-1] != 3:
            raise ValueError("Axes must be vectors of length 3.")
        ax = ax[None] if ax.ndim == 1 else ax
        an = an[None] if an.ndim == 0 else an
        if not 1 <= ax.shape[-2] <= 3:
            raise ValueError(f"Expected up to 3 axes, got {ax.shape[-2]}")
        if ax.shape[-2] != an.shape[-1] or not _broadcastable(ax.shape[:-2], an.shape[:-1]):
            raise ValueError(f"Expected `angles` to match number of axes, got {tuple(an.shape)} angles and "
                             f"{tuple(ax.shape)} axes.")
        ax = ax / (np.linalg.norm(ax, axis=-1, keepdims=True) if host else jnp.linalg.norm(ax, axis=-1, keepdims=True))
        _check_orthogonal(ax)
        if degrees:
            an = an * _DEG
        return Rotation._wrap(run(host, _k_from_davenport, ax, an, extrinsic=extrinsic))

    @staticmethod
    def identity(num: int | None = None, *, shape: int | tuple | None = None) -> "Rotation":
        """The identity: one (``num=None``), ``num`` of them, or an array of ``shape``."""
        shp = _check_shape_arg(num, shape)
        q = np.zeros(shp + (4,))
        q[..., 3] = 1.0
        return Rotation._wrap(q)

    @staticmethod
    def random(num: int | None = None, rng: Any = None, *, shape: int | tuple | None = None,
               random_state: Any = None) -> "Rotation":
        """Uniformly distributed rotations (normalised Gaussian quaternions, as scipy draws
        them, so a seed gives scipy's rotations).

        Args:
          num: how many (None: a single rotation).
          rng: a seed, ``numpy.random.Generator`` or ``RandomState`` (numpy output), or a JAX
            PRNG key (JAX output; usable under ``jit``).
          shape: an array of rotations instead of ``num``.
          random_state: scipy's former name of ``rng``.
        """
        shp = _check_shape_arg(num, shape)
        rng = random_state if rng is None else rng
        if isinstance(rng, jax.Array):
            g = jax.random.normal(rng, shp + (4,), dtype=jnp.result_type(float))
            return Rotation._wrap(Q._normalize(g))
        if not isinstance(rng, (np.random.Generator, np.random.RandomState)):
            rng = np.random.default_rng(rng)
        g = rng.normal(size=shp + (4,))
        return Rotation._wrap(g / np.linalg.norm(g, axis=-1, keepdims=True))

    @staticmethod
    def concatenate(rotations: Any) -> "Rotation":
        """One rotation array from a Rotation or a sequence of them (along the first axis)."""
        if isinstance(rotations, Rotation):
            return Rotation(rotations._quat, normalize=False, copy=True)
        rotations = list(rotations)
        if not all(isinstance(r, Rotation) for r in rotations):
            raise TypeError("input must contain Rotation objects only")
        if all(r._host for r in rotations):
            return Rotation._wrap(np.concatenate([np.atleast_2d(r._quat) for r in rotations]))
        return Rotation._wrap(jnp.concatenate([jnp.atleast_2d(r._quat) for r in rotations]))

    @staticmethod
    def align_vectors(a: Any, b: Any, weights: Any = None, return_sensitivity: bool = False):
        """The rotation that best maps vectors ``b`` onto ``a``: Wahba's problem, see
        :func:`toolkit.so3.alignment.align_vectors`.

        Returns ``(rotation, rssd)`` or ``(rotation, rssd, sensitivity)``.
        """
        from .alignment import align_vectors

        q, rssd, sens = align_vectors(a, b, weights, return_sensitivity)
        rot = Rotation._wrap(q)
        return (rot, rssd, sens) if return_sensitivity else (rot, rssd)

    # -- representations --------------------------------------------------------------
    def as_quat(self, canonical: bool = False, *, scalar_first: bool = False):
        """Quaternions ``(..., 4)`` as stored (``canonical``: w >= 0 and scipy's tie rule)."""
        q = self._run(_k_canonical, self._quat) if canonical else (
            np.array(self._quat) if self._host else self._quat)
        if scalar_first:
            q = np.roll(q, 1, axis=-1) if self._host else jnp.roll(q, 1, axis=-1)
        return q

    def as_matrix(self):
        """Rotation matrices ``(..., 3, 3)``."""
        return self._run(_k_as_matrix, self._quat)

    def as_rotvec(self, degrees: bool = False):
        """Rotation vectors ``(..., 3)``, angle in [0, pi] (degrees if ``degrees``);
        exact at 0 and pi (so3's quaternion logarithm)."""
        v = self._run(_k_as_rotvec, self._quat)
        return v / _DEG if degrees else v

    def as_mrp(self):
        """Modified Rodrigues parameters ``(..., 3)`` with norm <= 1."""
        return self._run(_k_as_mrp, self._quat)

    def as_euler(self, seq: str, degrees: bool = False, *, suppress_warnings: bool = False):
        """Euler angles ``(..., 3)`` of a 3-axis sequence: first and third in [-pi, pi),
        the middle in [-pi/2, pi/2] (two different axes) or [0, pi] (symmetric sequences).

        At gimbal lock the third angle is set to 0, with a UserWarning unless
        ``suppress_warnings`` (no warning under ``jit``).
        """
        axes, extrinsic = E.parse_sequence(seq, exactly_three=True)
        angles, locked = self._run(_k_as_euler, self._quat, axes, extrinsic=extrinsic)
        _warn_gimbal(locked, suppress_warnings)
        return angles / _DEG if degrees else angles

    def as_davenport(self, axes: Any, order: str, degrees: bool = False, *, suppress_warnings: bool = False):
        """Angles ``(..., 3)`` about three axes ``(..., 3, 3)`` (consecutive ones orthogonal)."""
        extrinsic = E.parse_order(order)
        ax = self._coerce(axes, "axes")
        if ax.ndim < 2 or ax.shape[-2] != 3:
            raise ValueError(f"Expected 3 axes, got {tuple(ax.shape)}.")
        if ax.shape[-1] != 3:
            raise ValueError("Axes must be vectors of length 3.")
        if not _broadcastable(ax.shape[:-2], self.shape):
            raise ValueError(f"Expected `axes` to match number of rotations, got {tuple(ax.shape)} axes and "
                             f"{tuple(self._quat.shape)} rotations.")
        ax = ax / (np.linalg.norm(ax, axis=-1, keepdims=True) if self._host
                   else jnp.linalg.norm(ax, axis=-1, keepdims=True))
        _check_orthogonal(ax)
        angles, locked = self._run(_k_as_davenport, self._quat, ax, extrinsic=extrinsic)
        _warn_gimbal(locked, suppress_warnings)
        return angles / _DEG if degrees else angles

    # -- group operations -------------------------------------------------------------
    def apply(self, vectors: Any, inverse: bool = False):
        """Rotate vectors ``(..., 3)`` (or un-rotate, ``inverse=True``); rotation and
        vector shapes broadcast: the result is ``broadcast(shape, vectors[:-1]) + (3,)``."""
        host = self._host and is_host(vectors)  # JAX (or traced) vectors: a JAX computation
        q = self._quat if host or not self._host else jnp.asarray(self._quat)
        v = coerce(vectors, "vectors", host=host, dtype=None if host else q.dtype)
        if v.ndim < 1 or v.shape[-1] != 3:
            raise ValueError(f"Expected input of shape (..., 3), got {tuple(v.shape)}.")
        if not _broadcastable(self.shape, v.shape[:-1]):
            raise ValueError(f"Cannot broadcast {self.shape} rotations to {tuple(v.shape[:-1])} vectors.")
        return run(host, _k_apply, q, v, inverse=bool(inverse))

    def __mul__(self, other: Any):
        """Composition: ``(p * q).apply(v) == p.apply(q.apply(v))``; shapes broadcast."""
        if not isinstance(other, Rotation):
            return NotImplemented
        if not _broadcastable(self._quat.shape, other._quat.shape):
            raise ValueError(f"Cannot broadcast {self.shape} rotations in first to {other.shape} rotations in "
                             "second object.")
        host = self._host and other._host
        p, q = (self._quat, other._quat) if host else (jnp.asarray(self._quat), jnp.asarray(other._quat))
        return Rotation._wrap(run(host, _k_compose, p, q))

    def __pow__(self, n: Any, modulus: None = None) -> "Rotation":
        """``n``-fold composition, any real ``n`` (``exp(n log r)``; exact for 0, -1 and 1)."""
        if modulus is not None:
            raise NotImplementedError("modulus not supported")
        if hasattr(n, "shape") and tuple(n.shape) != ():
            if tuple(n.shape) != (1,):
                raise ValueError("Array exponent must be a scalar")
            n = n[0]
        dtype = np.float64 if self._host else self._quat.dtype
        n = np.asarray(n, dtype) if not isinstance(n, jax.Array) else n.astype(dtype)
        return Rotation._wrap(self._run(_k_power, self._quat, n))

    def inv(self) -> "Rotation":
        """The inverse rotations (conjugate quaternions)."""
        q = self._quat
        if self._host:
            out = np.array(q)
            out[..., :3] *= -1
            return Rotation._wrap(out)
        return Rotation._wrap(Q._conj(q))

    def magnitude(self):
        """Rotation angles in [0, pi], shape ``self.shape``."""
        return scalar_out(self._run(_k_magnitude, self._quat))

    def approx_equal(self, other: "Rotation", atol: Any = None, degrees: bool = False):
        """Whether ``other`` is within angle ``atol`` (default 1e-8 rad) of ``self``, broadcast."""
        if atol is None:
            if degrees:
                warnings.warn("atol must be set to use the degrees flag, defaulting to 1e-8 radians.", stacklevel=2)
            atol = 1e-8
        elif degrees:
            atol = atol * _DEG
        if not _broadcastable(self._quat.shape, other._quat.shape):
            raise ValueError(f"Expected broadcastable shapes in both rotations, got {self.shape} rotations in first "
                             f"and {other.shape} rotations in second object.")
        host = self._host and other._host
        dtype = np.float64 if host else jnp.result_type(self._quat.dtype, other._quat.dtype)
        atol = np.asarray(atol, dtype) if not isinstance(atol, jax.Array) else atol.astype(dtype)
        return scalar_out(run(host, _k_approx_equal, self._quat, other._quat, atol))

    def mean(self, weights: Any = None, axis: Any = None) -> "Rotation":
        """Chordal L2 mean (the rotation nearest, in Frobenius norm, to the weighted mean
        matrix), over ``axis`` (an int, a tuple, or None for all axes)."""
        shape = self.shape
        if int(np.prod(shape)) == 0:
            raise ValueError("Mean of an empty rotation set is undefined.")
        axes = _mean_axes(axis, len(shape))
        q = self._quat
        w = None
        if weights is not None:
            w = self._coerce(weights, "weights")
            if is_concrete(w) and np.any(np.asarray(w) < 0):
                raise ValueError("`weights` must be non-negative.")
            if not _broadcastable(shape, w.shape) or np.broadcast_shapes(shape, w.shape) != shape:
                raise ValueError(f"Expected `weights` to be broadcastable to rotation shape, got shape "
                                 f"{tuple(w.shape)} for {shape} rotations.")
        xnp = np if self._host else jnp
        w = xnp.ones(shape, q.dtype) if w is None else xnp.broadcast_to(w, shape)
        keep = tuple(i for i in range(len(shape)) if i not in axes)
        order = keep + axes
        q = xnp.transpose(q, order + (len(shape),)).reshape(tuple(shape[i] for i in keep) + (-1, 4))
        w = xnp.transpose(w, order).reshape(tuple(shape[i] for i in keep) + (-1,))
        return Rotation._wrap(self._run(_k_mean, q, w))

    def reduce(self, left: "Rotation | None" = None, right: "Rotation | None" = None, return_indices: bool = False):
        """Each rotation's equivalent ``l * p * r`` of smallest angle, with ``l`` from
        ``left`` and ``r`` from ``right`` (e.g. symmetry groups); optionally their indices."""
        if left is None and right is None:
            return (self, None, None) if return_indices else self
        xnp = np if self._host else jnp
        ident = xnp.asarray([[0.0, 0.0, 0.0, 1.0]], dtype=self._quat.dtype)
        lq = ident if left is None else xnp.reshape(xnp.asarray(left._quat, self._quat.dtype), (-1, 4))
        rq = ident if right is None else xnp.reshape(xnp.asarray(right._quat, self._quat.dtype), (-1, 4))
        p = xnp.reshape(self._quat, (-1, 4))
        q, li, ri = self._run(_k_reduce, p, lq, rq)
        rot = Rotation._wrap(q.reshape(self._quat.shape))
        if return_indices:
            return rot, (li if left is not None else None), (ri if right is not None else None)
        return rot

    # -- array protocol ---------------------------------------------------------------
    @property
    def single(self) -> bool:
        """True for one rotation (shape ``()``)."""
        return self._quat.ndim == 1

    @property
    def shape(self) -> tuple:
        """The rotations' array shape (``()`` for a single rotation)."""
        return tuple(self._quat.shape[:-1])

    def __len__(self) -> int:
        if self.single:
            raise TypeError("Single rotation has no len().")
        return self._quat.shape[0]

    def __bool__(self) -> bool:
        return True

    def __iter__(self):
        if self.single:
            raise TypeError("Single rotation is not iterable.")
        for i in range(self._quat.shape[0]):
            yield Rotation._wrap(self._quat[i])

    def __getitem__(self, indexer: Any) -> "Rotation":
        if self.single:
            raise TypeError("Single rotation is not subscriptable.")
        q = self._quat
        if self._host:
            idx = np.asarray(indexer) if isinstance(indexer, (list, np.ndarray)) else indexer
            if isinstance(idx, np.ndarray) and idx.size == 0 and idx.dtype != bool:
                idx = idx.astype(np.intp)  # [] indexes nothing (numpy reads it as float64)
            if isinstance(idx, np.ndarray) and idx.dtype != bool and idx.ndim and q.shape[0] == 0:
                raise IndexError("cannot do a non-empty take from an empty axes.")
            if isinstance(idx, np.ndarray) and idx.dtype != bool:
                return Rotation._wrap(np.take(q, idx, axis=0))
            return Rotation._wrap(np.array(q[idx, ...]) if not isinstance(idx, tuple) else np.array(q[idx]))
        if isinstance(indexer, list):
            indexer = jnp.asarray(indexer, dtype=int if not indexer else None)
        return Rotation._wrap(q[indexer] if isinstance(indexer, tuple) else q[indexer, ...])

    def __setitem__(self, indexer: Any, value: "Rotation") -> None:
        if self.single:
            raise TypeError("Single rotation is not subscriptable.")
        if not isinstance(value, Rotation):
            raise TypeError("value must be a Rotation object")
        if self._host and value._host:
            q = np.array(self._quat)
            q[indexer, ...] = value._quat
            self._quat = q
        else:  # a JAX value (traced, perhaps) makes this a JAX rotation
            q = jnp.asarray(self._quat, None if self._host else self._quat.dtype)
            self._quat = q.at[indexer].set(jnp.asarray(value._quat, q.dtype))

    def __repr__(self) -> str:
        lines = repr(self.as_matrix()).splitlines()
        indent = " " * len("Rotation.from_matrix(")
        return "Rotation.from_matrix(" + "\n".join([lines[0]] + [indent + s for s in lines[1:]]) + ")"


def _normalized(q):
    """Unit quaternions; a zero one raises where values are readable, NaN under trace."""
    if is_host(q):
        norm = np.linalg.norm(q, axis=-1, keepdims=True)
        if np.any(norm == 0):
            raise ValueError("Found zero norm quaternions in `quat`.")
        return q / norm
    if is_concrete(q) and q.size and np.any(np.linalg.norm(np.asarray(q), axis=-1) == 0):
        raise ValueError("Found zero norm quaternions in `quat`.")
    return _k_normalize(q)


def _check_orthogonal(ax):
    """Davenport axes: consecutive ones must be orthogonal (to 1e-7)."""
    if not is_concrete(ax) or ax.shape[-2] < 2:
        return
    a = np.asarray(ax)
    dots = np.abs(np.sum(a[..., :-1, :] * a[..., 1:, :], -1))
    if np.any(dots > 1e-7):
        raise ValueError("Consecutive axes must be orthogonal.")


def _warn_gimbal(locked, suppress: bool):
    if not suppress and is_concrete(locked) and np.any(np.asarray(locked)):
        warnings.warn(E.GIMBAL_MESSAGE, UserWarning, stacklevel=3)


def _mean_axes(axis, ndim: int) -> tuple:
    """scipy's ``axis`` rules for :meth:`Rotation.mean`, normalised to sorted non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
        axis = (int(axis),)
    if not isinstance(axis, tuple) or not all(isinstance(a, (int, np.integer)) for a in axis):
        raise ValueError("`axis` must be None, int, or tuple of ints.")
    if axis and (min(axis) < -ndim or max(axis) > ndim - 1):
        raise ValueError(f"axis {axis} is out of bounds for rotation with shape of {ndim} dimensions.")
    return tuple(sorted({int(a) % ndim for a in axis}))
