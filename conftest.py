"""Root pytest configuration, for the tests and the docstring examples alike: float64 on,
CPU only, and the names docstring examples use.

JAX's persistent compilation cache is off in the tests unless TOOLKIT_JAX_CACHE=1: with
jaxlib 0.12 on CPU, writing an executable to the cache (``executable.serialize()``)
segfaulted the pytest process twice, reproducibly at the same test late in a full cold
run and never in isolation. The variable also reaches the runner and the subprocesses
the tests start, so none of them writes to the cache either.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOOLKIT_JAX_CACHE", "0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import toolkit  # noqa: E402

if os.environ["TOOLKIT_JAX_CACHE"] != "0":  # opt in: reruns then start fast
    toolkit.enable_compilation_cache()


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, np=np)
