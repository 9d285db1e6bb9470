"""Child processes of the local cluster: free ports, process groups, log tails, commands.

Every long-running component runs in its own process group (so one kill stops what it forked) and
dies with the thread that started it (Linux), so a killed test run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ClusterError(RuntimeError):
    """A part of the local cluster failed to build or start; the message says which and why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (a small race remains until the component binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


_LIBC: ctypes.CDLL | None
try:  # loaded here, not in the forked child, where loading a library is not safe
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: have Linux SIGKILL the child when the thread that started it dies (even by
    SIGKILL), so a killed test run leaves no apiserver behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run(
    cmd: Sequence[str], *, check: bool = True, timeout: float = 600, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a short command, capture its output; on failure raise ClusterError with its stderr."""
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    result: subprocess.CompletedProcess[str] = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )
    if check and result.returncode != 0:
        raise ClusterError(
            f"{' '.join(cmd)} failed (exit {result.returncode}):\n"
            f"{(result.stderr or result.stdout).strip()[-3000:]}"
        )
    return result


class Processes:
    """A named set of long-running children, each logging to ``<log_dir>/<name>.log``."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, object] = {}

    def spawn(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  closed in stop()
        self._logs[name] = log
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.procs[name] = proc
        return proc

    def stop(self, *names: str, timeout: float = 10) -> None:
        """SIGTERM the named processes (all when none named) together, SIGKILL what lingers."""
        chosen = [n for n in (names or list(self.procs)) if n in self.procs]
        procs = [self.procs.pop(n) for n in chosen]
        for proc in procs:
            signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
            signal_group(proc.pid, signal.SIGKILL)  # anything it forked is in its group
        for n in chosen:
            log = self._logs.pop(n, None)
            if log is not None:
                log.close()  # type: ignore[attr-defined]

    def check_alive(self) -> None:
        """Raise ClusterError naming the first component that has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ClusterError(
                    f"{name} exited with code {proc.returncode}\n{self.log_tail(name)}"
                )

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = ["(no log)"]
        return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text)

    def wait(
        self,
        what: str,
        ready: Callable[[], object],
        *,
        timeout: float,
        log_of: str | None = None,
        interval: float = 0.2,
    ) -> None:
        """Poll ``ready()`` until truthy; fail fast if any process exited, or at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if ready():
                    return
            except (OSError, ValueError, KeyError):
                pass  # not listening yet, or a half-started server's answer
            if time.monotonic() > deadline:
                tail = f"\n{self.log_tail(log_of)}" if log_of else ""
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
            time.sleep(interval)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session=True: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
