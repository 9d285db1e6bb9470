"""The Go-built binaries (build.sh) and the pins they come from (versions.env)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from .paths import CACHE_ROOT, HERE
from .procs import ClusterError


def build(*, timeout: float | None = None) -> Path:
    """Run build.sh (a no-op when the cache is warm) and return its bin dir.

    Progress goes to our stderr; a cold build takes tens of minutes, so callers may want a timeout.
    """
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise ClusterError(
            f"build.sh failed with exit code {out.returncode} (see its output above)"
        )
    return Path(out.stdout.strip().splitlines()[-1])


def cached_bin_dir() -> Path:
    """Where build.sh puts (or has put) the binaries for the current pins, without building."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh"), "--print-dir"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


@functools.cache
def versions() -> dict[str, str]:
    """versions.env as a dict: the one place every version is pinned."""
    pins = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pins[name.strip()] = value.strip()
    return pins


def kubernetes_source() -> Path:
    """The k8s.io/kubernetes module as build.sh downloaded it (pause.c lives in it)."""
    path = CACHE_ROOT / "gomodcache" / f"k8s.io/kubernetes@{versions()['KUBERNETES_VERSION']}"
    if not path.is_dir():
        raise ClusterError(f"{path} is missing: run localcluster/build.sh first")
    return path
