"""A private Docker engine for image builds: started for a build, stopped after it.

Debian's ``docker.io`` gives a dockerd and a 20.10 CLI whose built-in BuildKit handles our
Dockerfiles (``RUN --mount``). The engine gets a socket, exec root and pid file of its own, keeps
its images in the cache (so warm builds reuse layers), and is told to leave the host's network
alone: no iptables rules, no docker0 bridge, no ip_forward. Builds therefore use the host's
network (``--network=host``), which is all pip needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .paths import CACHE_ROOT
from .procs import ClusterError, Processes, run

DOCKER_CLI = "/usr/bin/docker"  # Debian's; a CLI elsewhere on PATH may lack BuildKit
RUN_DIR = Path("/run/aiagent-localcluster/docker")


def missing() -> str | None:
    """Why this machine cannot build images here, or None."""
    if os.geteuid() != 0:
        return "building images needs root (a private dockerd)"
    for tool in ("/usr/sbin/dockerd", DOCKER_CLI):
        if not Path(tool).exists():
            return f"{tool} is missing (Debian package docker.io)"
    return None


class Docker:
    """The CLI bound to one running engine."""

    def __init__(self, host: str):
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "1"}

    def __call__(self, *args: str, timeout: float = 1800) -> str:
        return run([DOCKER_CLI, *args], env=self.env, timeout=timeout).stdout

    def image_id(self, ref: str) -> str | None:
        result = run(
            [DOCKER_CLI, "image", "inspect", "--format", "{{.Id}}", ref], env=self.env, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else None


@contextlib.contextmanager
def engine() -> Iterator[Docker]:
    """Start dockerd (data in the cache), yield a CLI for it, stop it and remove its run dir."""
    reason = missing()
    if reason:
        raise ClusterError(reason)
    (CACHE_ROOT / "docker").mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / "docker" / ".lock", "w") as lock:
        # One engine per data root: a second build (a prefetch, another terminal) waits, then
        # finds everything in the layer cache.
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _engine() as docker:
            yield docker


@contextlib.contextmanager
def _engine() -> Iterator[Docker]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    sock = RUN_DIR / "docker.sock"
    procs = Processes(CACHE_ROOT / "docker" / "logs")
    # dockerd finds its containerd and runc on PATH; Debian puts runc in /usr/sbin.
    env = {**os.environ, "PATH": f"/usr/sbin:/usr/bin:/sbin:/bin:{os.environ.get('PATH', '')}"}
    procs.spawn(
        "dockerd",
        [
            "/usr/sbin/dockerd",
            f"--data-root={CACHE_ROOT / 'docker' / 'data'}",
            f"--exec-root={RUN_DIR / 'exec'}",
            f"--pidfile={RUN_DIR / 'dockerd.pid'}",
            f"--host=unix://{sock}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
            "--userland-proxy=false",
            "--storage-driver=overlay2",
        ],
        env=env,
    )
    docker = Docker(f"unix://{sock}")
    try:
        procs.wait(
            "dockerd",
            lambda: run([DOCKER_CLI, "version"], env=docker.env, check=False).returncode == 0,
            timeout=60,
            log_of="dockerd",
        )
        yield docker
    finally:
        procs.stop(timeout=30)
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        try:
            RUN_DIR.parent.rmdir()  # shared with the node's run dir: only when neither uses it
        except OSError:
            pass
