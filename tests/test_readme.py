"""The README's Python blocks run as written, in order, in one namespace (as a reader
pasting them into one notebook would)."""
import re
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks may write files (big.npy)
    blocks = [textwrap.dedent(b) for b in
              re.findall(r"^ *```python\n(.*?)^ *```", (ROOT / "README.md").read_text(), flags=re.S | re.M)]
    assert len(blocks) >= 5
    ns: dict = {}
    np.random.seed(0)
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md block {i + 1}", "exec"), ns)
        except Exception as exc:  # name the block in the failure
            raise AssertionError(f"README.md python block {i + 1} fails: {exc!r}") from exc
