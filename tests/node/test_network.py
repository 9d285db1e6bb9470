"""Nothing leaves this machine: the egress guard, proven with real packets; and one real node at a
time per host (the lock)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from localcluster import ClusterError, LocalCluster, guard
from localcluster.kubectl import Kubectl

from .conftest import unallocated_cluster_ip


def connect(address: str, port: int) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    with socket.socket() as s:
        s.settimeout(5)
        try:
            s.connect((address, port))
        except OSError as e:
            return e, time.monotonic() - started
    return None, time.monotonic() - started


def test_unallocated_cluster_ip_is_refused_at_once_and_nothing_leaves(
    cluster: LocalCluster, kubectl: Kubectl
) -> None:
    address = unallocated_cluster_ip(kubectl)
    rejected = guard.rejected()
    error, took = connect(address, 8081)
    assert isinstance(error, ConnectionRefusedError), error
    assert took < 1, f"refused only after {took:.1f}s: the packet went looking for a route"
    assert guard.rejected() > rejected  # the guard refused it, not some host out there
    # A kwok pod's fake address, too: it exists nowhere, and must not be looked for outside.
    error, _ = connect("10.244.3.7", 8080)
    assert isinstance(error, ConnectionRefusedError), error
    assert guard.leaked() == 0, "a packet for a cluster address reached a wire"


def test_the_kubernetes_service_reaches_the_apiserver_through_kube_proxy(
    cluster: LocalCluster,
) -> None:
    error, _ = connect("10.0.0.1", 443)  # the `kubernetes` Service, translated by kube-proxy
    assert error is None, error
    assert guard.leaked() == 0


def test_a_second_real_node_on_the_same_host_is_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    with pytest.raises(ClusterError, match="another local cluster with a real node"):
        LocalCluster(tmp_path, real_node=True).start()
    assert guard.installed(), "the refused launcher must not touch the running one's guard"
