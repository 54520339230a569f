"""pytest plugin: run scikit-image's own model tests against toolkit's drop-ins.

Loaded by tests/test_skimage_suite.py (``-p skimage_suite_plugin``) on
``tests/skimage/measure/test_fit.py`` from scikit-image's sdist. Before the module is
imported it puts ``toolkit.conic.EllipseModel`` and ``CircleModel`` where the module
imports them from (``skimage.measure``), so every test of those classes, and of
``skimage.measure.ransac`` with them, runs against ours. The tests of scikit-image's
other classes (LineModelND, AffineTransform) run unchanged. Exclusions, with reasons:
"""
import pytest

from peer_sources import deselect, header

# test id -> why it does not apply
NOT_APPLICABLE = {
    "test_ellipse_parameter_stability[angle180]":
        "expects theta = pi for an ellipse turned by float(pi), whose orientation is -1.2e-16 mod pi: a "
        "round-off-level wrap at the edge of [0, pi). Our fit returns 3.4e-17 (error 1.6e-16 rad); the "
        "test asks for the other side of the wrap, which scikit-image reaches by the sign of its own "
        "round-off. tests/test_conic.py checks the angle mod pi to 1e-12 at every degree instead.",
}


def pytest_configure(config):
    import skimage.measure

    from toolkit.conic import CircleModel, EllipseModel

    skimage.measure.CircleModel = CircleModel
    skimage.measure.EllipseModel = EllipseModel


def pytest_collection_modifyitems(session, config, items):
    deselect(config, items, NOT_APPLICABLE)


def pytest_report_header(config):
    return header("scikit-image test_fit.py against toolkit.conic.EllipseModel / CircleModel", NOT_APPLICABLE)


@pytest.fixture(autouse=True)
def _uses_toolkit():
    import skimage.measure

    assert skimage.measure.EllipseModel.__module__ == "toolkit.conic.models"
    yield
