"""A short soak on a real pod (bench/soak.py's code): 100 clients streaming chat completions
through the agent's Service, past a concurrency limit, answer cleanly and leave its memory flat.
`make soak` runs the same for 5 minutes and keeps the figures in bench/results/."""

from __future__ import annotations

import asyncio
import json
import os

from bench import soak
from localcluster import LocalCluster
from localcluster.kubectl import Kubectl, OperatorProcess

from .conftest import agent_pods, on_real_node, restricted_namespace, service_url, wait_ready

SECONDS = float(os.environ.get("AIAGENT_SOAK_SECONDS", "30"))  # make soak: 300
CLIENTS = 100
LIMIT = 80  # concurrent requests the agent serves: the other clients are refused (429) and retry


def test_soak_streams_cleanly_with_flat_memory(
    cluster: LocalCluster, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    assert cluster.node is not None
    namespace = restricted_namespace(kubectl)
    try:
        with soak.model_server(cluster.node_ip, latency_ms=200) as model_url:
            kubectl.apply(soak.agent_manifest(model_url, LIMIT), namespace=namespace)
            wait_ready(kubectl, namespace, soak.AGENT)
            [pod] = agent_pods(kubectl, namespace, soak.AGENT)
            assert on_real_node(pod)
            container = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
            pid = soak.container_pid(cluster.node.ctr("tasks", "list").stdout, container)
            url = service_url(kubectl, namespace, soak.AGENT)
            result = asyncio.run(soak.soak(url, CLIENTS, SECONDS, memory=soak.ContainerMemory(pid)))
        after = kubectl.get("pod", pod["metadata"]["name"], namespace) or {}
        restarts = after["status"]["containerStatuses"][0]["restartCount"]
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
    brief = {k: v for k, v in result.items() if k not in ("windows", "memory")}
    print(json.dumps(brief), json.dumps(result["memory"].get("rss_mib")))  # shown with -s

    assert result["clean_streams"] > CLIENTS, f"too little traffic to prove anything: {brief}"
    assert set(result["statuses"]) <= {"200", "429"}, result["statuses"]
    assert result["errors"]["total"] == 0, result["errors"]  # every 200 ended with [DONE]
    assert restarts == 0
    memory = result["memory"]
    assert not memory["errors"], memory["errors"]
    growth = memory["rss_mib"]["growth_after_warmup_pct"]
    assert growth is not None and growth < 10, memory["rss_mib"]
