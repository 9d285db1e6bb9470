"""LocalCluster: the control plane, and (where the host allows) a real node beside the kwok nodes.

    with LocalCluster() as cluster:            # real node if this host can run one, else kwok only
        subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])

Start order, undone exactly in reverse by ``stop()``: host lock, egress guard, the node's bridge,
containerd, our images (built or reused) imported into it, the control plane, kubelet, kube-proxy,
metrics-server. Every process dies with its group on ``stop()``, on an exception, on
SIGINT/SIGTERM, at interpreter exit, and (Linux) when the starting thread dies.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import binaries, daprbuild, guard, images, node
from . import redis as redis_server
from .controlplane import SERVICE_CIDR, LocalControlPlane
from .daprsystem import DaprSystem
from .dns import ClusterDNS
from .hostnet import BRIDGE, HostNetwork, nft_tables, remove_new_tables
from .metrics import MetricsServer
from .procs import ClusterError

NODE_CIDR = "10.245.0.0/24"  # the real node's bridge: node IP .1, pods the rest
KWOK_POD_CIDR = "10.244.0.0/16"
LOCK_PATH = Path("/run/lock/aiagent-localcluster.lock")


def log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def real_node_unavailable() -> str | None:
    """Why this host cannot run the real node (one line), or None when it can."""
    if os.environ.get("AIAGENT_REAL_NODE", "").lower() in ("0", "false", "no"):
        return "AIAGENT_REAL_NODE=0 asks for kwok nodes only"
    from . import docker

    return node.missing() or guard.missing() or docker.missing() or redis_server.missing()


class LocalCluster:
    """A local Kubernetes cluster on this host. ``real_node``: True (fail if impossible), False
    (kwok only), None (a real node where this host allows one; ``skip_reason`` says why not).
    ``dapr``: also Dapr's control plane (its own Helm chart, our images) and a Redis for its
    components, on the real node (ignored without one: the sidecars need real pods)."""

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        kwok_nodes: int = 3,
        real_node: bool | None = None,
        hpa_downscale_window: str | None = None,
        keep_workdir: bool = False,
        dapr: bool = False,
        service_cidr: str = SERVICE_CIDR,
        client_qps: int | None = None,
    ):
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="aiagent-cluster-"))
        )
        self.kwok_nodes = kwok_nodes
        self.keep_workdir = keep_workdir
        self.hpa_downscale_window = hpa_downscale_window
        self.skip_reason = real_node_unavailable() if real_node is not False else "not asked for"
        if real_node and self.skip_reason:
            raise ClusterError(f"no real node on this host: {self.skip_reason}")
        self.real_node = self.skip_reason is None
        if self.real_node and service_cidr != SERVICE_CIDR:
            raise ClusterError(f"a real node's egress guard covers {SERVICE_CIDR} only")
        self.service_cidr, self.client_qps = service_cidr, client_qps
        self.dapr = dapr and self.real_node
        self.net = HostNetwork(NODE_CIDR, SERVICE_CIDR)
        self.bin_dir = Path()
        self.control_plane: LocalControlPlane
        self.node: node.RealNode | None = None
        self.metrics: MetricsServer | None = None
        self.dns: ClusterDNS | None = None
        self.redis: redis_server.Redis | None = None
        self.dapr_system: DaprSystem | None = None
        self.image_report: dict[str, Any] = {}
        self._lock: IO[str] | None = None
        self._tables_before: set[str] = set()
        self._undo: list[tuple[str, Any]] = []
        self._old_sigterm: Any = None
        self._started = False

    # -- the public surface ---------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def server(self) -> str:
        return self.control_plane.server

    @property
    def node_ip(self) -> str:
        return self.net.node_ip

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.control_plane.request(method, path, body, **kw)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """os.environ for a client subprocess: KUBECONFIG set, the built helm/kwok first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def logs(self, lines: int = 40) -> str:
        """Log tails of every component, for a failing test to print."""
        parts = [self.control_plane.procs]
        parts += [p.procs for p in (self.node, self.dns, self.metrics, self.redis) if p is not None]
        return "\n".join(p.log_tail(name, lines) for p in parts for name in list(p.procs))

    def check_alive(self) -> None:
        self.control_plane.procs.check_alive()
        for part in (self.node, self.dns, self.metrics, self.redis):
            if part is not None:
                part.procs.check_alive()

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        if self._started:
            return self
        self._started = True
        atexit.register(self.stop)
        self._trap_sigterm()
        try:
            self._start()
        except ClusterError as e:
            self.keep_workdir = True  # the full logs are what explains a failed start
            self.stop()
            raise ClusterError(f"{e}\n(all logs kept in {self.workdir / 'logs'})") from None
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.bin_dir = binaries.build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_plane = LocalControlPlane(
            self.bin_dir,
            self.workdir,
            self.kwok_nodes,
            node_ip=self.net.node_ip if self.real_node else None,
            hpa_downscale_window=self.hpa_downscale_window,
            service_cidr=self.service_cidr,
            client_qps=self.client_qps,
        )
        if not self.real_node:
            self._step("control plane", self.control_plane.start, self.control_plane.stop)
            return
        self._step("host lock", self._take_lock, self._release_lock)
        self._tables_before = nft_tables()
        self._step(
            "egress guard",
            lambda: guard.install(BRIDGE, SERVICE_CIDR, [KWOK_POD_CIDR, NODE_CIDR]),
            guard.remove,
        )
        self._step("node bridge", self.net.up, self._net_down)
        self.node = node.RealNode(self.bin_dir, self.workdir, self.control_plane, self.net)
        self._step("containerd", self.node.start_runtime, self.node.stop)
        self._step("images", self._load_images, None)
        self._step("control plane", self.control_plane.start, self.control_plane.stop)
        watch = guard.ServiceWatch(self.control_plane)
        self._step("guard's Service watch", watch.start, watch.stop)
        # Before the kubelet: its pods get this address as their nameserver.
        self.dns = ClusterDNS(
            self.bin_dir,
            self.workdir,
            self.control_plane,
            self.net.node_ip,
            reverse_cidrs=[SERVICE_CIDR, KWOK_POD_CIDR, NODE_CIDR],
        )
        self._step("cluster DNS", self.dns.start, self.dns.stop)
        self._step("kubelet", self.node.start_kubelet, None)
        self._step("kube-proxy", self.node.start_kube_proxy, None)
        self.metrics = MetricsServer(
            self.bin_dir, self.workdir, self.control_plane, self.net.node_ip
        )
        self._step("metrics-server", self.metrics.start, self.metrics.stop)
        if self.dapr:
            self.redis = redis_server.Redis(self.workdir, self.net.node_ip)
            self._step("redis", self.redis.start, self.redis.stop)
            self.dapr_system = DaprSystem(
                self.bin_dir,
                self.control_plane,
                daprbuild.dapr_source() / "charts" / "dapr",
                daprbuild.dapr_version(),
            )
            self._step("dapr", self.dapr_system.start, self.dapr_system.stop)

    def _step(self, what: str, do: Any, undo: Any) -> None:
        started = time.monotonic()
        if undo is not None:
            self._undo.append((what, undo))  # registered first: a half-done step is undone too
        do()
        log(f"{what}: up in {time.monotonic() - started:.1f}s")

    def stop(self) -> None:
        """Undo every step that ran, newest first; safe to call more than once."""
        errors = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as e:  # keep undoing: a half-cleaned host is the worst outcome
                errors.append(f"{what}: {e}")
        if self._old_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except ValueError:
                pass
            self._old_sigterm = None
        atexit.unregister(self.stop)
        if self._own_workdir and not self.keep_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise ClusterError("teardown incomplete: " + "; ".join(errors))

    def _net_down(self) -> None:
        self.net.down()
        remove_new_tables(self._tables_before)

    def _load_images(self) -> None:
        assert self.node is not None
        extra = [daprbuild.build_dapr_images] if self.dapr else []
        self.image_report = images.prepare(self.node, extra=extra)

    def _take_lock(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(LOCK_PATH, "a+")  # noqa: SIM115  held until stop()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                lock.close()
                raise ClusterError(
                    f"another local cluster with a real node is running on this host ({holder}); "
                    "stop it first (a real node uses host-wide names: bridge, firewall tables, "
                    "cgroups)"
                ) from None
            # The holder unlinks the file when it is done: make sure ours is still the file.
            if (
                os.path.exists(LOCK_PATH)
                and os.stat(LOCK_PATH).st_ino == os.fstat(lock.fileno()).st_ino
            ):
                break
            lock.close()
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
        lock.flush()
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            LOCK_PATH.unlink(missing_ok=True)  # still holding it: nobody else can be using it
            self._lock.close()
            self._lock = None

    def _trap_sigterm(self) -> None:
        """Turn SIGTERM into SystemExit so `with` blocks and atexit run (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

            def on_sigterm(signum: int, frame: FrameType | None) -> None:
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
