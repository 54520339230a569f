"""pytest plugin: run scipy's own Rotation and Slerp tests against toolkit's drop-ins.

Loaded by tests/test_scipy_suite.py (``-p scipy_suite_plugin``) on the installed
``scipy.spatial.transform.tests.test_rotation``, with scipy's own conftest (numpy
backend: ``SCIPY_ARRAY_API`` unset). After collection it points the module's
``Rotation`` and ``Slerp`` at ``toolkit.so3.Rotation`` and ``Slerp``, so every test body
runs against ours (the decorators, evaluated at import, read scipy's capability tables).
Exclusions, with reasons:
"""
import pytest

from peer_sources import deselect, function_name, header

# test function name -> why it does not apply to a drop-in
NOT_APPLICABLE = {
    "test_cython_backend_selection": "asserts which of scipy's private backends (`_backend`) a Rotation uses",
}


def pytest_collection_modifyitems(session, config, items):
    import scipy.spatial.transform.tests.test_rotation as tr

    from toolkit.so3 import Rotation, Slerp

    tr.Rotation = Rotation
    tr.Slerp = Slerp
    deselect(config, items, NOT_APPLICABLE, key=function_name)


def pytest_report_header(config):
    return header("scipy's test_rotation.py against toolkit.so3.Rotation / Slerp", NOT_APPLICABLE)


@pytest.fixture(autouse=True)
def _uses_toolkit():
    import scipy.spatial.transform.tests.test_rotation as tr

    assert tr.Rotation.__module__ == "toolkit.so3.rotation"
    yield
