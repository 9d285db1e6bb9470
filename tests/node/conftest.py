"""Fixtures for the real-node suite: a local cluster with a real kubelet node running our images,
the local model server where pods reach it, the operator, and a restricted namespace per test.

The suite runs wherever the real node can (Linux, root, the Debian packages `make host-deps`
installs). Elsewhere it is skipped with the one-line reason; as root on Linux a missing part is
an error, not a skip, so CI can never pass by skipping it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from localcluster import LocalCluster, hoststate, real_node_unavailable
from localcluster.kubectl import EXAMPLES, Kubectl, OperatorProcess, wait_for
from localcluster.mcp_server import IssueTracker
from localcluster.model_server import ModelServer
from localcluster.node import NODE_NAME
from tests.conftest import wait_for_image_prefetch

# A fake key with a shape nothing else has, so a test can look for it in logs.
API_KEY = "sk-node-4e1f9b2a7c3d5e6f8091"
OPERATOR_NAMESPACES = "node-*"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/node/" in str(item.fspath):
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The real-node cluster; on teardown, the host must be exactly as it was before."""
    reason = real_node_unavailable()
    if reason:
        if os.uname().sysname == "Linux" and os.geteuid() == 0:
            pytest.fail(f"this host should run the real node but: {reason}")
        pytest.skip(f"no real node: {reason}")
    wait_for_image_prefetch()
    before = hoststate.snapshot()
    cluster = LocalCluster(
        tmp_path_factory.mktemp("node-cluster"),
        real_node=True,
        hpa_downscale_window="20s",
        dapr=True,  # every agent pod gets Dapr's sidecar, as in a cluster with Dapr installed
    )
    with cluster:
        yield cluster
    changes = hoststate.diff(before, hoststate.snapshot())
    assert not changes, "the real node left the host changed:\n" + "\n".join(changes)


@pytest.fixture(scope="session")
def kubectl(cluster: LocalCluster) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture(scope="session")
def model(cluster: LocalCluster) -> Iterator[ModelServer]:
    """The fake provider, listening on the node's address so pods reach it."""
    server = ModelServer(host=cluster.node_ip).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def issue_tracker(cluster: LocalCluster) -> Iterator[IssueTracker]:
    """A real MCP server on the node's address, for the agents that list MCP servers."""
    server = IssueTracker(cluster.node_ip).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator(
    cluster: LocalCluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    kubectl.run("apply", "-f", str(EXAMPLES.parent / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/aiagents.aiagents.dev")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(
        cluster.kubeconfig, log, standalone="true", watch_namespaces=OPERATOR_NAMESPACES
    ).start()
    yield process
    process.stop()


def restricted_namespace(
    kubectl: Kubectl, prefix: str = "node", cluster: LocalCluster | None = None
) -> str:
    """A namespace enforcing the restricted Pod Security Standard, with the examples' Secrets
    and (given the cluster, which runs Dapr) the `statestore` Component support-bot names, on
    the cluster's Redis, as a platform team would provide it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    kubectl.run(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", name))
    for secret in ("openai", "anthropic"):
        kubectl.run(
            "create",
            "secret",
            "generic",
            secret,
            f"--from-literal=api-key={API_KEY}",
            namespace=name,
        )
    if cluster is not None and cluster.redis is not None:
        kubectl.apply(cluster.redis.secret(), namespace=name)
        kubectl.apply(cluster.redis.component("statestore", "state.redis"), namespace=name)
    return name


@pytest.fixture
def namespace(cluster: LocalCluster, kubectl: Kubectl, operator: OperatorProcess) -> Iterator[str]:
    name = restricted_namespace(kubectl, cluster=cluster)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def example(name: str, model: ModelServer, **spec: Any) -> dict[str, Any]:
    """An example as it is, but for its model: served by the local model server (which speaks
    OpenAI's API, so Anthropic's example goes through the openai-compatible provider)."""
    manifest: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    m = manifest["spec"]["model"]
    if m.get("provider") not in (None, "openai"):
        m["provider"] = "openai-compatible"
    m["baseURL"] = model.base_url
    manifest["spec"].update(spec)
    return manifest


def wait_ready(kubectl: Kubectl, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", name, namespace) or {}
        status = agent.get("status") or {}
        gen = agent.get("metadata", {}).get("generation")
        if status.get("phase") == "Ready" and status.get("observedGeneration") == gen:
            return agent
        return None

    agent: dict[str, Any] = wait_for(f"{name} Ready", ready, timeout=timeout, interval=1)
    # Ready counts ready pods; kube-proxy learns of their endpoints a moment later (longer on a
    # busy node), and until then the ClusterIP refuses connections. Users see the same.
    url = service_url(kubectl, namespace, name)
    wait_for(f"{name}'s Service answering", lambda: _answers(f"{url}/readyz"), timeout=60)
    return agent


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        time.sleep(0.3)
        return False


def service_url(kubectl: Kubectl, namespace: str, name: str) -> str:
    """The Service's ClusterIP and the port it exposes (never the container's 8080)."""
    svc = kubectl.get("service", name, namespace) or {}
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def agent_pods(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = kubectl.list("pods", namespace, f"aiagents.dev/agent={name}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def on_real_node(pod: dict[str, Any]) -> bool:
    return bool(pod["spec"].get("nodeName") == NODE_NAME)


def unallocated_cluster_ip(kubectl: Kubectl) -> str:
    """An address of the service range that no Service has (kube-proxy knows nothing of it)."""
    services = json.loads(kubectl.run("get", "services", "--all-namespaces", "-o", "json").stdout)
    used = {s["spec"].get("clusterIP") for s in services["items"]}
    return next(f"10.0.0.{i}" for i in range(250, 2, -1) if f"10.0.0.{i}" not in used)
