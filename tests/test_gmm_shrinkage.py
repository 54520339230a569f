"""Shrinkage targets of toolkit.gmm: the diagonal target against closed forms, the
definitional Ledoit-Wolf / OAS intensities (numpy loops), streaming and the estimator."""
import numpy as np
import pytest

from toolkit import gmm
from toolkit.estimators import GaussianMixture


def _data(n=200, d=4, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d)) * np.array([1.0, 3.0, 0.3, 10.0])  # features of very different scales
    return rng.normal(size=(n, d)) @ A + rng.normal(size=d)


def _one_component(X, **kw):
    """m_step with every point in one component: the shrunk sample covariance."""
    log_resp = np.zeros((len(X), 1))
    return np.asarray(gmm.m_step(X, log_resp, reg_covar=0.0, **kw).covariances[0])


def test_fixed_diagonal_shrinkage_scales_off_diagonals_only():
    X = _data()
    S = np.cov(X.T, bias=True)
    for a in (0.0, 0.3, 1.0):
        got = _one_component(X, shrinkage=a, shrinkage_target="diagonal")
        want = (1 - a) * S + a * np.diag(np.diag(S))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_diagonal_target_is_the_identity_target_when_the_diagonal_is_constant():
    X = _data()
    X = (X - X.mean(0)) / X.std(0)  # every feature's variance exactly 1: diag(S) = (tr S / d) I
    for a in (0.2, 0.7):
        np.testing.assert_allclose(_one_component(X, shrinkage=a, shrinkage_target="diagonal"),
                                   _one_component(X, shrinkage=a), rtol=1e-12, atol=1e-14)
    # OAS: the same target; its intensity for the diagonal target is derived for that
    # target, so it may differ from the identity's -- both shrink only off-diagonals here
    for rule in ("oas", "ledoit_wolf"):
        for target in ("identity", "diagonal"):
            C = _one_component(X, shrinkage=rule, shrinkage_target=target)
            np.testing.assert_allclose(np.diag(C), 1.0, rtol=1e-12)


def _intensity(C, S):
    """The a of C = (1 - a) S + a diag(S), read off the off-diagonal entries."""
    off = ~np.eye(len(S), dtype=bool)
    return 1 - np.sum(C[off] * S[off]) / np.sum(S[off] ** 2)


def test_ledoit_wolf_and_oas_diagonal_intensities_match_their_definitions():
    for seed, n in ((1, 30), (2, 200), (3, 2000)):
        X = _data(n=n, seed=seed)
        n, d = X.shape
        Xc = X - X.mean(0)
        S = Xc.T @ Xc / n
        off = ~np.eye(d, dtype=bool)
        delta = np.sum(S[off] ** 2) / d
        beta = sum(np.sum((np.outer(x, x) - S)[off] ** 2) for x in Xc) / (d * n * n)
        lw = min(beta, delta) / delta
        B = np.sum(S[off] ** 2)
        v = np.diag(S)
        Cc = np.sum(np.outer(v, v)[off])
        oas = min((B + Cc) / ((n + 1) * B + Cc), 1.0)
        got_lw = _intensity(_one_component(X, shrinkage="ledoit_wolf", shrinkage_target="diagonal"), S)
        got_oas = _intensity(_one_component(X, shrinkage="oas", shrinkage_target="diagonal"), S)
        np.testing.assert_allclose(got_lw, lw, rtol=1e-8)
        np.testing.assert_allclose(got_oas, oas, rtol=1e-8)
        assert 0 < got_lw < 1 and 0 < got_oas < 1
    # more data, less shrinkage
    lws = [_intensity(_one_component(_data(n=n, seed=4)[:n], shrinkage="ledoit_wolf", shrinkage_target="diagonal"),
                      np.cov(_data(n=n, seed=4).T, bias=True)) for n in (30, 3000)]
    assert lws[1] < lws[0]


@pytest.mark.parametrize("shrinkage", ["ledoit_wolf", "oas", 0.3])
def test_fit_and_fit_batches_agree_with_the_diagonal_target(shrinkage):
    import jax

    rng = np.random.default_rng(5)
    X = np.concatenate([_data(300, seed=6), _data(300, seed=7) + 20])
    rng.shuffle(X)
    kw = dict(covariance_type="full", shrinkage=shrinkage, shrinkage_target="diagonal", init="random", max_iter=20,
              tol=0.0)
    g1, i1 = gmm.fit(jax.random.key(0), X, 2, **kw)
    g2, i2 = gmm.fit_batches(jax.random.key(0), [X[:250], X[250:]], 2, **kw)
    np.testing.assert_allclose(g1.covariances, g2.covariances, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(i1.lower_bound, i2.lower_bound, rtol=1e-10)
    tied, _ = gmm.fit(jax.random.key(0), X, 2, **{**kw, "covariance_type": "tied"})
    assert np.all(np.isfinite(np.asarray(tied.covariances)))


def test_bad_target_and_the_estimator():
    X = _data()
    with pytest.raises(ValueError, match="shrinkage_target='eye'"):
        gmm.m_step(X, np.zeros((len(X), 1)), shrinkage=0.5, shrinkage_target="eye")
    gm = GaussianMixture(2, shrinkage="ledoit_wolf", shrinkage_target="diagonal", random_state=0).fit(X)
    assert gm.get_params()["shrinkage_target"] == "diagonal"
    ref = GaussianMixture(2, shrinkage="ledoit_wolf", random_state=0).fit(X)
    assert np.all(np.isfinite(gm.covariances_)) and not np.allclose(gm.covariances_, ref.covariances_)
    # diagonal types are their own diagonal target: unchanged
    a = gmm.m_step(X, np.zeros((len(X), 1)), covariance_type="diag", shrinkage=0.5, shrinkage_target="diagonal")
    b = gmm.m_step(X, np.zeros((len(X), 1)), covariance_type="diag")
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-12)
