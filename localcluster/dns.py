"""Cluster DNS: CoreDNS on the host, answering ``<svc>.<ns>.svc.cluster.local`` for the pods.

It runs beside the kubelet like metrics-server, bound to one address (the node IP, port 53, for
the pods; loopback in tests), with an identity of its own (``system:coredns``, read-only RBAC).
The binary links only the plugins below (``coredns/main.go``): no ``forward``, so a name outside
the cluster domain gets NXDOMAIN at once and nothing outside this machine is ever asked.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .controlplane import POD_CIDR, SERVICE_CIDR, LocalControlPlane
from .procs import Processes, free_port

CLUSTER_DOMAIN = "cluster.local"
USER = "system:coredns"
# Short, so a test that changes a Service never waits on a client's cache for long.
TTL = 5


class ClusterDNS:
    """CoreDNS serving the cluster domain (and the reverse zones of ``reverse_cidrs``) from the
    apiserver, and NXDOMAIN for every other name. ``port=0`` picks a free port."""

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path,
        control_plane: LocalControlPlane,
        address: str,
        port: int = 53,
        *,
        reverse_cidrs: Sequence[str] = (SERVICE_CIDR, POD_CIDR),
        domain: str = CLUSTER_DOMAIN,
        ttl: int = TTL,
    ):
        self.bin_dir = bin_dir
        self.dir = workdir / "coredns"
        self.cp = control_plane
        self.address = address
        self.port = port
        self.reverse_cidrs = tuple(reverse_cidrs)
        self.domain = domain
        self.ttl = ttl
        self.procs = Processes(workdir / "logs")
        self.kubeconfig = self.dir / "coredns.kubeconfig"
        self.corefile_path = self.dir / "Corefile"
        self.ready_port = 0

    def start(self, timeout: float = 60) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.address)
        self.ready_port = free_port()
        self.cp.pki.kubeconfig(self.kubeconfig, self.cp.server, USER)
        for path, body in rbac_manifests():
            self._create(path, body)
        self.corefile_path.write_text(self.corefile())
        self.procs.spawn(
            "coredns",
            [str(self.bin_dir / "coredns"), f"-conf={self.corefile_path}"],
            cwd=self.dir,
        )
        # /ready answers 200 once the kubernetes plugin's informers have synced: from then on
        # every Service and EndpointSlice that exists is answered.
        self.procs.wait(
            "cluster DNS (CoreDNS /ready)", self._ready, timeout=timeout, log_of="coredns"
        )

    def stop(self) -> None:
        self.procs.stop()

    @property
    def zones(self) -> list[str]:
        """What the kubernetes plugin is authoritative for: the domain and the reverse zones."""
        zones = [self.domain]
        for cidr in self.reverse_cidrs:
            zones += [z for z in reverse_zones(cidr) if z not in zones]
        return zones

    def corefile(self) -> str:
        """The Corefile (pure: a unit test reads it)."""
        port, zones = self.port, self.zones
        keys = " ".join(f"{zone}:{port}" for zone in zones)
        return f"""# Cluster DNS of the local cluster (localcluster/dns.py). No forward: nothing
# outside this machine is ever asked; a name outside {self.domain} gets NXDOMAIN at once.
{keys} {{
    bind {self.address}
    ready 127.0.0.1:{self.ready_port}
    errors
    log . {{
        class denial error
    }}
    kubernetes {" ".join(zones)} {{
        kubeconfig {self.kubeconfig}
        # A pod name's A record only for a pod that has that IP (kwok's and the real node's).
        pods verified
        ttl {self.ttl}
    }}
}}
.:{port} {{
    bind {self.address}
    errors
    log . {{
        class denial error
    }}
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ready_port}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False  # 503 until the informers have synced

    def _create(self, path: str, body: dict[str, Any]) -> None:
        try:
            self.cp.request("POST", path, body)
        except urllib.error.HTTPError as e:
            if e.code != 409:  # left by an earlier start on the same control plane: the same
                raise


def reverse_zones(cidr: str) -> list[str]:
    """The in-addr.arpa (ip6.arpa) zones that cover ``cidr``, one per octet (nibble) boundary:
    ``10.0.0.0/24`` is ``0.0.10.in-addr.arpa``; a /23 is two /24 zones."""
    net = ipaddress.ip_network(cidr, strict=False)
    step = 8 if net.version == 4 else 4
    prefix = -(-net.prefixlen // step) * step  # rounded up to a label boundary
    labels = prefix // step
    zones = []
    for sub in net.subnets(new_prefix=prefix) if prefix > net.prefixlen else [net]:
        pointer = sub.network_address.reverse_pointer.split(".")
        # reverse_pointer names the address (all labels); the zone keeps the network's labels
        # plus the in-addr.arpa / ip6.arpa suffix.
        zones.append(".".join(pointer[len(pointer) - 2 - labels :]))
    return zones


def rbac_manifests(user: str = USER) -> list[tuple[str, dict[str, Any]]]:
    """What the kubernetes plugin reads, as kubeadm grants it to CoreDNS: list and watch only."""
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    name = "system:coredns"
    return [
        (
            f"{rbac}/clusterroles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["endpoints", "services", "pods", "namespaces"],
                        "verbs": ["list", "watch"],
                    },
                    {
                        "apiGroups": ["discovery.k8s.io"],
                        "resources": ["endpointslices"],
                        "verbs": ["list", "watch"],
                    },
                ],
            },
        ),
        (
            f"{rbac}/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            },
        ),
    ]
