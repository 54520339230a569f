"""The README's Python blocks run as written, in order, in one fresh process (as a reader
pasting them into one new notebook would).

A subprocess rather than this one: late in a full run (after ~250 tests compiled in the
same process) jaxlib 0.12's XLA CPU compiler segfaulted three times in these blocks,
never when they ran in a process of their own; a crash there must not take the whole
test session down with it.
"""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_RUNNER = """
import sys, json, numpy as np, jax
jax.config.update("jax_enable_x64", True)
blocks = json.load(open(sys.argv[1]))
ns = {}
np.random.seed(0)
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"README.md block {i + 1}", "exec"), ns)
    except Exception as exc:
        print(f"README.md python block {i + 1} fails: {exc!r}")
        raise
print("all blocks ran")
"""


def test_readme_python_blocks_run(tmp_path):
    import json

    blocks = [textwrap.dedent(b) for b in
              re.findall(r"^ *```python\n(.*?)^ *```", (ROOT / "README.md").read_text(), flags=re.S | re.M)]
    assert len(blocks) >= 5
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(tmp_path / "blocks.json")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert out.stdout.strip().endswith("all blocks ran")
