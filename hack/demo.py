"""`make demo`: the whole product in one command, on a local cluster (or $KUBECONFIG).

On a host that can run the real node (Linux, root), the demo builds or reuses our images, starts
the local cluster with a real kubelet node beside the kwok nodes, a local OpenAI-compatible model
server, the operator, and every example; then it asks an agent a question through its Service,
scales one agent to 5 real replicas that all answer, drives the autoscaled example up and back
down with generated load on real CPU, and shows a Dapr-enabled agent (sidecar injected by Dapr's
own control plane, memory in Redis) remembering a conversation after its pods are deleted.
Elsewhere it says why in one line and shows the same reconciliation on kwok's fake nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from localcluster import LocalCluster
from localcluster.kubectl import EXAMPLES, REPO, Kubectl, OperatorProcess, load_example, wait_for
from localcluster.mcp_server import IssueTracker, point_mcp_servers_at
from localcluster.model_server import ModelServer

NAMESPACE = "aiagent-demo"
QUESTION = "calculate 6 * 7"  # the model server asks for the calculator tool, then answers


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


@contextlib.contextmanager
def cluster() -> Iterator[tuple[Path, LocalCluster | None]]:
    """(kubeconfig, local cluster or None): the user's cluster when KUBECONFIG names one."""
    given = os.environ.get("KUBECONFIG")
    if given and Path(given).exists():
        say(f"using the cluster in KUBECONFIG={given}")
        yield Path(given), None
        return
    local = LocalCluster(hpa_downscale_window="30s", dapr=True)
    if local.real_node:
        say(
            "starting a local cluster with a real node: builds (or reuses) the Go binaries and our "
            "images, then etcd, kube-apiserver, controller-manager, scheduler, kwok, containerd, "
            "CoreDNS, kubelet, kube-proxy, metrics-server, Redis, and Dapr (its own Helm chart)"
        )
    else:
        print(
            f"\nno real node here: {local.skip_reason}; showing the operator on kwok's fake nodes"
        )
    started = time.monotonic()
    with local:
        print(f"    up in {time.monotonic() - started:.1f}s; KUBECONFIG={local.kubeconfig}")
        yield Path(local.kubeconfig), local


def show(kubectl: Kubectl, *args: str) -> None:
    print(kubectl.run(*args, namespace=NAMESPACE).stdout.rstrip(), flush=True)


def invoke(url: str, text: str, timeout: float = 30, session: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": text}
    if session:
        body["session_id"] = session
    request = urllib.request.Request(
        f"{url}/v1/invoke",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def service_url(kubectl: Kubectl, name: str) -> str:
    """The Service's ClusterIP and the port it exposes (not the container's)."""
    svc = kubectl.get("service", name, NAMESPACE) or {}
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def pointed_at(manifest: dict[str, Any], model_url: str) -> dict[str, Any]:
    """An example with its model served by the local model server (it speaks OpenAI's API)."""
    model = manifest["spec"]["model"]
    if model.get("provider") not in (None, "openai"):
        model["provider"] = "openai-compatible"
    model["baseURL"] = model_url
    return manifest


def main() -> int:
    with cluster() as (kubeconfig, local), tempfile.TemporaryDirectory() as tmp:
        real = bool(local and local.real_node)
        kubectl = Kubectl(kubeconfig)
        say("installing the CRDs (kubectl apply -f crds/)")
        print(kubectl.run("apply", "-f", str(REPO / "crds")).stdout.rstrip())
        kubectl.run("wait", "--for=condition=Established", "crd/aiagents.aiagents.dev")
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        # Placeholders: the local model server takes any key; on the real node the MCP one is
        # replaced by the local MCP server's token.
        kubectl.apply_secret("openai", "api-key", "sk-demo", NAMESPACE)
        kubectl.apply_secret("anthropic", "api-key", "sk-demo", NAMESPACE)
        kubectl.apply_secret("github-mcp", "authorization", "Bearer demo", NAMESPACE)
        model = None
        tracker: IssueTracker | None = None
        if real:
            assert local is not None
            if local.redis is not None:
                say("the Dapr state store support-bot names (statestore), on the cluster's Redis")
                kubectl.apply(local.redis.secret(), namespace=NAMESPACE)
                comp = local.redis.component("statestore", "state.redis")
                print(kubectl.apply(comp, namespace=NAMESPACE).rstrip())
            model = ModelServer(host=local.node_ip).start()
            say(f"a local OpenAI-compatible model server at {model.base_url} (the only fake)")
            tracker = IssueTracker(local.node_ip).start()
            say(f"a local MCP server for examples/mcp-agent.yaml at {tracker.url}")

        say("starting the operator (python -m aiagent_operator)")
        log = Path(tmp) / "operator.log"
        operator = OperatorProcess(kubeconfig, log, standalone="true", watch_namespaces=NAMESPACE)
        operator.start()
        try:
            say(
                "kubectl apply -f examples/"
                + (" (models pointed at the local server)" if real else "")
            )
            names = []
            for path in sorted(EXAMPLES.glob("*.yaml")):
                wants_mcp = "mcpServers" in yaml.safe_load(path.read_text())["spec"]["agent"]
                if wants_mcp and local is None:
                    say(f"skipping {path.name}: its MCP server must be reachable from your cluster")
                    continue
                if model is not None:
                    manifest: dict[str, Any] | str = pointed_at(
                        yaml.safe_load(path.read_text()), model.base_url
                    )
                    if manifest["metadata"]["name"] == "autoscaled-agent":
                        # Small requests so the 2-core node fits many replicas.
                        manifest["spec"]["resources"] = {
                            "requests": {"cpu": "100m", "memory": "256Mi"}
                        }
                    if wants_mcp and tracker is not None:
                        point_mcp_servers_at(manifest, tracker, kubectl, NAMESPACE)
                elif local is not None:  # kwok nodes are tainted; tolerate them
                    manifest = load_example(path.name)
                else:
                    manifest = path.read_text()
                names.append(yaml.safe_load(path.read_text())["metadata"]["name"])
                print(kubectl.apply(manifest, namespace=NAMESPACE).rstrip())

            say(
                "waiting until every AIAgent is Ready"
                + (" (real pods: image, probes)" if real else "")
            )
            for name in names:
                wait_for(f"{name} Ready", lambda n=name: _ready(kubectl, n)[1] == "Ready", 300)
            show(kubectl, "get", "aiagents,deploy,svc,hpa")
            if real:
                show(kubectl, "get", "pods", "-o", "wide")
                ask_through_service(kubectl)
            scale_to_five(kubectl, operator, real)
            if real:
                autoscale(kubectl)
                assert local is not None and model is not None
                remember_across_pod_deletion(kubectl, local, model.base_url)
        except AssertionError as exc:
            print(f"demo failed: {exc}\noperator log:\n{operator.log_tail()}", file=sys.stderr)
            show(kubectl, "get", "aiagents,deploy,pods", "-o", "wide")
            return 1
        finally:
            operator.stop()
            if model is not None:
                model.stop()
            if tracker is not None:
                tracker.stop()
        say("done. `make cluster` keeps a cluster up; `make test` runs every test.")
    return 0


def ask_through_service(kubectl: Kubectl) -> None:
    url = service_url(kubectl, "support-bot")
    say(f"asking support-bot through its Service: POST {url}/v1/invoke {QUESTION!r}")
    answer = invoke(url, QUESTION)
    print(f"    answer: {answer['output']!r}")
    print(f"    (session {answer['session_id']}, usage {answer['usage']})")


def scale_to_five(kubectl: Kubectl, operator: OperatorProcess, real: bool) -> None:
    say("scaling support-bot: kubectl scale aiagent support-bot --replicas=5")
    kubectl.run("scale", "aiagent", "support-bot", "--replicas=5", namespace=NAMESPACE)
    seen: set[tuple[int, str]] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = _ready(kubectl, "support-bot")
        if state not in seen:
            seen.add(state)
            show(kubectl, "get", "aiagent", "support-bot", "--no-headers")
        if state == (5, "Ready"):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("support-bot did not reach 5 ready replicas")
    show(kubectl, "get", "pods", "-l", "aiagents.dev/agent=support-bot", "-o", "wide")
    if real:
        say("each of the 5 runtime processes answers on its own pod IP")
        for pod in kubectl.list("pods", NAMESPACE, "aiagents.dev/agent=support-bot"):
            ip = pod["status"]["podIP"]
            answer = invoke(f"http://{ip}:8080", f"hello {pod['metadata']['name']}")
            print(f"    {pod['metadata']['name']} ({ip}): {answer['output']!r}")


def autoscale(kubectl: Kubectl) -> None:
    name = "autoscaled-agent"
    url = service_url(kubectl, name)
    say(f"generating load on {name} through its Service ({url}); the HPA reads real CPU")
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                invoke(url, "triage: my invoice is wrong", timeout=10)

    workers = [threading.Thread(target=hammer, daemon=True) for _ in range(8)]
    for worker in workers:
        worker.start()
    started = time.monotonic()
    try:
        peak = _watch_hpa(kubectl, name, until=lambda r: r >= 3, timeout=240)
        print(f"    scaled 1 -> {peak} in {time.monotonic() - started:.0f}s")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=15)
    say("load stopped; the HPA scales back down (stabilization window shortened to 30s here)")
    started = time.monotonic()
    _watch_hpa(kubectl, name, until=lambda r: r == 1, timeout=300)
    print(f"    back to 1 replica in {time.monotonic() - started:.0f}s")
    show(kubectl, "get", "aiagent", name)


def remember_across_pod_deletion(kubectl: Kubectl, local: LocalCluster, model_url: str) -> None:
    """examples/dapr/helpdesk.yaml: conversation memory in Redis through Dapr's state store."""
    assert local.redis is not None
    manifest = pointed_at(
        yaml.safe_load((EXAMPLES / "dapr" / "helpdesk.yaml").read_text()), model_url
    )
    manifest["spec"]["replicas"] = 2
    for field in ("stateStore", "pubsub"):
        for entry in manifest["spec"]["dapr"][field].get("metadata", []):
            if entry["name"] == "redisHost":
                entry["value"] = local.redis.address
    say("Dapr: kubectl apply -f examples/dapr/helpdesk.yaml (its Components point at local Redis)")
    print(kubectl.apply(manifest, namespace=NAMESPACE).rstrip())
    wait_for("helpdesk Ready", lambda: _ready(kubectl, "helpdesk") == (2, "Ready"), 300)
    wait_for("helpdesk DaprReady", lambda: _dapr_ready(kubectl, "helpdesk"), 300)
    show(kubectl, "get", "components")
    show(kubectl, "get", "pods", "-l", "aiagents.dev/agent=helpdesk")
    pod = kubectl.list("pods", NAMESPACE, "aiagents.dev/agent=helpdesk")[0]
    containers = [c["name"] for c in pod["spec"]["containers"]]
    print(f"    containers of {pod['metadata']['name']}: {containers} (daprd: Dapr's injector)")
    url = service_url(kubectl, "helpdesk")
    session = "demo-session"
    for text in ("my name is Ada", "I ordered the blue one"):
        answer = invoke(url, text, session=session)
        print(f"    {text!r} -> {answer['output']!r}")
    say("deleting every helpdesk pod: the conversation lives in Redis, not in the pods")
    kubectl.run("delete", "pods", "-l", "aiagents.dev/agent=helpdesk", namespace=NAMESPACE)
    wait_for("helpdesk Ready again", lambda: _ready(kubectl, "helpdesk") == (2, "Ready"), 300)
    show(kubectl, "get", "pods", "-l", "aiagents.dev/agent=helpdesk")
    answer = invoke(url, "what is my name?", session=session)
    print(f"    'what is my name?' -> {answer['output']!r}")
    print("    (the model saw the whole conversation: the turn count is the history it was sent)")


def _dapr_ready(kubectl: Kubectl, name: str) -> bool:
    status = (kubectl.get("aiagent", name, NAMESPACE) or {}).get("status") or {}
    return any(
        c["type"] == "DaprReady" and c["status"] == "True" for c in status.get("conditions") or []
    )


def _watch_hpa(kubectl: Kubectl, name: str, until: Any, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    last = ""
    peak = 0
    while time.monotonic() < deadline:
        hpa = kubectl.get("hpa", name, NAMESPACE) or {}
        status = hpa.get("status", {})
        replicas = int(status.get("currentReplicas", 0))
        cpu = next(
            (
                m.get("containerResource", m.get("resource", {})).get("current", {})
                for m in status.get("currentMetrics") or []
            ),
            {},
        )
        line = f"    hpa: cpu {cpu.get('averageUtilization', '?')}%/70%, replicas {replicas}"
        if line != last:
            print(line, flush=True)
            last = line
        peak = max(peak, replicas)
        if replicas and until(replicas):
            return peak
        time.sleep(2)
    raise AssertionError(f"the HPA of {name} did not get there in {timeout:.0f}s ({last.strip()})")


def _ready(kubectl: Kubectl, name: str) -> tuple[int, str]:
    status = (kubectl.get("aiagent", name, NAMESPACE) or {}).get("status") or {}
    return status.get("readyReplicas", 0), status.get("phase", "")


if __name__ == "__main__":
    sys.exit(main())
