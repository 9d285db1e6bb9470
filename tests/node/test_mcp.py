"""MCP on real pods, when the server is not there: the AIAgent says which server and why (the
working case runs with the examples, in test_agents.py)."""

from __future__ import annotations

from typing import Any

from localcluster import LocalCluster
from localcluster.kubectl import Kubectl, condition, wait_for
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

    # The first failure the AIAgent reports need not be this one: on a loaded machine the Dapr
    # injector's webhook can time out, the operator says so, and the ReplicaSet tries again. What
    # must come, and stay, is the runtime's own words, through the pod's termination message.
    seen: list[str] = []

    def named() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", "support-bot", namespace) or {}
        ready = condition(agent, "Ready")
        message = str(ready.get("message", ""))
        if message and (not seen or seen[-1] != message):
            seen.append(message)
        phase = (agent.get("status") or {}).get("phase")
        failing = ready.get("status") == "False" and phase in ("Failed", "Degraded")
        return ready if failing and "MCP server 'tickets'" in message else None

    try:
        ready = wait_for("the MCP server named on the AIAgent", named, timeout=180, interval=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; Ready messages seen, in order: {seen}") from None
    assert url in ready["message"], ready["message"]
