"""toolkit.estimators.GaussianMixture against sklearn.mixture.GaussianMixture."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.utils.estimator_checks import check_estimator

from toolkit._synthetic import mixture_data
from toolkit.estimators import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]


def blobs(seed=0, n=400, d=3, k=3):
    return mixture_data(np.random.default_rng(seed), n, d, k, factor_offset=1.0)[0]


def start(X, k, cov_type, seed=1):
    """A fixed starting point both implementations accept."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(len(X), k, replace=False)]
    prec = {"full": np.tile(np.eye(d), (k, 1, 1)), "tied": np.eye(d), "diag": np.ones((k, d)),
            "spherical": np.ones(k)}[cov_type]
    return dict(weights_init=np.full(k, 1.0 / k), means_init=means, precisions_init=prec)


def test_passes_sklearn_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(GaussianMixture(n_components=2, max_iter=30), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed, failed


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_same_start_same_result_as_sklearn(cov_type):
    X = blobs()
    kw = dict(n_components=3, covariance_type=cov_type, tol=0.0, max_iter=25, reg_covar=1e-6,
              **start(X, 3, cov_type))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = GaussianMixture(**kw).fit(X)
        ref = SkGM(**kw).fit(X)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-6)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        got, want = getattr(ours, name), getattr(ref, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8, err_msg=name)
    Y = blobs(seed=5, n=50)
    np.testing.assert_allclose(ours.score_samples(Y), ref.score_samples(Y), rtol=1e-6)
    np.testing.assert_allclose(ours.predict_proba(Y), ref.predict_proba(Y), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(Y), ref.predict(Y))
    np.testing.assert_allclose(ours.score(Y), ref.score(Y), rtol=1e-6)
    np.testing.assert_allclose(ours.bic(Y), ref.bic(Y), rtol=1e-6)
    np.testing.assert_allclose(ours.aic(Y), ref.aic(Y), rtol=1e-6)
    assert ours._n_parameters() == ref._n_parameters()


def test_lower_bound_never_decreases_and_fit_predict_matches_predict():
    X = blobs(seed=2)
    gm = GaussianMixture(n_components=3, n_init=3, random_state=0, tol=1e-8, max_iter=200)
    labels = gm.fit_predict(X)
    assert gm.converged_
    assert np.all(np.diff(gm.lower_bounds_) >= -1e-10)
    np.testing.assert_array_equal(labels, gm.predict(X))
    assert gm.n_features_in_ == 3


def test_more_restarts_never_worse():
    """Restart i uses the same seed whatever n_init is, so the best of more is never worse."""
    X = blobs(seed=3)
    bounds = [GaussianMixture(n_components=4, init_params="random", random_state=1, n_init=n, max_iter=300,
                              tol=1e-6).fit(X).lower_bound_ for n in (1, 3, 6)]
    # (vmapped restarts may differ from a single one in the last bits)
    assert bounds[0] <= bounds[1] + 1e-12 and bounds[1] <= bounds[2] + 1e-12


def test_convergence_warning_and_warm_start():
    X = blobs(seed=4)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = GaussianMixture(n_components=3, max_iter=2, tol=0.0, warm_start=True, random_state=0).fit(X)
    first = gm.lower_bound_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)  # continues from the previous parameters
    assert gm.lower_bound_ >= first - 1e-12


def test_sample_shapes_and_moments():
    X = blobs(seed=6, n=2000, d=2, k=2)
    gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    S, y = gm.sample(20000)
    assert S.shape == (20000, 2) and y.shape == (20000,)
    assert np.all(np.diff(y) >= 0)  # grouped by component, like scikit-learn
    np.testing.assert_allclose(S.mean(0), gm.weights_ @ gm.means_, atol=0.1)
    with pytest.raises(ValueError, match="at least one sample"):
        gm.sample(0)


def test_errors_match_sklearn():
    X = blobs()
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        GaussianMixture(n_components=10).fit(X[:5])
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(covariance_type="banana").fit(X)
    with pytest.raises(ValueError, match="init_params"):
        GaussianMixture(init_params="nope").fit(X)
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixture().fit(np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X))
    with pytest.raises(NotFittedError):
        GaussianMixture().predict(X)
    gm = GaussianMixture(n_components=2).fit(X)
    with pytest.raises(ValueError, match="features"):
        gm.predict(X[:, :2])
    with pytest.raises(ValueError, match="'means' should have the shape"):
        GaussianMixture(n_components=2, means_init=np.zeros((3, 3))).fit(X)


@pytest.mark.parametrize("kw, msg", [
    (dict(tol=float("nan")), r"'tol' parameter of GaussianMixture must be a float in the range \[0.0, inf\)"),
    (dict(reg_covar=float("nan")), "'reg_covar' parameter"),
    (dict(n_components=2, weights_init=[np.nan, 0.5]), "Input contains NaN"),
    (dict(n_components=2, means_init=[[np.nan, 0, 0], [1, 1, 1]]), "Input contains NaN"),
    (dict(n_components=2, covariance_type="diag", precisions_init=[[np.nan, 1, 1], [1, 1, 1]]),
     "Input contains NaN"),
    (dict(n_components=2, precisions_init=np.full((2, 3, 3), np.nan)), "Input contains NaN"),
])
def test_invalid_parameters_raise_as_sklearn(kw, msg):
    X = blobs()
    for cls in (SkGM, GaussianMixture):
        with pytest.raises(ValueError, match=msg):
            cls(**kw).fit(X)


def test_too_few_samples_or_no_features_raise_as_sklearn():
    X = blobs()
    for cls in (SkGM, GaussianMixture):
        with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
            cls(n_components=5).fit(X[:3])
        with pytest.raises(ValueError, match="0 feature"):
            cls().fit(np.zeros((10, 0)))


def test_pickle_keeps_float64_without_global_x64(tmp_path):
    """Fitted and pickled in one process, loaded in another where JAX's x64 is off."""
    import pickle
    import subprocess
    import sys

    X = blobs()
    gm = GaussianMixture(2, random_state=0).fit(X)
    (tmp_path / "gm.pkl").write_bytes(pickle.dumps(gm))
    np.save(tmp_path / "X.npy", X)
    code = ("import pickle, numpy as np, sys; gm = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "X = np.load(sys.argv[2]); s = gm.score_samples(X); print(s.dtype, repr(float(s.sum())))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "gm.pkl"), str(tmp_path / "X.npy")],
                         capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                          "JAX_ENABLE_X64": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    dtype, total = out.stdout.split()
    assert dtype == "float64" and float(total) == float(gm.score_samples(X).sum())


def test_verbose_prints_progress_like_sklearn(capsys):
    X = blobs()
    GaussianMixture(2, n_init=2, verbose=2, verbose_interval=1, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Initialization 1" in out
    assert "  Iteration 1" in out and "ll change" in out and "lower bound" in out
    GaussianMixture(2, verbose=1, verbose_interval=2, random_state=0).fit(X)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "  Iteration 2" in out and "ll change" not in out
    GaussianMixture(2, verbose=0).fit(X)
    assert capsys.readouterr().out == ""


def test_shrinkage_fits_rank_deficient_data():
    t = np.linspace(0, 2 * np.pi, 300, endpoint=False)
    X = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], 1)
    for shrink in ("oas", "ledoit_wolf", 0.1):
        gm = GaussianMixture(n_components=4, reg_covar=0.0, shrinkage=shrink, random_state=0).fit(X)
        assert np.all(np.isfinite(gm.covariances_)) and np.isfinite(gm.lower_bound_)
        assert np.all(np.linalg.eigvalsh(gm.covariances_) > 0)
