"""Dapr for real, on the real node: Dapr's own injector adds daprd to our pods (which stay
`restricted`), the operator's inline Components reach Redis through Dapr's operator, sessions
outlive pods and span replicas, and a question on a topic is answered on the reply topic."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from typing import Any

import pytest

from localcluster import LocalCluster, daprbuild
from localcluster.kubectl import Kubectl, condition, wait_for
from localcluster.model_server import ModelServer

from .conftest import agent_pods, example, service_url, wait_ready
from .test_agents import invoke

REDIS_SECRET = "redis"


@pytest.fixture
def redis_secret(cluster: LocalCluster, kubectl: Kubectl, namespace: str) -> str:
    """The test's namespace, which holds the Redis password as a Secret (the only place it
    travels; see conftest.restricted_namespace)."""
    assert cluster.redis is not None, "the node suite runs with Dapr (LocalCluster(dapr=True))"
    assert kubectl.get("secret", REDIS_SECRET, namespace), "no redis Secret in the namespace"
    return namespace


def helpdesk(cluster: LocalCluster, model: ModelServer, **spec: Any) -> dict[str, Any]:
    """examples/dapr/helpdesk.yaml, its Components pointed at this cluster's Redis."""
    assert cluster.redis is not None
    manifest = example("dapr/helpdesk.yaml", model, **spec)
    dapr = manifest["spec"]["dapr"]
    for field in ("stateStore", "pubsub"):
        for entry in (dapr.get(field) or {}).get("metadata", []):
            if entry["name"] == "redisHost":
                entry["value"] = cluster.redis.address
    return manifest


def dapr_ready(kubectl: Kubectl, namespace: str, name: str, status: str = "True") -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", name, namespace) or {}
        return agent if condition(agent, "DaprReady").get("status") == status else None

    found: dict[str, Any] = wait_for(f"{name} DaprReady={status}", reached, timeout=240, interval=1)
    return found


def pod_url(pod: dict[str, Any]) -> str:
    return f"http://{pod['status']['podIP']}:8080"


def test_sidecar_injected_by_dapr_and_pod_still_restricted(
    cluster: LocalCluster, kubectl: Kubectl, redis_secret: str, model: ModelServer
) -> None:
    namespace = redis_secret
    manifest = helpdesk(cluster, model, replicas=1)
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "helpdesk")
    agent = dapr_ready(kubectl, namespace, "helpdesk")
    assert "1/1" in condition(agent, "DaprReady")["message"]

    [pod] = agent_pods(kubectl, namespace, "helpdesk")
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    # Dapr's injector (a mutating webhook in dapr-system) added daprd: our Deployment has one
    # container, the pod two.
    deployment = kubectl.get("deployment", "helpdesk", namespace) or {}
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["agent"]
    assert set(containers) == {"agent", "daprd"}, sorted(containers)
    daprd = containers["daprd"]
    assert daprd["image"] == daprbuild.sidecar_image()
    args = " ".join(daprd.get("args") or [])
    for flag in ("--app-id helpdesk", "--app-port 8080", "--log-level info"):
        assert flag in args, f"{flag!r} not in daprd's args: {args}"
    # The namespace enforces `restricted`: the pod exists, so the API server admitted it with the
    # sidecar in it. What makes it pass, seen on the container itself:
    security = daprd.get("securityContext") or {}
    assert security.get("capabilities", {}).get("drop") == ["ALL"], security
    assert security.get("allowPrivilegeEscalation") is False, security
    assert pod["spec"]["securityContext"].get("runAsNonRoot") is True
    assert pod["spec"]["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault"
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert statuses["daprd"]["ready"] and statuses["agent"]["ready"]

    # The Components the spec declares, created by the operator: scoped to this app id, owned
    # by the AIAgent, the password a reference to the Secret (never its value).
    for name, kind in (("helpdesk-memory", "state.redis"), ("helpdesk-bus", "pubsub.redis")):
        component = kubectl.get("component", name, namespace) or {}
        assert component["spec"]["type"] == kind
        assert component["scopes"] == ["helpdesk"]
        [owner] = component["metadata"]["ownerReferences"]
        assert owner["kind"] == "AIAgent" and owner["name"] == "helpdesk"
        secret_entry = next(
            m for m in component["spec"]["metadata"] if m["name"] == "redisPassword"
        )
        assert secret_entry == {
            "name": "redisPassword",
            "secretKeyRef": {"name": REDIS_SECRET, "key": "password"},
        }
        assert cluster.redis is not None and cluster.redis.password not in json.dumps(component)

    # daprd loaded both, with the password Dapr's operator resolved from the Secret.
    logs = kubectl.run("logs", pod["metadata"]["name"], "-c", "daprd", namespace=namespace).stdout
    for name in ("helpdesk-memory", "helpdesk-bus"):
        assert f"Component loaded: {name}" in logs, logs[-3000:]


def test_session_outlives_pods_and_spans_replicas(
    cluster: LocalCluster, kubectl: Kubectl, redis_secret: str, model: ModelServer
) -> None:
    namespace = redis_secret
    manifest = helpdesk(cluster, model, replicas=3)
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "helpdesk", timeout=300)
    dapr_ready(kubectl, namespace, "helpdesk")
    pods = agent_pods(kubectl, namespace, "helpdesk")
    assert len(pods) == 3
    session = f"s-{uuid.uuid4().hex[:8]}"

    # One conversation, each turn on the next replica: every replica sees every earlier turn.
    for turn, pod in enumerate(pods * 2, start=1):
        answer = invoke(pod_url(pod), f"turn {turn} on {pod['metadata']['name']}", session)
        assert f"(turn {turn})" in answer["output"], (turn, answer)

    # Concurrent turns of one session on different replicas: none is lost (ETag, first write wins).
    before = len(pods) * 2
    errors: list[str] = []

    def ask(pod: dict[str, Any], text: str) -> None:
        try:
            invoke(pod_url(pod), text, session, timeout=60)
        except Exception as e:  # noqa: BLE001  any failure counts
            errors.append(repr(e))

    threads = [
        threading.Thread(target=ask, args=(pod, f"concurrent {i}"))
        for i, pod in enumerate(pods * 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    history = invoke(service_url(kubectl, namespace, "helpdesk"), "how many so far?", session)
    assert f"(turn {before + len(threads) + 1})" in history["output"], history

    # Every pod deleted: the conversation is in Redis, not in any of them.
    kubectl.run(
        "delete", "pods", "-l", "aiagents.dev/agent=helpdesk", "--wait=true", namespace=namespace
    )
    wait_for(
        "three new pods ready",
        lambda: (
            len(ready := [p for p in agent_pods(kubectl, namespace, "helpdesk") if _ready(p)]) == 3
            and not {p["metadata"]["name"] for p in ready} & {p["metadata"]["name"] for p in pods}
        ),
        timeout=300,
        interval=1,
    )
    answer = invoke(service_url(kubectl, namespace, "helpdesk"), "still remember?", session)
    assert f"(turn {before + len(threads) + 2})" in answer["output"], answer


def _ready(pod: dict[str, Any]) -> bool:
    return all(s.get("ready") for s in pod.get("status", {}).get("containerStatuses") or [{}])


def test_question_on_a_topic_is_answered_on_the_reply_topic(
    cluster: LocalCluster, kubectl: Kubectl, redis_secret: str, model: ModelServer
) -> None:
    assert cluster.redis is not None
    namespace = redis_secret
    manifest = helpdesk(cluster, model, replicas=1)
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "helpdesk")
    dapr_ready(kubectl, namespace, "helpdesk")
    [pod] = agent_pods(kubectl, namespace, "helpdesk")

    # Published through the pod's own sidecar (its HTTP API, port-forwarded like a user would),
    # carried by Redis streams, delivered by daprd to the runtime, answered on `answers`.
    correlation = f"c-{uuid.uuid4().hex[:8]}"
    with kubectl.port_forward(f"pod/{pod['metadata']['name']}", 3500, namespace) as port:
        publish(port, "helpdesk-bus", "questions", {"input": "ping", "correlationId": correlation})
        publish(port, "helpdesk-bus", "questions", {"not": "a question"})

    def reply() -> dict[str, Any] | None:
        for event in stream_events(cluster, "answers"):
            data = event.get("data") or {}
            if data.get("correlationId") == correlation:
                return dict(data)
        return None

    answer = wait_for("the answer on the reply topic", reply, timeout=120, interval=1)
    assert "ping" in answer["output"], answer
    dead = wait_for(
        "the bad message on the dead-letter topic",
        lambda: [
            e for e in stream_events(cluster, "questions-dead") if "not" in (e.get("data") or {})
        ],
        timeout=120,
        interval=1,
    )
    assert dead


def publish(port: int, pubsub: str, topic: str, data: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1.0/publish/{pubsub}/{topic}",
        json.dumps(data).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204, response.status


def stream_events(cluster: LocalCluster, topic: str) -> list[dict[str, Any]]:
    """The CloudEvents Dapr's redis pub/sub wrote to a topic (a Redis stream of that name),
    read with Debian's redis-cli."""
    assert cluster.redis is not None
    out = cluster.redis.cli("--json", "XRANGE", topic, "-", "+")
    events = []
    for _, fields in json.loads(out or "[]"):
        record = dict(zip(fields[::2], fields[1::2], strict=True))
        if "data" in record:
            events.append(json.loads(record["data"]))
    return events


def test_missing_component_is_named_in_dapr_ready(
    kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    manifest = example("support-bot.yaml", model, replicas=1)
    manifest["spec"]["dapr"] = {"stateStore": {"name": "nowhere-store"}}
    kubectl.apply(manifest, namespace=namespace)
    agent = dapr_ready(kubectl, namespace, "support-bot", status="False")
    dapr = condition(agent, "DaprReady")
    assert dapr["reason"] == "ComponentMissing", dapr
    assert "nowhere-store" in dapr["message"] and "spec.dapr.stateStore" in dapr["message"], dapr
    # Creating it is all it takes.
    kubectl.apply(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "nowhere-store"},
            "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
        },
        namespace=namespace,
    )
    started = time.monotonic()
    dapr_ready(kubectl, namespace, "support-bot")
    print(f"DaprReady after the Component appeared: {time.monotonic() - started:.0f}s")
