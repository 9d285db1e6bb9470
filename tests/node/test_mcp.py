"""MCP on real pods, when the server is not there: the AIAgent says which server and why (the
working case runs with the examples, in test_agents.py)."""

from __future__ import annotations

from typing import Any

from localcluster import LocalCluster
from localcluster.kubectl import Kubectl, wait_for
from localcluster.model_server import ModelServer
from localcluster.procs import free_port

from .conftest import example


def test_unreachable_mcp_server_is_named_on_the_aiagent(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    # A port on the node's own address that nothing listens on: refused at once, on this host.
    url = f"http://{cluster.node_ip}:{free_port(cluster.node_ip)}/mcp"
    manifest = example("support-bot.yaml", model, replicas=1)
    manifest["spec"]["agent"]["mcpServers"] = [{"name": "tickets", "url": url}]
    manifest["spec"]["env"] = [{"name": "AIAGENT_MCP_CONNECT_SECONDS", "value": "3"}]
    kubectl.apply(manifest, namespace=namespace)

    def failed() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", "support-bot", namespace) or {}
        status = agent.get("status") or {}
        return status if status.get("phase") in ("Failed", "Degraded") else None

    status = wait_for("the agent Failed", failed, timeout=180, interval=1)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    # The runtime's own words, through the pod's termination message: the server and the reason.
    assert "MCP server 'tickets'" in ready["message"], ready["message"]
    assert url in ready["message"], ready["message"]
