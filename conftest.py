"""Root pytest configuration, for the tests and the docstring examples alike: float64 on,
CPU only, JAX's persistent compilation cache (TOOLKIT_JAX_CACHE=0 turns it off), and the
names docstring examples use."""
import gc
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import toolkit  # noqa: E402

# Compilation dominates a cold test run; the persistent cache makes reruns fast.
if os.environ.get("TOOLKIT_JAX_CACHE", "1") != "0":
    toolkit.enable_compilation_cache()


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(jax=jax, jnp=jnp, np=np)


@pytest.fixture(autouse=True, scope="module")
def _release_executables():
    """Drop every compiled executable after each test module. XLA's CPU backend maps a
    few memory regions per executable and keeps them while the executable lives; a full
    run compiles thousands, and at the kernel's limit (vm.max_map_count, 65530 by default)
    XLA aborts mid-compile. Later modules reload what they share from the persistent cache."""
    yield
    jax.clear_caches()
    gc.collect()
