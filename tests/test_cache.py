"""toolkit.enable_compilation_cache: a second fresh process loads what the first compiled."""
import os
import subprocess
import sys

_SCRIPT = """
import sys, time, jax, numpy as np
jax.config.update("jax_enable_x64", True)
import toolkit
from toolkit import gmm
assert toolkit.enable_compilation_cache(sys.argv[1]).is_dir()
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if "cache_hits" in name else None)
X = np.random.default_rng(0).normal(size=(200, 2))
g, info = gmm.fit(jax.random.key(0), X, 2)
print(len(hits))
"""


def test_second_process_loads_from_the_cache(tmp_path):
    env = {**os.environ, "TOOLKIT_JAX_CACHE": "1"}
    runs = [subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "cache")], capture_output=True, text=True,
                           timeout=600, env=env) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert any((tmp_path / "cache").iterdir()), "nothing was written to the cache"
    assert int(runs[0].stdout.split()[-1]) == 0 and int(runs[1].stdout.split()[-1]) > 0
