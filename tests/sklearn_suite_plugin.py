"""pytest plugin: run scikit-learn's own GaussianMixture tests against toolkit's drop-in.

Loaded by tests/test_sklearn_suite.py (``-p sklearn_suite_plugin``). It swaps the class
the test modules import for ``toolkit.estimators.GaussianMixture`` and deselects the
tests that are about scikit-learn's private internals, each with its reason.
"""
import pytest

# test function name -> why it does not apply to a drop-in
NOT_APPLICABLE = {
    "test_gaussian_mixture_precisions_init": "calls the private _set_parameters",
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
        "mocks the private _estimate_gaussian_parameters",
}


def pytest_collection_modifyitems(session, config, items):
    import sklearn.mixture.tests.test_gaussian_mixture as tgm

    from toolkit.estimators import GaussianMixture

    tgm.GaussianMixture = GaussianMixture
    keep, dropped = [], []
    for item in items:
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        (dropped if name in NOT_APPLICABLE else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_report_header(config):
    return ["sklearn GaussianMixture suite against toolkit.estimators.GaussianMixture; not applicable: "
            + ", ".join(f"{k} ({v})" for k, v in NOT_APPLICABLE.items())]


@pytest.fixture(autouse=True)
def _toolkit_marker():
    yield
