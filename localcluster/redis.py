"""Redis for the real node: the broker behind the Dapr state stores and pub/subs the tests declare.

Debian's redis-server runs on the host, bound to the node's address only (pods reach it, nothing
outside does), with a password the pods get only through a Kubernetes Secret, no persistence (a
cluster's data lives and dies with it), and its own working directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from .procs import ClusterError, Processes, run

PORT = 6379


def missing() -> str | None:
    if not shutil.which("redis-server", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        return "redis-server is missing (Debian package redis-server; `make host-deps` installs it)"
    return None


class Redis:
    def __init__(self, workdir: Path, host: str):
        self.dir = workdir / "redis"
        self.host = host
        self.port = PORT
        self.password = secrets.token_urlsafe(24)
        self.procs = Processes(workdir / "logs")

    @property
    def password_file(self) -> Path:
        """The password alone, mode 0600, for a person making the Secret by hand."""
        return self.dir / "password"

    @property
    def address(self) -> str:
        """host:port, as Dapr's redis components take it (``redisHost``)."""
        return f"{self.host}:{self.port}"

    def secret(self, name: str = "redis") -> dict[str, Any]:
        """The password as a Secret manifest (key ``password``), for a namespace's Components."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"password": self.password},
        }

    def component(self, name: str, type_: str, secret: str = "redis") -> dict[str, Any]:
        """A Dapr Component on this Redis (``state.redis`` or ``pubsub.redis``), its password a
        reference to ``secret``: what a platform team would provide in a namespace."""
        return {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {
                "type": type_,
                "version": "v1",
                "metadata": [
                    {"name": "redisHost", "value": self.address},
                    {"name": "redisPassword", "secretKeyRef": {"name": secret, "key": "password"}},
                ],
            },
        }

    def start(self) -> None:
        problem = missing()
        if problem:
            raise ClusterError(problem)
        self.dir.mkdir(parents=True, exist_ok=True)
        # On the command line the password would show in `ps`; a 0600 file keeps it private.
        self.password_file.touch(mode=0o600)
        self.password_file.write_text(self.password + "\n")
        conf = self.dir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {self.port}",
                    f"requirepass {self.password}",
                    f"dir {self.dir}",
                    'save ""',
                    "appendonly no",
                    "daemonize no",
                    "supervised no",
                    "protected-mode yes",
                    "logfile ''",
                    "",
                ]
            )
        )
        redis_server = shutil.which("redis-server", path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert redis_server is not None
        self.procs.spawn("redis", [redis_server, str(conf)], cwd=self.dir)
        self.procs.wait("redis to answer PING", self.ping, timeout=30, log_of="redis")

    def stop(self) -> None:
        self.procs.stop()

    def ping(self) -> bool:
        try:
            return self.cli("PING") == "PONG"
        except ClusterError:
            return False  # not listening yet

    def cli(self, *args: str) -> str:
        """Run one command with Debian's redis-cli (the password travels in its environment,
        not its argv) and return its output, e.g. ``cli("XRANGE", "answers", "-", "+")``."""
        return run(
            ["redis-cli", "-h", self.host, "-p", str(self.port), "--no-auth-warning", *args],
            env={**os.environ, "REDISCLI_AUTH": self.password},
            timeout=30,
        ).stdout.strip()
