"""The control plane of the local cluster: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok playing the kubelet for a few fake nodes.

Runs the binaries ``build.sh`` compiles as child processes on free ports, with the certificates
and an ``admin.kubeconfig`` of one run in its work directory. On its own it binds loopback; with a
real node (``node_ip``) the apiserver binds the node's bridge address instead, so pods reach it
through the ``kubernetes`` Service, and it gets what logs/exec/port-forward and the metrics API
need (a kubelet client certificate, the front-proxy identity, aggregator routing).
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .paths import HERE
from .pki import Pki, cert_user, kubeconfig
from .procs import ClusterError, Processes, free_port

DEFAULT_STAGES = HERE / "kwok-stages.yaml"
SERVICE_CIDR = "10.0.0.0/24"
# Room for 65 533 Services, for benchmarks at scale on the fake nodes alone. Not for a real node:
# its egress guard and kube-proxy are sized for SERVICE_CIDR.
LARGE_SERVICE_CIDR = "10.0.0.0/16"
KUBERNETES_SERVICE_IP = "10.0.0.1"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# Every request of this user is audited, reads too: benchmarks run the operator as this user.
AUDITED_USER = "aiagent-operator-audited"
POD_CIDR = "10.244.0.1/16"  # kwok hands out fake pod IPs from here; must not overlap SERVICE_CIDR
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
FAKE_NODE_RESOURCES = {"cpu": "32", "memory": "256Gi", "pods": "110"}


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok.

    Attributes set by ``start()``: ``server`` (https URL), ``kubeconfig`` (admin, system:masters),
    ``pki``, ``log_dir`` (one ``<component>.log`` each), ``node_names`` (the fake nodes).
    One component at a time can be stopped and started again (``stop_component``,
    ``start_component``), for tests of what its absence does to a client.
    """

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path,
        nodes: int = 3,
        *,
        node_ip: str | None = None,
        stages: Path = DEFAULT_STAGES,
        startup_timeout: float = 90,
        hpa_downscale_window: str | None = None,
        service_cidr: str = SERVICE_CIDR,
        client_qps: int | None = None,
        apiserver_flags: Sequence[str] = (),
    ):
        """`client_qps`: the request rate (and twice it, the burst) of the controller-manager and
        the scheduler; their defaults (20, 50) and not the operator under test would decide how
        fast thousands of Deployments become Ready pods. (kwok has no such flag.)
        `apiserver_flags`: more kube-apiserver flags, or other values for ours (`with_flags`)."""
        self.bin_dir = bin_dir
        self.workdir = workdir
        self.nodes = nodes
        self.node_ip = node_ip
        self.bind_ip = node_ip or "127.0.0.1"
        self.stages = stages
        self.startup_timeout = startup_timeout
        self.hpa_downscale_window = hpa_downscale_window
        self.service_cidr = service_cidr
        self.client_qps = client_qps
        self.apiserver_flags = list(apiserver_flags)
        self.log_dir = workdir / "logs"
        self.kubeconfig = workdir / "admin.kubeconfig"
        # Every write request, one JSON line each (who, which verb, which object): how tests and
        # benchmarks count the operator's writes (read with `audit_events`).
        self.audit_log = workdir / "audit.log"
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.server = ""
        self.etcd_url = ""
        self.procs = Processes(self.log_dir)
        # What each component was started with and how to tell it is up: `restart` reuses both,
        # so a component comes back on its ports, with its data directory.
        self._commands: dict[str, list[str]] = {}
        self._health: dict[str, Callable[[], bool]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.pki: Pki

    def _audit_policy(self) -> Path:
        """Writes at the Metadata level (no bodies), and every request of AUDITED_USER; nothing
        else: small, and cheap to keep."""
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            json.dumps(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived", "ResponseStarted"],
                    "rules": [
                        {"level": "Metadata", "users": [AUDITED_USER]},
                        {"level": "Metadata", "verbs": list(WRITE_VERBS)},
                        {"level": "None"},
                    ],
                }
            )
        )
        return policy

    def audit_events(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The write requests logged since byte `offset`, and the offset to read on from."""
        if not self.audit_log.exists():
            return [], offset
        if self.audit_log.stat().st_size < offset:
            raise ClusterError(f"{self.audit_log} was rotated or truncated: its counts are lost")
        with self.audit_log.open("rb") as log:
            log.seek(offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        events = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return events, offset + len(complete)

    def start(self) -> None:
        missing = [c for c in self.COMPONENTS if not (self.bin_dir / c).is_file()]
        if missing:
            raise ClusterError(f"missing binaries in {self.bin_dir}: {missing}; run build.sh")
        # Every start is a fresh cluster, even in a reused workdir: old etcd data would carry
        # objects and tokens signed by the previous run's keys.
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ips = ("127.0.0.1", KUBERNETES_SERVICE_IP) + ((self.node_ip,) if self.node_ip else ())
        self.pki = pki = Pki(self.workdir / "pki", apiserver_ips=ips)
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ssl.load_cert_chain(pki.admin_cert, pki.admin_key)

        etcd_port, etcd_peer = free_port(), free_port()
        api_port = free_port(self.bind_ip)
        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        self.server = f"https://{self.bind_ip}:{api_port}"
        self.kubeconfig.write_text(
            kubeconfig(self.server, pki.ca_cert, cert_user(pki.admin_cert, pki.admin_key), "local")
        )
        self.kubeconfig.chmod(0o600)
        kc = str(self.kubeconfig)
        timeout = self.startup_timeout

        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            f"--data-dir={self.workdir / 'etcd'}",
            "--name=default",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Test data is disposable: skipping fsync makes writes (and startup) much faster.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        )
        self.etcd_url = etcd_url
        self._health["etcd"] = lambda: self._get_json(f"{etcd_url}/health").get("health") == "true"
        self._wait_healthy("etcd")

        api_args = [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.bind_ip}",
            f"--advertise-address={self.bind_ip}",
            f"--secure-port={api_port}",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            # As in most production clusters: setting blockOwnerDeletion needs the
            # owner's finalizers permission, so the chart's RBAC is tested for it.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement,NodeRestriction",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            # 0 does not mean unlimited: the log rotates at 100 MB (lumberjack's default), and a
            # reader at an offset of the old file would see nothing more. Never rotate.
            "--audit-log-maxsize=1000000",
        ]
        if self.node_ip:
            api_args += [
                # The `kubernetes` Service's endpoint is this address: pods reach the apiserver.
                "--endpoint-reconciler-type=lease",
                # logs, exec, port-forward: the apiserver calls the kubelet by its InternalIP.
                f"--kubelet-client-certificate={pki.kubelet_client_cert}",
                f"--kubelet-client-key={pki.kubelet_client_key}",
                "--kubelet-preferred-address-types=InternalIP",
                # The aggregator (metrics.k8s.io) forwards with the front-proxy identity, to the
                # endpoint's address (no cluster DNS here).
                f"--requestheader-client-ca-file={pki.front_proxy.cert_path}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_cert}",
                f"--proxy-client-key-file={pki.front_proxy_key}",
                "--enable-aggregator-routing=true",
            ]
        else:
            # No kubelet serves the `kubernetes` Service's endpoints; don't reconcile them.
            api_args.append("--endpoint-reconciler-type=none")
        self._spawn("kube-apiserver", *with_flags(api_args, self.apiserver_flags))
        self._health["kube-apiserver"] = lambda: self._get(f"{self.server}/readyz") == 200
        self._wait_healthy("kube-apiserver")

        for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
            # No --authentication/authorization-kubeconfig: /healthz, the only endpoint we call,
            # is always allowed.
            args = [
                f"--kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / name}",
                *self._qps_args(),
            ]
            if name == "kube-controller-manager":
                args += [
                    "--controllers=*",
                    f"--root-ca-file={pki.ca_cert}",
                    f"--service-account-private-key-file={pki.sa_key}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={pki.ca_cert}",
                    f"--cluster-signing-key-file={pki.ca_key}",
                    f"--service-cluster-ip-range={self.service_cidr}",
                ]
                if self.client_qps:
                    # Each controller's workers, so the rate is what limits them.
                    workers = str(max(5, self.client_qps // 10))
                    args += [
                        f"--concurrent-{kind}-syncs={workers}"
                        for kind in ("deployment", "replicaset", "horizontal-pod-autoscaler")
                    ]
                if self.hpa_downscale_window:
                    # Five minutes by default; the demo shortens it so a person sees the way down.
                    args.append(
                        f"--horizontal-pod-autoscaler-downscale-stabilization={self.hpa_downscale_window}"
                    )
            self._spawn(name, *args)
        self._spawn(
            "kwok",
            f"--kubeconfig={kc}",
            f"--config={self.stages}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address=127.0.0.1:{kwok_port}",
            f"--cidr={POD_CIDR}",
            # The fake nodes' InternalIP (and pods' hostIP): loopback, where nothing answers.
            "--node-ip=127.0.0.1",
        )
        insecure = ssl.create_default_context()  # kcm and scheduler serve self-signed certs
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        checks: list[tuple[str, str, ssl.SSLContext | None]] = [
            ("kube-controller-manager", f"https://127.0.0.1:{kcm_port}/healthz", insecure),
            ("kube-scheduler", f"https://127.0.0.1:{sched_port}/healthz", insecure),
            ("kwok", f"http://127.0.0.1:{kwok_port}/healthz", None),
        ]
        for name, url, ctx in checks:
            self._health[name] = self._healthy(url, ctx)
            self._wait_healthy(name)

        for name in self.node_names:
            self.request("POST", "/api/v1/nodes", self._node_manifest(name))
        self.procs.wait(
            "fake nodes Ready and untainted",
            self._nodes_schedulable,
            timeout=timeout,
            log_of="kwok",
        )
        # Pods can only be created once the namespace has its default ServiceAccount.
        self.procs.wait(
            "the default ServiceAccount",
            lambda: (
                self._get(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default") == 200
            ),
            timeout=timeout,
            log_of="kube-controller-manager",
        )

    def stop(self) -> None:
        """Stop every component; clients first, then the apiserver, then its storage, so nothing
        logs errors about a peer that vanished first and etcd is never killed under a writer."""
        self.procs.stop("kwok", "kube-scheduler", "kube-controller-manager")
        self.procs.stop("kube-apiserver")
        self.procs.stop("etcd")

    def stop_component(self, name: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL); `start_component` brings it back."""
        if name not in self._commands:
            raise ClusterError(f"no component {name!r}: one of {sorted(self._commands)}")
        self.procs.stop(name)

    def start_component(self, name: str, flags: Sequence[str] = ()) -> None:
        """Start a stopped component again as it was (same ports, same data directory), with
        `flags` added or changed (`with_flags`), and wait until it is healthy. The flags stay
        for later restarts too."""
        if name in self.procs.procs:
            raise ClusterError(f"{name} is running: stop it first")
        self._commands[name] = with_flags(self._commands[name], flags)
        self.procs.spawn(name, self._commands[name], cwd=self.workdir)
        self._wait_healthy(name)

    def restart_component(self, name: str, flags: Sequence[str] = ()) -> None:
        self.stop_component(name)
        self.start_component(name, flags)

    def etcd_compact(self) -> int:
        """Compact etcd's history up to its current revision (watches from before it get
        410 Gone); returns that revision. Through etcd's JSON gateway: no etcdctl needed."""
        key = base64.b64encode(b"/").decode()
        revision = int(
            self._post_json(f"{self.etcd_url}/v3/kv/range", {"key": key})["header"]["revision"]
        )
        self._post_json(
            f"{self.etcd_url}/v3/kv/compaction", {"revision": revision, "physical": True}
        )
        return revision

    def _wait_healthy(self, name: str) -> None:
        self.procs.wait(name, self._health[name], timeout=self.startup_timeout, log_of=name)

    def _qps_args(self) -> list[str]:
        if not self.client_qps:
            return []
        return [f"--kube-api-qps={self.client_qps}", f"--kube-api-burst={2 * self.client_qps}"]

    def _spawn(self, name: str, *args: str) -> None:
        self._commands[name] = [str(self.bin_dir / name), *args]
        self.procs.spawn(name, self._commands[name], cwd=self.workdir)

    def _nodes_schedulable(self) -> bool:
        items = self.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        return set(self.node_names) <= {n["metadata"]["name"] for n in items if schedulable(n)}

    @staticmethod
    def _node_manifest(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                },
            },
            "spec": {"taints": [FAKE_NODE_TAINT]},
            "status": {"allocatable": FAKE_NODE_RESOURCES, "capacity": FAKE_NODE_RESOURCES},
        }

    # -- talking to the apiserver ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One admin call to the apiserver; returns the decoded JSON answer, raises HTTPError.

        For PATCH pass e.g. content_type="application/merge-patch+json".
        """
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self._ssl, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read() or b"{}")
            return answer

    def stream(self, path: str, accept: str = "application/json") -> Iterator[dict[str, Any]]:
        """A watch: one decoded event per line, until the server ends it."""
        req = urllib.request.Request(f"{self.server}{path}", headers={"Accept": accept})
        with urllib.request.urlopen(req, context=self._ssl, timeout=60) as resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)

    def _healthy(self, url: str, context: ssl.SSLContext | None) -> Callable[[], bool]:
        return lambda: self._get(url, context) == 200

    def _get(self, url: str, context: ssl.SSLContext | None = None) -> int:
        try:
            with urllib.request.urlopen(url, context=context or self._ssl, timeout=2) as resp:
                status: int = resp.status
                return status
        except urllib.error.HTTPError as e:
            return e.code

    @staticmethod
    def _get_json(url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, timeout=2) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    @staticmethod
    def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = 86400
    ) -> Path:
        """Mint a token for an existing ServiceAccount (TokenRequest API) and write a kubeconfig.

        The kubeconfig acts exactly as that ServiceAccount, so RBAC is what the tests exercise.
        """
        token = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )["status"]["token"]
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(
            kubeconfig(self.server, self.pki.ca_cert, {"token": token}, f"{namespace}-{name}")
        )
        path.chmod(0o600)
        return path


def with_flags(args: Sequence[str], flags: Sequence[str]) -> list[str]:
    """`args` with each `--name=value` of `flags` in place of the same flag's value, or added at
    the end when `args` has no such flag."""
    result = list(args)
    for flag in flags:
        name = flag.split("=", 1)[0]
        at = next((i for i, arg in enumerate(result) if arg.split("=", 1)[0] == name), None)
        if at is None:
            result.append(flag)
        else:
            result[at] = flag
    return result


def schedulable(node: dict[str, Any]) -> bool:
    """Ready, and without the not-ready taint the node lifecycle controller lifts a few seconds
    after Ready (until then the scheduler would leave pods Pending)."""
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in node.get("status", {}).get("conditions", [])
    )
    tainted = any(
        t["key"] == "node.kubernetes.io/not-ready" for t in node.get("spec", {}).get("taints", [])
    )
    return ready and not tainted
