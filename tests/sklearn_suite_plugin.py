"""pytest plugin: run scikit-learn's own mixture tests against toolkit's drop-ins.

Loaded by tests/test_sklearn_suite.py (``-p sklearn_suite_plugin``). It swaps the
classes the test modules import for ``toolkit.estimators.GaussianMixture`` and
``BayesianGaussianMixture`` and deselects the tests that are about scikit-learn's
private internals, each with its reason.
"""
import pytest

from peer_sources import deselect, function_name, header

# test function name -> why it does not apply to a drop-in
NOT_APPLICABLE = {
    "test_gaussian_mixture_precisions_init": "calls the private _set_parameters",
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
        "mocks the private _estimate_gaussian_parameters",
    "test_compare_covar_type": "calls the private _check_parameters and _initialize_parameters",
}


def pytest_collection_modifyitems(session, config, items):
    import sklearn.mixture.tests.test_bayesian_mixture as tbm
    import sklearn.mixture.tests.test_gaussian_mixture as tgm

    from toolkit.estimators import BayesianGaussianMixture, GaussianMixture

    tgm.GaussianMixture = GaussianMixture
    tbm.BayesianGaussianMixture = BayesianGaussianMixture
    deselect(config, items, NOT_APPLICABLE, key=function_name)


def pytest_report_header(config):
    return header("sklearn's mixture suites against toolkit.estimators' GaussianMixture and "
                  "BayesianGaussianMixture", NOT_APPLICABLE)


@pytest.fixture(autouse=True, scope="module")
def _release_executables():
    """Drop every compiled executable after each test module, as tests/conftest.py does:
    XLA's CPU backend maps memory regions per live executable, and two modules' worth of
    fits in one process reached the kernel's limit (a segfault while writing the cache)."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
