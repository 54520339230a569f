"""A peer's own test file, from its source distribution on the package index.

scikit-image's wheels ship no tests, so the suites that run a peer's tests against
toolkit's drop-ins take them from the sdist of the installed version: found on the
simple index (PEP 503), checked against the index's sha256, cached under
``~/.cache/toolkit-tests`` (``TOOLKIT_TEST_CACHE`` overrides), and read from the archive.
"""
from __future__ import annotations

import hashlib
import os
import re
import tarfile
import urllib.request
from importlib.metadata import version
from pathlib import Path

INDEX = os.environ.get("TOOLKIT_PEER_INDEX", "https://pypi.org/simple")


def _cache_dir() -> Path:
    d = Path(os.environ.get("TOOLKIT_TEST_CACHE", Path.home() / ".cache" / "toolkit-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def sdist(dist: str) -> Path:
    """The sdist of the installed version of ``dist``, downloaded once and verified."""
    ver = version(dist)
    stem = f"{dist.replace('-', '_')}-{ver}.tar.gz"
    path = _cache_dir() / stem
    if path.exists():
        return path
    with urllib.request.urlopen(f"{INDEX}/{dist}/", timeout=120) as r:
        page = r.read().decode()
    m = re.search(r'href="([^"]*/' + re.escape(stem) + r')#sha256=([0-9a-f]{64})"', page)
    if not m:
        raise FileNotFoundError(f"no sdist {stem} on {INDEX}/{dist}/")
    url, digest = m.groups()
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise OSError(f"{url}: sha256 mismatch")
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def peer_file(dist: str, member: str, dest: Path) -> Path:
    """Extract ``member`` (a path inside the sdist's top folder) to ``dest``; its path."""
    archive = sdist(dist)
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        data = tar.extractfile(f"{top}/{member}").read()
    out = Path(dest) / Path(member).name
    out.write_bytes(data)
    return out


def function_name(item) -> str:
    """A collected test's function name, without its parameters (a ``deselect`` key)."""
    return getattr(item, "originalname", None) or item.name.split("[")[0]


def deselect(config, items, not_applicable, key=lambda item: item.name):
    """Deselect (as ``-k`` would, so they are counted and reported) the collected tests
    whose ``key`` is in ``not_applicable`` (name -> reason)."""
    keep, dropped = [], []
    for item in items:
        (dropped if key(item) in not_applicable else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def header(what, not_applicable):
    """The report-header line of a peer suite: what runs against what, and the exclusions."""
    return [f"{what}; not applicable: " + "; ".join(f"{k} ({v})" for k, v in not_applicable.items())]
