"""Sharded and streaming EM (toolkit.gmm.shard_rows / fit_batches / fit_online).

Oracle: the in-memory ``gmm.fit`` on the same data (itself tested against scikit-learn).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from toolkit import gmm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(700, 3)) @ rng.normal(size=(3, 3)) + 4 * i for i in range(3)])
    return X[rng.permutation(len(X))]


def batches_of(X, size=256):
    return [X[i:i + size] for i in range(0, len(X), size)]


def assert_same_fit(a, b, rtol=1e-9):
    (g1, i1), (g2, i2) = a, b
    assert int(i1.n_iter) == int(i2.n_iter)
    assert bool(i1.converged) == bool(i2.converged)
    np.testing.assert_allclose(i2.lower_bounds, i1.lower_bounds, rtol=rtol)
    np.testing.assert_allclose(i2.history, i1.history, rtol=rtol)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(g2, name), getattr(g1, name), rtol=rtol * 100, atol=rtol, err_msg=name)
    np.testing.assert_array_equal(i2.rank_deficient, i1.rank_deficient)


@pytest.mark.parametrize("ct, shrinkage, init", [("full", None, "kmeans++"), ("tied", "ledoit_wolf", "random"),
                                                 ("diag", 0.1, "random_from_data")])
def test_streaming_equals_in_memory(data, ct, shrinkage, init):
    kw = dict(covariance_type=ct, shrinkage=shrinkage, init=init, n_init=2)
    assert_same_fit(gmm.fit(jax.random.key(3), data, 3, **kw),
                    gmm.fit_batches(jax.random.key(3), batches_of(data), 3, **kw))


def test_every_batch_source_gives_the_same_fit(data, tmp_path):
    rng = np.random.default_rng(1)
    w = rng.uniform(0.5, 2.0, len(data))
    g0 = gmm.fit(jax.random.key(0), data, 3, max_iter=1)[0]
    kw = dict(init=g0, max_iter=20, batch_size=256)
    ref = gmm.fit(jax.random.key(0), data, 3, init=g0, max_iter=20)
    path = tmp_path / "x.npy"
    np.save(path, data)
    src = gmm.NpyBatches(path, batch_size=300)
    assert src.shape == data.shape and len(src) == 7
    for batches in (src, np.load(path, mmap_mode="r"), lambda: iter(batches_of(data, 100)), batches_of(data, 500)):
        assert_same_fit(ref, gmm.fit_batches(jax.random.key(0), batches, 3, **kw))
    weighted = [(X, w[i:i + 256]) for i, X in zip(range(0, len(data), 256), batches_of(data))]
    assert_same_fit(gmm.fit(jax.random.key(0), data, 3, init=g0, max_iter=20, sample_weight=w),
                    gmm.fit_batches(jax.random.key(0), weighted, 3, **kw))


def test_seeding_on_a_sample_still_finds_the_clusters(data):
    g1, i1 = gmm.fit(jax.random.key(0), data, 3)
    g2, i2 = gmm.fit_batches(jax.random.key(0), batches_of(data), 3, init_size=300)
    order = [int(np.argmin(np.linalg.norm(g1.means - m, axis=1))) for m in np.asarray(g2.means)]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(g2.means, np.asarray(g1.means)[order], atol=1e-3)
    np.testing.assert_allclose(i2.lower_bound, i1.lower_bound, rtol=1e-5)


def test_online_em_approaches_the_batch_fit(data):
    g1, _ = gmm.fit(jax.random.key(0), data, 3)
    g2, info = gmm.fit_online(jax.random.key(0), iter(batches_of(data, 100)), 3)  # one-shot iterator: fine
    assert int(info.n_iter) == 21 and not bool(info.converged) and info.history.shape == (21,)
    order = [int(np.argmin(np.linalg.norm(g1.means - m, axis=1))) for m in np.asarray(g2.means)]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(g2.means, np.asarray(g1.means)[order], atol=0.15)
    assert float(gmm.score(g2, data)) > float(gmm.score(g1, data)) - 0.02
    # a constant step of 1 is plain EM on each batch in turn
    g3, _ = gmm.fit_online(jax.random.key(0), batches_of(data, 100), 3, step_size=1.0, n_epochs=2)
    assert np.all(np.isfinite(g3.covariances))


def _nan_batches(X):
    b = batches_of(X)
    b[1] = b[1].copy()
    b[1][5, 2] = np.nan
    return b


@pytest.mark.parametrize("batches, err, msg", [
    (lambda X: [X[:100], X[100:200, :2]], ValueError, "batch 1 has 2 features, batch 0 had 3"),
    (lambda X: [], ValueError, "batches yielded no data"),
    (_nan_batches, ValueError, r"batch 1 contains NaN or inf \(first at row 5\)"),
    (lambda X: iter(batches_of(X)), TypeError, "one-shot iterator"),
    (lambda X: [X[:100], X[100:200, 0]], ValueError, r"batch 1 must be 2-D"),
    (lambda X: [(X[:100], np.ones(99))], ValueError, r"batch 0: sample_weight must have shape \(100,\)"),
    (lambda X: 3.0, TypeError, "batches must be an array, an iterable of arrays or a function"),
])
def test_bad_batches(data, batches, err, msg):
    with pytest.raises(err, match=msg):
        gmm.fit_batches(jax.random.key(0), batches(data), 3)


def test_bad_options(data):
    with pytest.raises(ValueError, match="init_size must be a positive int"):
        gmm.fit_batches(jax.random.key(0), batches_of(data), 3, init_size=0)
    with pytest.raises(ValueError, match="covariance_type"):
        gmm.fit_batches(jax.random.key(0), batches_of(data), 3, covariance_type="ful")
    with pytest.raises(ValueError, match=r"n_samples=2 should be >= n_components=3"):
        gmm.fit_batches(jax.random.key(0), [data[:2]], 3)
    with pytest.raises(ValueError, match=r"step_size must be a float in \(0, 1\]"):
        gmm.fit_online(jax.random.key(0), batches_of(data), 3, step_size=0.0)
    with pytest.raises(ValueError, match="X must be 2-D"):
        gmm.shard_rows(np.zeros(5))


@pytest.mark.slow  # a fresh process that compiles every sharded executable: ~50 s of a cold run
def test_sharded_fit_equals_single_device():
    """Four host devices in a fresh process (the device count is fixed at JAX start-up)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "sharded_check.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4
    assert res["padded_rows"] == 1004 and res["x_shards"] == 4
    assert res["params_replicated"]
    for name, err in res["max_rel_err"].items():
        assert err < 1e-9, (name, err)


def test_npy_batches_rejects_bad_files_naming_them(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).normal(size=(100, 3)))
    (tmp_path / "text.npy").write_text("1,2\n3,4\n")
    raw = good.read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "cplx.npy", np.ones((3, 2), complex))
    np.save(tmp_path / "obj.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    np.save(tmp_path / "three.npy", np.ones((2, 2, 2)))
    for name, msg in [("text", "is not a .npy file"), ("trunc", "is truncated: .* header promises"),
                      ("str", "must hold real numbers, got dtype <U1"), ("cplx", "must hold real numbers, got dtype complex128"),
                      ("obj", "must hold real numbers, got dtype object"), ("three", "must hold a C-ordered 2-D array")]:
        with pytest.raises(ValueError, match=f"NpyBatches: .*{name}.npy {msg}"):
            gmm.NpyBatches(tmp_path / f"{name}.npy")
    assert sum(len(b) for b in gmm.NpyBatches(good, batch_size=30)) == 100


def test_fit_batches_on_float64_without_x64_warns_nothing():
    """In a process with JAX's x64 off, float64 data computes in float32 silently."""
    code = ("import warnings, numpy as np, jax; warnings.simplefilter('error'); from toolkit import gmm; "
            "g, i = gmm.fit_batches(jax.random.key(0), np.random.default_rng(0).normal(size=(300, 2)), 2, "
            "max_iter=3); print(g.means.dtype)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_ENABLE_X64": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "float32"


def test_fit_batches_progress_bar(capsys):
    X = np.random.default_rng(0).normal(size=(400, 2))
    gmm.fit_batches(jax.random.key(0), X, 2, max_iter=3, batch_size=100, progress=True)
    err = capsys.readouterr().err
    assert "gmm.fit_batches: EM passes" in err and "lower_bound=" in err
    gmm.fit_batches(jax.random.key(0), X, 2, max_iter=3, batch_size=100)  # not a terminal: silent
    assert "EM passes" not in capsys.readouterr().err
