"""Every example on real pods: Ready, answering through its Service (our own client and the
official `openai` one), running as the restricted profile says, logging JSON without the key."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import openai
import pytest

from localcluster.kubectl import EXAMPLES, Kubectl, wait_for
from localcluster.mcp_server import IssueTracker, point_mcp_servers_at
from localcluster.model_server import ModelServer

from .conftest import (
    API_KEY,
    agent_pods,
    example,
    on_real_node,
    service_url,
    unallocated_cluster_ip,
    wait_ready,
)


def invoke(url: str, text: str, session: str | None = None, timeout: float = 30) -> dict[str, Any]:
    body: dict[str, Any] = {"input": text}
    if session:
        body["session_id"] = session
    request = urllib.request.Request(
        f"{url}/v1/invoke", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_answers_through_its_service(
    kubectl: Kubectl, namespace: str, model: ModelServer, issue_tracker: IssueTracker, path: Any
) -> None:
    manifest = example(path.name, model)
    name = manifest["metadata"]["name"]
    mcp_servers = manifest["spec"]["agent"].get("mcpServers")
    if mcp_servers:
        point_mcp_servers_at(manifest, issue_tracker, kubectl, namespace)
    kubectl.apply(manifest, namespace=namespace)
    agent = wait_ready(kubectl, namespace, name)
    pods = agent_pods(kubectl, namespace, name)
    assert pods and all(on_real_node(p) for p in pods), "the pods must run on the real node"
    assert agent["status"]["readyReplicas"] == manifest["spec"].get("replicas", 1)

    url = service_url(kubectl, namespace, name)
    answer = invoke(url, "hello from the node suite")
    assert "hello from the node suite" in answer["output"]  # the model saw it, through the pod

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    completion = client.chat.completions.create(
        model=manifest["spec"]["model"]["name"],
        messages=[{"role": "user", "content": "and through the openai client"}],
    )
    assert "and through the openai client" in (completion.choices[0].message.content or "")

    if mcp_servers:  # the pod called the MCP server, with the token from the Secret
        tool = f"{mcp_servers[0]['name']}_search_issues"
        query = f"login {name}"
        answer = invoke(url, f"use {tool} {json.dumps({'query': query})}")
        assert issue_tracker.found.get(query), "the MCP tool never ran"
        assert answer["output"] == f"The tool said: {issue_tracker.found[query]}."
        config = kubectl.get("configmap", f"{name}-agent", namespace) or {}
        logs = kubectl.run("logs", f"deployment/{name}", "-c", "agent", namespace=namespace)
        assert issue_tracker.token not in json.dumps(config) + logs.stdout


@pytest.fixture
def support_bot(kubectl: Kubectl, namespace: str, model: ModelServer) -> tuple[str, dict[str, Any]]:
    manifest = example("support-bot.yaml", model, replicas=1)
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "support-bot")
    return namespace, agent_pods(kubectl, namespace, "support-bot")[0]


PROC_STATUS = (
    "import re; s = open('/proc/1/status').read(); "
    "print(*(re.search(k + r':\\s+(\\S+)', s).group(1) "
    "for k in ('Uid', 'Gid', 'CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs')))"
)


def exec_python(kubectl: Kubectl, namespace: str, pod: str, code: str) -> str:
    return kubectl.run(
        "exec", pod, "-c", "agent", "--", "python", "-c", code, namespace=namespace
    ).stdout.strip()


def test_pod_runs_restricted_as_seen_from_inside(
    kubectl: Kubectl, support_bot: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = support_bot
    name = pod["metadata"]["name"]
    ids = exec_python(kubectl, namespace, name, "import os; print(os.getuid(), os.getgid())")
    assert ids == "10001 10001"
    # The kernel's own account of the runtime (PID 1): its user, no capabilities at all, and
    # no way to gain privileges.
    fields = exec_python(kubectl, namespace, name, PROC_STATUS).split()
    assert fields == ["10001", "10001"] + ["0000000000000000"] * 3 + ["1"], fields
    write = exec_python(
        kubectl,
        namespace,
        name,
        "import os\ntry:\n open('/usr/local/probe', 'w')\nexcept OSError as e: print(e.errno)\n",
    )
    assert write == "30", f"the root filesystem is writable (errno {write}, 30 is EROFS)"


def test_logs_are_json_lines_without_the_api_key(
    kubectl: Kubectl, support_bot: tuple[str, dict[str, Any]]
) -> None:
    namespace, pod = support_bot
    invoke(service_url(kubectl, namespace, "support-bot"), f"please repeat {API_KEY[:6]}")
    logs = kubectl.run("logs", pod["metadata"]["name"], "-c", "agent", namespace=namespace).stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines, "the runtime logged nothing"
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert all(isinstance(r, dict) for r in records)
    assert any(r.get("path") == "/v1/invoke" and r.get("request_id") for r in records)
    assert API_KEY not in logs


def test_port_forward_reaches_the_agent(
    kubectl: Kubectl, support_bot: tuple[str, dict[str, Any]]
) -> None:
    namespace, _ = support_bot
    with kubectl.port_forward("service/support-bot", 80, namespace) as port:
        answer = wait_for(
            "an answer through kubectl port-forward",
            lambda: _try_invoke(f"http://127.0.0.1:{port}", "via port-forward"),
            timeout=30,
        )
        assert "via port-forward" in answer["output"]


def _try_invoke(url: str, text: str) -> dict[str, Any] | None:
    try:
        return invoke(url, text, timeout=5)
    except OSError:
        time.sleep(0.3)
        return None


CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(3)\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
    "except OSError as e: print(type(e).__name__)\n"
)


def test_pods_reach_services_but_nothing_outside(
    kubectl: Kubectl, support_bot: tuple[str, dict[str, Any]]
) -> None:
    from localcluster import guard

    namespace, pod = support_bot
    name = pod["metadata"]["name"]

    def connect(address: str, port: int) -> str:
        return kubectl.run(
            "exec",
            name,
            "-c",
            "agent",
            "--",
            "python",
            "-c",
            CONNECT,
            address,
            str(port),
            namespace=namespace,
        ).stdout.strip()

    assert connect("10.0.0.1", 443) == "connected"  # the apiserver, through its Service
    # kube-proxy drops what pods send to an unallocated ClusterIP (before the guard could refuse
    # it): the client waits for its timeout, and nothing leaves.
    assert connect(unallocated_cluster_ip(kubectl), 80) in (
        "ConnectionRefusedError",
        "TimeoutError",
    )
    assert connect("10.244.3.7", 8080) == "ConnectionRefusedError"  # a kwok pod's fake address
    assert guard.leaked() == 0


RESOLVE = (
    "import socket, sys, time\n"
    "t = time.monotonic()\n"
    "try: print(socket.gethostbyname(sys.argv[1]), end=' ')\n"
    "except OSError as e: print(type(e).__name__, end=' ')\n"
    "print(round(time.monotonic() - t, 1))\n"
)


def test_pods_resolve_cluster_names_and_nothing_else(
    kubectl: Kubectl, support_bot: tuple[str, dict[str, Any]]
) -> None:
    """Cluster DNS (CoreDNS on the node's address): Service names resolve, short ones through
    the search path; other names fail at once, since nothing is ever asked outside."""
    from localcluster import guard

    namespace, pod = support_bot
    svc = kubectl.get("service", "support-bot", namespace) or {}

    def lookup(host: str) -> tuple[str, float]:
        out = kubectl.run(
            "exec",
            pod["metadata"]["name"],
            "-c",
            "agent",
            "--",
            "python",
            "-c",
            RESOLVE,
            host,
            namespace=namespace,
        ).stdout.split()
        return out[0], float(out[1])

    assert lookup("kubernetes.default.svc.cluster.local")[0] == "10.0.0.1"
    assert lookup("kubernetes.default")[0] == "10.0.0.1"  # the pod's search path
    assert lookup("support-bot")[0] == svc["spec"]["clusterIP"]  # its own namespace first
    answer, seconds = lookup("example.com")
    assert answer == "gaierror", answer
    assert seconds < 2, f"a name outside the cluster took {seconds}s to fail (a forward?)"
    assert guard.leaked() == 0
