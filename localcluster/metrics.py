"""metrics-server for the real node, so `kubectl top` and the HPA read real CPU.

It runs on the host (beside the kubelet it scrapes) and is served through the apiserver's
aggregator like in any cluster: an APIService ``v1beta1.metrics.k8s.io`` backed by a Service in
kube-system whose endpoint is this process on the node's address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .controlplane import LocalControlPlane
from .node import NODE_LABEL
from .procs import Processes, free_port


class MetricsServer:
    def __init__(
        self, bin_dir: Path, workdir: Path, control_plane: LocalControlPlane, node_ip: str
    ):
        self.bin_dir = bin_dir
        self.dir = workdir / "metrics-server"
        self.cp = control_plane
        self.node_ip = node_ip
        self.procs = Processes(workdir / "logs")
        self.port = 0

    def start(self, resolution: str = "15s") -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.node_ip)
        kc = str(self.cp.kubeconfig)
        self.procs.spawn(
            "metrics-server",
            [
                str(self.bin_dir / "metrics-server"),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                f"--bind-address={self.node_ip}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir}",
                # The kubelet serves a self-signed certificate, as kubeadm's does by default.
                "--kubelet-insecure-tls",
                "--kubelet-preferred-address-types=InternalIP",
                # The kubelet listens on a free port (the node status says which), not 10250.
                "--kubelet-use-node-status-port",
                f"--metric-resolution={resolution}",
                # kwok's fake nodes have no kubelet to scrape.
                f"--node-selector={NODE_LABEL}=true",
            ],
        )
        for path, body in self.manifests():
            self.cp.request("POST", path, body)
        self.procs.wait(
            "the metrics API (v1beta1.metrics.k8s.io Available)",
            self._available,
            timeout=90,
            log_of="metrics-server",
        )

    def stop(self) -> None:
        self.procs.stop()

    def _available(self) -> bool:
        svc = self.cp.request(
            "GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
        )
        return any(
            c["type"] == "Available" and c["status"] == "True"
            for c in svc.get("status", {}).get("conditions", [])
        )

    def manifests(self) -> list[tuple[str, dict[str, Any]]]:
        labels = {"k8s-app": "metrics-server"}
        return [
            (
                "/api/v1/namespaces/kube-system/services",
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "metrics-server", "labels": labels},
                    # No selector: the endpoint is a host process, listed by hand below.
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": self.port}]},
                },
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "metrics-server",
                        "labels": {**labels, "kubernetes.io/service-name": "metrics-server"},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [self.node_ip], "conditions": {"ready": True}}],
                    "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
                },
            ),
            (
                "/apis/apiregistration.k8s.io/v1/apiservices",
                {
                    "apiVersion": "apiregistration.k8s.io/v1",
                    "kind": "APIService",
                    "metadata": {"name": "v1beta1.metrics.k8s.io", "labels": labels},
                    "spec": {
                        "service": {
                            "name": "metrics-server",
                            "namespace": "kube-system",
                            "port": 443,
                        },
                        "group": "metrics.k8s.io",
                        "version": "v1beta1",
                        # Its serving cert is self-signed (as with the upstream manifest's default).
                        "insecureSkipTLSVerify": True,
                        "groupPriorityMinimum": 100,
                        "versionPriority": 100,
                    },
                },
            ),
        ]
