"""toolkit.gmm.fit_bayesian against scikit-learn's BayesianGaussianMixture: the same
trajectory from the same responsibilities, component pruning, priors and bad input."""
import jax
import numpy as np
import pytest
from sklearn.mixture import BayesianGaussianMixture as SkBGM

from toolkit import gmm

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) @ np.diag([1, 2, 0.5]) + 5,
                           rng.normal(size=(100, 3)) - 4])


def _sklearn_run(X, resp0, iters, **kw):
    """scikit-learn's own steps from given responsibilities: ELBO per iteration."""
    sk = SkBGM(**kw)
    sk._check_parameters(X)
    sk._initialize(X, resp0)
    lbs = []
    for _ in range(iters):
        lpn, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        lbs.append(float(np.ravel(sk._compute_lower_bound(log_resp, lpn))[0]))
    sk._set_parameters(sk._get_parameters())
    return sk, np.array(lbs)


@pytest.mark.parametrize("prior_type", gmm.PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_start_same_trajectory_as_sklearn(prior_type, covariance_type):
    X = _data()
    k, iters = 5, 25
    resp0 = np.random.default_rng(1).dirichlet(np.ones(k), size=len(X))
    sk, lbs = _sklearn_run(X, resp0, iters, n_components=k, covariance_type=covariance_type,
                           weight_concentration_prior_type=prior_type)
    bg, info = gmm.fit_bayesian(jax.random.key(0), X, k, covariance_type=covariance_type,
                                weight_concentration_prior_type=prior_type, init=resp0, max_iter=iters, tol=0.0)
    np.testing.assert_allclose(np.asarray(info.history), lbs, rtol=1e-8)
    for ours, theirs in [(bg.means, sk.means_), (bg.covariances, sk.covariances_), (bg.weights, sk.weights_),
                         (bg.mean_precision, sk.mean_precision_), (bg.precisions_cholesky, sk.precisions_cholesky_)]:
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-8, atol=1e-10)
    wc = sk.weight_concentration_
    np.testing.assert_allclose(np.asarray(bg.weight_concentration), np.stack(wc) if isinstance(wc, tuple) else wc,
                               rtol=1e-8)
    np.testing.assert_allclose(np.broadcast_to(np.asarray(bg.degrees_of_freedom), (k,)),
                               np.broadcast_to(sk.degrees_of_freedom_, (k,)), rtol=1e-8)
    # scoring uses the variational expectations, as scikit-learn's does
    np.testing.assert_allclose(np.asarray(gmm.log_prob(bg, X)), sk.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(gmm.predict_proba(bg, X)), sk.predict_proba(X), atol=1e-8)
    np.testing.assert_array_equal(np.asarray(gmm.predict(bg, X)), sk.predict(X))
    np.testing.assert_allclose(float(gmm.score(bg, X)), sk.score(X), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(bg.mean_prior), X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(bg.covariance_prior), sk.covariance_prior_, rtol=1e-10)


@pytest.mark.parametrize("prior_type", gmm.PRIOR_TYPES)
def test_superfluous_components_fade(prior_type):
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + rng.normal(size=(200, 2)) for c in centres])
    bg, info = gmm.fit_bayesian(jax.random.key(0), X, 10, weight_concentration_prior_type=prior_type, max_iter=500)
    w = np.sort(np.asarray(bg.weights))[::-1]
    assert bool(info.converged)
    np.testing.assert_allclose(w[:3], 1 / 3, atol=0.02)
    assert np.all(w[3:] < 1e-2), w
    sk = SkBGM(n_components=10, weight_concentration_prior_type=prior_type, max_iter=500, random_state=0).fit(X)
    assert np.sum(sk.weights_ > 1e-2) == np.sum(w > 1e-2) == 3
    Xs, labels = gmm.sample(jax.random.key(1), bg, 3000)
    freq = np.bincount(np.asarray(labels), minlength=10) / 3000
    np.testing.assert_allclose(freq, np.asarray(bg.weights), atol=0.03)  # drawn by the expected weights


def test_priors_given_are_used_and_bad_priors_raise():
    X = _data()
    d = X.shape[1]
    bg, _ = gmm.fit_bayesian(jax.random.key(0), X, 3, mean_prior=np.ones(d), covariance_prior=2 * np.eye(d),
                             degrees_of_freedom_prior=d + 1.5, mean_precision_prior=0.5, weight_concentration_prior=2.0)
    np.testing.assert_allclose(np.asarray(bg.mean_prior), np.ones(d))
    np.testing.assert_allclose(np.asarray(bg.covariance_prior), 2 * np.eye(d))
    assert float(bg.degrees_of_freedom_prior) == d + 1.5 and float(bg.mean_precision_prior) == 0.5
    key = jax.random.key(0)
    for kw, msg in [({"mean_prior": np.ones(d + 1)}, "mean_prior must have shape"),
                    ({"covariance_prior": np.ones((d, d))}, "covariance_prior must be symmetric, positive-definite"),
                    ({"covariance_prior": np.eye(d + 1)}, "covariance_prior must have shape"),
                    ({"covariance_type": "diag", "covariance_prior": -np.ones(d)}, "covariance_prior must be positive"),
                    ({"mean_precision_prior": 0.0}, "mean_precision_prior must be positive"),
                    ({"weight_concentration_prior": -1.0}, "weight_concentration_prior must be positive"),
                    ({"degrees_of_freedom_prior": d - 1.0}, "should be greater than 2"),
                    ({"weight_concentration_prior_type": "pitman_yor"}, "weight_concentration_prior_type"),
                    ({"init": np.ones((5, 3))}, "initial responsibilities must have shape")]:
        with pytest.raises(ValueError, match=msg):
            gmm.fit_bayesian(key, X, 3, **kw)
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        gmm.fit_bayesian(key, bad, 3)


def test_restarts_weights_and_jit():
    X = _data(3)
    key = jax.random.key(4)
    one = gmm.fit_bayesian(key, X, 4, n_init=1)[1]
    many = gmm.fit_bayesian(key, X, 4, n_init=4)[1]
    assert float(many.lower_bound) >= float(one.lower_bound) - 1e-9
    # integer sample weights = repeated rows
    rng = np.random.default_rng(5)
    w = rng.integers(1, 4, len(X))
    resp0 = rng.dirichlet(np.ones(3), size=len(X))
    a, ia = gmm.fit_bayesian(key, X, 3, init=resp0, sample_weight=w.astype(float), max_iter=20, tol=0.0)
    b, ib = gmm.fit_bayesian(key, np.repeat(X, w, 0), 3, init=np.repeat(resp0, w, 0), max_iter=20, tol=0.0)
    np.testing.assert_allclose(np.asarray(a.means), np.asarray(b.means), rtol=1e-9)
    np.testing.assert_allclose(float(ia.lower_bound), float(ib.lower_bound), rtol=1e-9)
    # under jit: NaN data is flagged, not raised
    j = jax.jit(lambda X: gmm.fit_bayesian(key, X, 3, max_iter=10)[1].converged)
    assert bool(j(X)) in (True, False)
    assert not bool(j(np.where(np.arange(len(X))[:, None] == 3, np.nan, X)))


@pytest.mark.slow
def test_estimator_passes_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator

    from toolkit.estimators import BayesianGaussianMixture

    check_estimator(BayesianGaussianMixture())


def test_estimator_attributes_and_warm_start():
    import warnings

    from toolkit.estimators import BayesianGaussianMixture

    X = _data(6)
    for ct, pt in (("full", "dirichlet_process"), ("tied", "dirichlet_distribution")):
        if True:
            ours = BayesianGaussianMixture(n_components=3, covariance_type=ct, weight_concentration_prior_type=pt,
                                           random_state=0).fit(X)
            theirs = SkBGM(n_components=3, covariance_type=ct, weight_concentration_prior_type=pt,
                           random_state=0).fit(X)
            for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
                         "mean_precision_", "degrees_of_freedom_", "covariance_prior_", "mean_prior_",
                         "weight_concentration_prior_", "degrees_of_freedom_prior_", "mean_precision_prior_"):
                assert np.shape(getattr(ours, name)) == np.shape(getattr(theirs, name)), (ct, pt, name)
            assert type(ours.weight_concentration_) is type(theirs.weight_concentration_)
            assert ours.means_.dtype == np.float64 and ours.predict(X).shape == (len(X),)
    m = BayesianGaussianMixture(n_components=3, warm_start=True, max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lbs = [m.fit(X).lower_bound_ for _ in range(15)]
    assert np.all(np.diff(lbs) >= -1e-9)


def test_shrinkage_in_the_bayesian_fit():
    from toolkit.estimators import BayesianGaussianMixture

    X = _data(7) * np.array([1.0, 50.0, 0.02])  # very different scales
    resp0 = np.random.default_rng(8).dirichlet(np.ones(3), size=len(X))
    kw = dict(init=resp0, max_iter=30, tol=0.0)
    none = gmm.fit_bayesian(jax.random.key(0), X, 3, **kw)[0]
    zero = gmm.fit_bayesian(jax.random.key(0), X, 3, shrinkage=0.0, **kw)[0]
    np.testing.assert_allclose(np.asarray(zero.covariances), np.asarray(none.covariances), rtol=1e-12)
    for amount, target in (("oas", "identity"), ("ledoit_wolf", "diagonal"), (0.5, "diagonal")):
        bg, info = gmm.fit_bayesian(jax.random.key(0), X, 3, shrinkage=amount, shrinkage_target=target, **kw)
        assert np.all(np.isfinite(np.asarray(bg.covariances))) and np.isfinite(float(info.lower_bound))
    # with the diagonal target a fully shrunk scatter is diagonal: one iteration from given
    # responsibilities gives W0 + n_k diag(S_k) + the means' term, exactly
    one = gmm.fit_bayesian(jax.random.key(0), X, 3, shrinkage=1.0, shrinkage_target="diagonal", covariance_type="diag",
                           init=resp0, max_iter=1, tol=0.0)[0]
    ref = gmm.fit_bayesian(jax.random.key(0), X, 3, covariance_type="diag", init=resp0, max_iter=1, tol=0.0)[0]
    np.testing.assert_allclose(np.asarray(one.covariances), np.asarray(ref.covariances), rtol=1e-12)
    est = BayesianGaussianMixture(n_components=3, shrinkage="oas", shrinkage_target="diagonal", random_state=0).fit(X)
    assert np.all(np.isfinite(est.covariances_))


@pytest.mark.parametrize("covariance_type,prior_type", [("full", "dirichlet_process"), ("diag", "dirichlet_distribution")])
def test_streaming_equals_in_memory(covariance_type, prior_type):
    X = _data(9)
    np.random.default_rng(10).shuffle(X)
    kw = dict(covariance_type=covariance_type, weight_concentration_prior_type=prior_type, max_iter=30, tol=0.0)
    for init, extra in (("random", {}), ("kmeans++", {"mean_prior": np.ones(3), "shrinkage": "oas"
                                                      if covariance_type in ("full", "tied") else 0.2})):
        a, ia = gmm.fit_bayesian(jax.random.key(0), X, 4, init=init, **kw, **extra)
        b, ib = gmm.fit_bayesian_batches(jax.random.key(0), [X[:150], X[150:320], X[320:]], 4, init=init,
                                         **kw, **extra)
        np.testing.assert_allclose(np.asarray(ib.history), np.asarray(ia.history), rtol=1e-10)
        for f in ("means", "covariances", "weight_concentration", "mean_prior", "covariance_prior"):
            np.testing.assert_allclose(np.asarray(getattr(b, f)), np.asarray(getattr(a, f)), rtol=1e-9, atol=1e-11)


def test_convergence_floor_is_the_bound_round_off():
    import jax.numpy as jnp

    from toolkit.gmm.em import _converged

    big32 = jnp.float32(-20000.0)
    step32 = jnp.nextafter(big32, jnp.float32(0))  # one ulp: 2e-3, above tol below
    assert bool(_converged(step32, big32, jnp.float32(1e-3)))  # float32 cannot resolve 1e-3 here
    assert not bool(_converged(step32, big32, jnp.float32(0.0)))  # tol=0: run max_iter
    assert not bool(_converged(jnp.float64(-20000.0), jnp.float64(-20000.002), jnp.float64(1e-3)))
    assert bool(_converged(jnp.float64(-20000.0), jnp.float64(-20000.0005), jnp.float64(1e-3)))
