"""A real Dapr sidecar (daprd, self-hosted mode) for tests, built from Go modules by localcluster.

    from tests.dapr.sidecar import DaprSidecar, build_daprd

    with DaprSidecar(build_daprd()) as dapr:
        env = {**os.environ, **dapr.env()}  # DAPR_HTTP_PORT for the process under test
        # state store "statestore" (state.in-memory): http://127.0.0.1:{dapr.http_port}/v1.0/state/statestore

daprd runs without placement, scheduler or sentry (no actors, workflows or jobs; mTLS off), binds
every listener to 127.0.0.1, and is ready in well under a second once built. Standard library only.

Self-check (builds daprd if needed, saves and reads back a key):

    python -m tests.dapr.sidecar
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from typing import BinaryIO

from localcluster.daprbuild import build_dapr

STATE_STORE = "statestore"

# Set to a daprd binary to skip the build (e.g. a CI image that ships one).
DAPRD_ENV = "AIAGENT_DAPRD"

_COMPONENT_YAML = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {STATE_STORE}
spec:
  type: state.in-memory
  version: v1
  metadata: []
"""

# Environment variables daprd (or the Dapr SDKs it shares conventions with) would act on; a value
# leaking in from the developer's shell must not change the sidecar (an API token would make every
# request in the tests fail with 401).
_SCRUBBED_ENV_PREFIXES = ("DAPR_",)
_SCRUBBED_ENV = {"APP_API_TOKEN", "NAMESPACE"}


def build_daprd() -> Path:
    """Builds Dapr (or reuses the cached binary) and returns the path of its daprd.

    The build is localcluster's (localcluster/dapr: one multi-call binary for the control plane
    and the sidecar). A cold build takes a few minutes; with the binary cached it returns in well
    under a second. The build's progress goes to this process's stderr.
    """
    override = os.environ.get(DAPRD_ENV)
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"{DAPRD_ENV}={override} is not an executable")
        return path
    return build_dapr() / "daprd"


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open until every port is chosen so the n ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


_running: weakref.WeakSet[DaprSidecar] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    # Safety net for sidecars started without `with` and never stopped.
    for sidecar in list(_running):
        sidecar.stop()


PUBSUB = "pubsub"
_PUBSUB_YAML = f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {PUBSUB}
spec:
  type: pubsub.in-memory
  version: v1
  metadata: []
"""


class DaprSidecar:
    """daprd in self-hosted mode with an in-memory state store named ``statestore`` and an
    in-memory pub/sub named ``pubsub`` (messages reach only this daprd's app; with no
    subscriber for a topic they are discarded).

    Use as a context manager (or call start()/stop()). Attributes once started:
    ``http_port``, ``grpc_port``, ``metrics_port``, ``url`` (http://127.0.0.1:<http_port>),
    ``workdir``, ``resources_dir``, ``log_path`` (daprd's stdout+stderr), ``startup_seconds``.

    ``app_port``: the app daprd delivers to (it fetches ``GET /dapr/subscribe`` once the port
    listens). ``resources``: more YAML documents for the resources dir (components, a
    Resiliency, declarative subscriptions). ``env``: variables for daprd itself, set after the
    scrubbing below (e.g. ``APP_API_TOKEN``).

    daprd runs in its own process group; stop() sends SIGTERM to the group, then SIGKILL after
    ``stop_timeout`` seconds, so no daprd outlives the context. If ``workdir`` is None a
    temporary directory is used and removed on stop (pass a workdir to keep the log).
    """

    def __init__(
        self,
        daprd: Path,
        app_id: str = "agent",
        app_port: int | None = None,
        workdir: Path | None = None,
        *,
        log_level: str = "info",
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        extra_args: tuple[str, ...] | list[str] = (),
        resources: tuple[str, ...] | list[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.daprd = Path(daprd)
        self.app_id = app_id
        self.app_port = app_port
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = list(extra_args)
        self.resources = list(resources)
        self.extra_env = dict(env or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.resources_dir: Path | None = None
        self.log_path: Path | None = None
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        """Environment for the process under test: how it finds the sidecar."""
        return {"DAPR_HTTP_PORT": str(self.http_port)}

    def publish(
        self,
        topic: str,
        data: object,
        *,
        pubsub: str = PUBSUB,
        content_type: str = "application/json",
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Publish through daprd's API (``POST /v1.0/publish/<pubsub>/<topic>``); returns the
        HTTP status (204 once the broker has the message). ``data`` is sent as JSON unless it
        is str/bytes; ``metadata`` become ``metadata.<key>`` query parameters (e.g.
        ``{"cloudevent.id": "q-1"}`` sets the CloudEvent id)."""
        if isinstance(data, bytes):
            body = data
        elif isinstance(data, str):
            body = data.encode()
        else:
            body = json.dumps(data).encode()
        query = urllib.parse.urlencode({f"metadata.{k}": v for k, v in (metadata or {}).items()})
        url = f"{self.url}/v1.0/publish/{pubsub}/{topic}" + (f"?{query}" if query else "")
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return e.code

    def metadata(self) -> dict[str, object]:
        """daprd's ``GET /v1.0/metadata``: components, subscriptions, app connection."""
        with urllib.request.urlopen(f"{self.url}/v1.0/metadata", timeout=5) as resp:
            value: dict[str, object] = json.loads(resp.read())
            return value

    def subscribed_topics(self) -> set[str]:
        """Topics daprd has subscriptions for (programmatic ones appear once the app answered
        ``GET /dapr/subscribe``)."""
        subscriptions = self.metadata().get("subscriptions") or []
        assert isinstance(subscriptions, list)
        return {str(s.get("topic")) for s in subscriptions if isinstance(s, dict)}

    def logs(self, max_bytes: int = 20_000) -> str:
        """The tail of daprd's log (for assertion messages)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")

    def start(self) -> DaprSidecar:
        if self._proc is not None:
            raise RuntimeError("DaprSidecar already started")
        if not os.access(self.daprd, os.X_OK):
            raise FileNotFoundError(f"daprd not executable: {self.daprd}")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="daprd-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.resources_dir = self.workdir / "resources"
        self.resources_dir.mkdir(exist_ok=True)
        (self.resources_dir / f"{STATE_STORE}.yaml").write_text(_COMPONENT_YAML)
        (self.resources_dir / f"{PUBSUB}.yaml").write_text(_PUBSUB_YAML)
        for i, document in enumerate(self.resources):
            (self.resources_dir / f"extra-{i}.yaml").write_text(document)
        self.log_path = self.workdir / "daprd.log"

        # The ports are picked here and bound by daprd a moment later, so another process can
        # take one in between; daprd then exits at once and we retry with new ports.
        last_error: Exception | None = None
        for _ in range(3):
            try:
                self._start_once()
                _running.add(self)
                return self
            except _PortRace as e:
                last_error = e
        self.stop()
        raise RuntimeError(f"daprd failed to start 3 times on racing ports: {last_error}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _running.discard(self)
        if proc is not None:
            _kill_group(proc, self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> DaprSidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _command(self) -> list[str]:
        cmd = [
            str(self.daprd),
            "--mode=standalone",
            f"--app-id={self.app_id}",
            f"--resources-path={self.resources_dir}",
            f"--dapr-http-port={self.http_port}",
            f"--dapr-grpc-port={self.grpc_port}",
            "--dapr-listen-addresses=127.0.0.1",
            # Internal (daprd-to-daprd) gRPC: daprd picks a free port itself; keep it local.
            "--dapr-internal-grpc-listen-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--metrics-listen-address=127.0.0.1",
            # No placement/scheduler/sentry: with these empty daprd logs "Actor runtime
            # disabled" / "Scheduler disabled" once and never dials out.
            "--placement-host-address=",
            f"--log-level={self.log_level}",
            # Tests stop the sidecar often; upstream's default waits up to 5 s for in-flight work.
            "--dapr-graceful-shutdown-seconds=1",
        ]
        if self.app_port is not None:
            cmd.append(f"--app-port={self.app_port}")
        return cmd + self.extra_args

    def _startup_log(self) -> str:
        # A flag error is printed first, followed by the whole usage text: keep head and tail.
        text = self.logs(200_000)
        if len(text) <= 4000:
            return text
        return text[:1500] + "\n[...]\n" + text[-2500:]

    def _start_once(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = _free_ports(3)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(_SCRUBBED_ENV_PREFIXES) and k not in _SCRUBBED_ENV
        }
        env.update(self.extra_env)
        if self._log_file is not None:
            self._log_file.close()
        assert self.log_path is not None
        self._log_file = open(self.log_path, "ab")
        started = time.monotonic()
        self._proc = subprocess.Popen(
            self._command(),
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals the whole group
        )
        deadline = started + self.startup_timeout
        health = f"{self.url}/v1.0/healthz/outbound"
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                log = self._startup_log()
                if "address already in use" in log:
                    raise _PortRace(f"daprd exited with {code}: port in use")
                self.stop()
                raise RuntimeError(f"daprd exited with {code} during startup; log tail:\n{log}")
            if _http_status(health) == 204:
                self.startup_seconds = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                log = self._startup_log()
                self.stop()
                raise TimeoutError(
                    f"daprd not ready ({health}) after {self.startup_timeout}s; log tail:\n{log}"
                )
            time.sleep(0.05)


class _PortRace(Exception):
    pass


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _kill_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    pgid = proc.pid  # start_new_session: the group id is daprd's pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # daprd is gone; anything it may have spawned in its group goes too.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _self_check() -> int:
    t0 = time.monotonic()
    daprd = build_daprd()
    build_s = time.monotonic() - t0
    print(f"daprd: {daprd} (build took {build_s:.1f}s)")
    with DaprSidecar(daprd) as dapr:
        print(f"daprd ready in {dapr.startup_seconds:.2f}s on {dapr.url} (log: {dapr.log_path})")
        base = f"{dapr.url}/v1.0/state/{STATE_STORE}"
        body = json.dumps([{"key": "k", "value": {"a": 1}}]).encode()
        req = urllib.request.Request(
            base, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            print(f"POST {base} -> {resp.status}")
            assert resp.status == 204, resp.status
        with urllib.request.urlopen(f"{base}/k", timeout=5) as resp:
            value = json.loads(resp.read())
            print(f"GET {base}/k -> {resp.status} {json.dumps(value)}")
            assert value == {"a": 1}, value
        pid = dapr._proc.pid if dapr._proc else None
    # The process group is gone once the context exits.
    if pid is not None:
        try:
            os.killpg(pid, 0)
            print(f"FAIL: daprd process group {pid} still alive", file=sys.stderr)
            return 1
        except ProcessLookupError:
            pass
    print(f"OK (total {time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(_self_check())
