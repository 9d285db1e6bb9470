"""The Go-built binaries (build.sh) and the pins they come from (versions.env)."""

from __future__ import annotations

import fcntl
import functools
import os
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


def go(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    """`go` in the shared Go environment (go-env.sh: caches in CACHE_ROOT, no Go downloads)."""
    result = subprocess.run(
        ["bash", "-c", f'. "{HERE / "go-env.sh"}" && exec go "$@"', "go", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if result.returncode != 0:
        raise ClusterError(f"go {' '.join(args)} failed:\n{result.stderr.strip()[-3000:]}")
    return result.stdout


def kubernetes_source() -> Path:
    """The k8s.io/kubernetes module (pause.c lives in it), downloaded if build.sh has not yet."""
    version = versions()["KUBERNETES_VERSION"]
    path = CACHE_ROOT / "gomodcache" / f"k8s.io/kubernetes@{version}"
    if not path.is_dir():
        go("mod", "download", f"k8s.io/kubernetes@{version}")
    return path


def dockerfile_frontend() -> Path:
    """BuildKit's Dockerfile frontend binary, built once per pinned version. Apart from build.sh
    so image builds can run while the Kubernetes binaries compile."""
    version = versions()["BUILDKIT_VERSION"]
    directory = CACHE_ROOT / "bin" / f"dockerfile-frontend-{version}"
    binary = directory / "dockerfile-frontend"
    if binary.exists():
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            stage = directory / f".tmp.{os.getpid()}"
            package = "github.com/moby/buildkit/frontend/dockerfile/cmd/dockerfile-frontend"
            go(
                "install",
                "-trimpath",
                "-ldflags=-s -w",
                f"{package}@{version}",
                env={**os.environ, "GOBIN": str(stage)},
            )
            (stage / "dockerfile-frontend").rename(binary)
            stage.rmdir()
    return binary
