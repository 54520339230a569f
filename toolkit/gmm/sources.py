"""Where streamed batches come from: arrays, memmaps, ``.npy`` files, lists, factories."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Iterator

import jax
import numpy as np

from .._buckets import bucket
from .._checks import check_positive_int


# ----------------------------------------------------------------------------- batch sources


class NpyBatches:
    """Row chunks of a ``.npy`` file, read with plain file reads (re-iterable).

    Unlike ``np.load(mmap_mode="r")``, no page of the file stays mapped into the process,
    so resident memory stays near one chunk however large the file is.

    Args:
      path: a C-ordered 2-D ``.npy`` file of real numbers.
      batch_size: rows per chunk.
    Attributes:
      shape, dtype: of the whole array.
    Raises:
      ValueError: (naming the file) not a ``.npy`` file, not 2-D or Fortran-ordered, a
        dtype that is not real numbers, or fewer data bytes than the header promises.
      FileNotFoundError: no such file.
    """

    def __init__(self, path, batch_size: int = 65536):
        self.path = os.fspath(path)
        check_positive_int(batch_size, "batch_size", "gmm.NpyBatches")
        self.batch_size = int(batch_size)
        where = f"gmm.NpyBatches: {self.path}"
        with open(self.path, "rb") as f:  # the header only: no data page is read
            try:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read(f)
            except (ValueError, OSError) as exc:
                raise ValueError(f"{where} is not a .npy file ({exc})") from None
            self._offset = f.tell()
        dtype = np.dtype(dtype)
        if dtype.kind not in "fiub" or dtype.hasobject:
            raise ValueError(f"{where} must hold real numbers, got dtype {dtype}")
        if len(shape) != 2 or fortran:
            raise ValueError(f"{where} must hold a C-ordered 2-D array, got shape {shape}"
                             f"{' (Fortran order)' if fortran else ''}")
        need = self._offset + int(np.prod(shape)) * dtype.itemsize
        size = os.path.getsize(self.path)
        if size < need:
            raise ValueError(f"{where} is truncated: {size} bytes, but its header promises {need} "
                             f"({shape[0]} rows of {shape[1]} {dtype})")
        self.shape, self.dtype = tuple(shape), dtype

    def __len__(self) -> int:
        return math.ceil(self.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        n, d = self.shape
        row_bytes = d * self.dtype.itemsize
        with open(self.path, "rb") as f:
            for start in range(0, n, self.batch_size):
                rows = min(self.batch_size, n - start)
                f.seek(self._offset + start * row_bytes)
                a = np.fromfile(f, self.dtype, count=rows * d)
                if a.size != rows * d:
                    raise ValueError(f"gmm.NpyBatches: {self.path} is truncated at row {start + a.size // d}")
                yield a.reshape(rows, d)


@dataclasses.dataclass
class _Chunk:
    X: np.ndarray       # (C, d), zero rows past the data
    w: np.ndarray       # (C,), zero past the data
    rows: np.ndarray    # (C,) global row index, -1 past the data
    batch: int          # index of the batch it came from
    start: int          # its first row within that batch


class _Source:
    """Normalises ``batches`` to fixed-size chunks, validating each batch once."""

    def __init__(self, batches, where, *, batch_size, dtype, multi_pass):
        self.where = where
        if isinstance(batches, (np.ndarray, jax.Array)):
            arr = batches
            if arr.ndim != 2:
                raise ValueError(f"{where}: an array given as batches must be 2-D (n_samples, n_features), "
                                 f"got shape {tuple(arr.shape)}")
            step = batch_size or 65536
            self._factory = lambda: (arr[i:i + step] for i in range(0, arr.shape[0], step))
        elif callable(batches):
            self._factory = batches
        else:
            try:
                it = iter(batches)
            except TypeError:
                raise TypeError(f"{where}: batches must be an array, an iterable of arrays or a function returning "
                                f"an iterator, got {type(batches).__name__}") from None
            if it is batches and multi_pass:
                raise TypeError(f"{where}: batches is a one-shot iterator, but every EM iteration reads the data "
                                f"again; pass a list, an array, NpyBatches or a function returning a fresh iterator")
            self._factory = lambda: iter(batches)
        self.batch_size = batch_size
        self.dtype = dtype
        self.d = None
        self.capacity = None
        self.n_rows = None  # known after the first full pass

    def _validate(self, b, item, first):
        where = self.where
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"{where}: batch {b} must be an array X or a pair (X, sample_weight), "
                                 f"got a tuple of {len(item)}")
            X, w = item
        else:
            X, w = item, None
        X = np.asarray(X)
        if X.dtype.kind not in "fiub":
            raise TypeError(f"{where}: batch {b} must hold real numbers, got dtype {X.dtype}")
        if X.ndim != 2:
            raise ValueError(f"{where}: batch {b} must be 2-D (n_samples, n_features), got shape {X.shape}")
        if self.d is None:
            self.d = X.shape[1]
            if self.dtype is None:
                # ints compute in float64 and half floats in float32; float64 computes in
                # float32 when JAX's x64 is off, as jnp.asarray would (and without a warning)
                dt = X.dtype if X.dtype.kind == "f" else np.dtype(np.float64)
                self.dtype = jax.dtypes.canonicalize_dtype(np.promote_types(dt, np.float32))
        elif X.shape[1] != self.d:
            raise ValueError(f"{where}: batch {b} has {X.shape[1]} features, batch 0 had {self.d}")
        if w is not None:
            w = np.asarray(w)
            if w.shape != (X.shape[0],):
                raise ValueError(f"{where}: batch {b}: sample_weight must have shape ({X.shape[0]},), got {w.shape}")
        if first:
            bad = ~np.isfinite(X).all(axis=1)
            if bad.any():
                raise ValueError(f"{where}: batch {b} contains NaN or inf (first at row {int(np.argmax(bad))})")
            if w is not None and (not np.isfinite(w).all() or (w < 0).any()):
                raise ValueError(f"{where}: batch {b}: sample_weight must be finite and >= 0")
        return X, w

    def chunks(self, first: bool = False) -> Iterator[_Chunk]:
        """One pass over the data. ``first``: also check values (NaN/inf, weights)."""
        row = 0
        b = -1
        for b, item in enumerate(self._factory()):
            X, w = self._validate(b, item, first)
            if self.capacity is None:
                # by default the first batch's size bucket: a new batch size then usually
                # reuses the executables compiled for an earlier one
                self.capacity = int(self.batch_size or bucket(X.shape[0]))
            C = self.capacity
            for s in range(0, X.shape[0], C):
                m = min(C, X.shape[0] - s)
                Xc = np.zeros((C, self.d), self.dtype)
                Xc[:m] = X[s:s + m]
                wc = np.zeros(C, self.dtype)
                wc[:m] = 1.0 if w is None else w[s:s + m]
                rows = np.full(C, -1, np.int64)
                rows[:m] = np.arange(row, row + m)
                row += m
                yield _Chunk(Xc, wc, rows, b, s)
        if b < 0:
            raise ValueError(f"{self.where}: batches yielded no data (an empty iterable)")
        if row == 0:
            raise ValueError(f"{self.where}: batches hold no rows")
        if self.n_rows is None:
            self.n_rows = row
        elif row != self.n_rows:
            raise ValueError(f"{self.where}: batches gave {row} rows on this pass but {self.n_rows} on the first; "
                             f"they must give the same data on every pass")
