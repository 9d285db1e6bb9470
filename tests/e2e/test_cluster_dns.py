"""Cluster DNS (localcluster/dns.py) against a real control plane: Service and headless
StatefulSet names are answered from the apiserver, every other name gets NXDOMAIN at once.

CoreDNS listens on loopback and a free port here (the launcher binds the node IP, port 53), and is
asked by a real DNS client (dnspython). Its own kwok-only control plane: the session's fixture
hands out only a kubeconfig, and the DNS server needs the cluster's PKI for its identity.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.resolver
import dns.reversename
import pytest

from localcluster import LocalCluster
from localcluster.controlplane import KUBERNETES_SERVICE_IP, POD_CIDR, SERVICE_CIDR
from localcluster.dns import ClusterDNS
from localcluster.kubectl import KWOK_TOLERATION, Kubectl, wait_for

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("AIAGENT_E2E_KUBECONFIG") or os.environ.get("AIAGENT_E2E_KIND")),
    reason="the cluster DNS is the local cluster's own part",
)

# A forward to an upstream that cannot be reached would take the whole lifetime and end in a
# timeout; an answer from here is a matter of milliseconds.
LIFETIME = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    workdir = tmp_path_factory.mktemp("dns-cluster")
    with LocalCluster(workdir, kwok_nodes=1, real_node=False) as local:
        yield local


@pytest.fixture(scope="module")
def coredns(cluster: LocalCluster) -> Iterator[ClusterDNS]:
    server = ClusterDNS(
        cluster.bin_dir,
        cluster.workdir,
        cluster.control_plane,
        "127.0.0.1",
        port=0,
        reverse_cidrs=[SERVICE_CIDR, POD_CIDR],
    )
    try:
        server.start()  # a failure names CoreDNS's log and shows its tail
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"dns-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def ask(
    coredns: ClusterDNS, name: str, rdtype: str = "A", *, tcp: bool = False
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, coredns.address, port=coredns.port, timeout=LIFETIME)


def addresses(coredns: ClusterDNS, name: str) -> set[str]:
    """The A records of ``name`` (empty on NXDOMAIN or no answer)."""
    answer = ask(coredns, name)
    return {rr.to_text() for rrset in answer.answer for rr in rrset if rrset.rdtype == 1}


def test_service_names_resolve_to_their_cluster_ips(
    coredns: ClusterDNS, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
    )
    cluster_ip = kubectl.run(
        "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}", namespace=namespace
    ).stdout
    fqdn = f"web.{namespace}.svc.cluster.local"
    # Created after CoreDNS started: its watch sees it.
    assert wait_for(fqdn, lambda: addresses(coredns, fqdn)) == {cluster_ip}
    assert addresses(coredns, "kubernetes.default.svc.cluster.local") == {KUBERNETES_SERVICE_IP}

    answer = ask(coredns, fqdn, tcp=True)
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer[0].ttl == coredns.ttl

    srv = ask(coredns, f"_http._tcp.{fqdn}", "SRV")
    assert [rr.port for rr in srv.answer[0]] == [80]

    ptr = ask(coredns, dns.reversename.from_address(cluster_ip).to_text(), "PTR")
    assert [rr.to_text() for rr in ptr.answer[0]] == [f"{fqdn}."]

    kubectl.run("delete", "service", "web", namespace=namespace)
    wait_for(f"{fqdn} gone", lambda: ask(coredns, fqdn).rcode() == dns.rcode.NXDOMAIN)


def statefulset(namespace: str, name: str, replicas: int) -> list[dict[str, Any]]:
    labels = {"app": name}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "clusterIP": "None",
                "selector": labels,
                "ports": [{"name": "grpc", "port": 50006}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "serviceName": name,
                "replicas": replicas,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "tolerations": [KWOK_TOLERATION],
                        "nodeSelector": {"type": "kwok"},
                        "containers": [{"name": "server", "image": "scheduler:e2e"}],
                    },
                },
            },
        },
    ]


def test_headless_statefulset_pods_resolve_by_hostname(
    coredns: ClusterDNS, kubectl: Kubectl, namespace: str
) -> None:
    name = "dapr-scheduler-server"
    for manifest in statefulset(namespace, name, replicas=2):
        kubectl.apply(manifest)

    def pod_ips() -> dict[str, str] | None:
        pods = kubectl.list("pods", namespace, f"app={name}")
        ips = {p["metadata"]["name"]: p.get("status", {}).get("podIP", "") for p in pods}
        return ips if len(ips) == 2 and all(ips.values()) else None

    ips = wait_for("both StatefulSet pods with an IP (kwok)", pod_ips)
    service = f"{name}.{namespace}.svc.cluster.local"
    # The EndpointSlice controller sets each endpoint's hostname from the pod's: the name
    # dapr's sidecars dial for the scheduler.
    for pod, ip in ips.items():
        assert wait_for(pod, functools.partial(addresses, coredns, f"{pod}.{service}")) == {ip}
    assert wait_for(service, lambda: addresses(coredns, service) == set(ips.values()))

    # `pods verified`: a pod's dashed-IP name answers only for an IP some pod in it has.
    ip = ips[f"{name}-0"]
    assert addresses(coredns, f"{ip.replace('.', '-')}.{namespace}.pod.cluster.local") == {ip}
    unused = ask(coredns, f"10-244-255-254.{namespace}.pod.cluster.local")
    assert unused.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("name", ["example.com", "dapr.io.", "localhost", "com"])
def test_names_outside_the_cluster_get_nxdomain_at_once(coredns: ClusterDNS, name: str) -> None:
    for tcp in (False, True):
        answer = ask(coredns, name, tcp=tcp)  # dns.exception.Timeout if anything forwarded
        assert answer.rcode() == dns.rcode.NXDOMAIN and not answer.answer


def test_a_resolver_fails_fast_outside_and_inside_the_domain(coredns: ClusterDNS) -> None:
    """The way a pod's stub resolver sees it: a definite "no such name", never a timeout."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [coredns.address]
    resolver.port = coredns.port
    resolver.lifetime = LIFETIME
    for name in ("example.com", "nosuch.default.svc.cluster.local", "1.2.0.192.in-addr.arpa"):
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(name, "PTR" if name.endswith("arpa") else "A")


def test_it_listens_only_on_its_address(coredns: ClusterDNS) -> None:
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.2", coredns.port), timeout=LIFETIME),
    ):
        pass
