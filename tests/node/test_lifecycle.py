"""What happens to real pods over time: a rollout under traffic loses nothing, a killed runtime
comes back, a crash-looping agent says why, and the HPA scales on real CPU."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from localcluster import LocalCluster
from localcluster.kubectl import Kubectl, wait_for
from localcluster.model_server import ModelServer

from .conftest import agent_pods, example, service_url, wait_ready
from .test_agents import invoke


def test_model_change_rolls_pods_with_zero_failed_requests(
    kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    manifest = example("support-bot.yaml", model, replicas=2)
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "support-bot")
    before = {p["metadata"]["name"] for p in agent_pods(kubectl, namespace, "support-bot")}
    url = service_url(kubectl, namespace, "support-bot")

    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                invoke(url, "steady traffic", timeout=20)
                answered += 1
            except Exception as e:  # noqa: BLE001  every kind of failure counts
                failures.append(repr(e))
            time.sleep(0.05)

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(2)
        manifest["spec"]["model"]["name"] = "gpt-4o"  # a model change: new config, new pods
        kubectl.apply(manifest, namespace=namespace)

        def rolled() -> bool:
            pods = agent_pods(kubectl, namespace, "support-bot")
            names = {p["metadata"]["name"] for p in pods}
            return len(pods) == 2 and not names & before

        wait_for("every pod replaced", rolled, timeout=240, interval=1)
        wait_ready(kubectl, namespace, "support-bot")
        time.sleep(2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert answered > 20, f"too little traffic to prove anything ({answered} answers)"
    assert not failures, (
        f"{len(failures)} of {answered + len(failures)} requests failed: {failures[:5]}"
    )
    sent = [r for r in model.recorder.requests if r.get("model") == "gpt-4o"]
    assert sent, "the new pods never used the new model"


def container_pid(cluster: LocalCluster, pod: dict[str, Any]) -> int:
    """The host PID of the pod's agent container, from containerd."""
    assert cluster.node is not None
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
    out = cluster.node.ctr("tasks", "list").stdout.splitlines()[1:]  # TASK PID STATUS
    for line in out:
        parts = line.split()
        if parts and parts[0] == container_id:
            return int(parts[1])
    raise AssertionError(f"container {container_id} not among containerd's tasks:\n{out}")


def test_killed_runtime_is_restarted_and_serves_again(
    cluster: LocalCluster, kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    kubectl.apply(example("support-bot.yaml", model, replicas=1), namespace=namespace)
    wait_ready(kubectl, namespace, "support-bot")
    pod = agent_pods(kubectl, namespace, "support-bot")[0]
    os.kill(container_pid(cluster, pod), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        fresh = kubectl.get("pod", pod["metadata"]["name"], namespace) or {}
        status = (fresh.get("status") or {}).get("containerStatuses") or [{}]
        return fresh if status[0].get("restartCount", 0) >= 1 and status[0].get("ready") else None

    fresh = wait_for("the runtime restarted and ready", restarted, timeout=120, interval=1)
    last = fresh["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert last["exitCode"] == 137  # SIGKILL
    wait_ready(kubectl, namespace, "support-bot")
    answer = invoke(service_url(kubectl, namespace, "support-bot"), "are you back")
    assert "are you back" in answer["output"]


def test_crash_looping_agent_shows_failed_with_the_reason(
    kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    from localcluster.images import AGENT_LANGCHAIN_IMAGE

    # A CrewAI agent on the LangChain-only image: the runtime cannot import its framework.
    manifest = example("research-crew.yaml", model, image=AGENT_LANGCHAIN_IMAGE)
    kubectl.apply(manifest, namespace=namespace)

    def failed() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", "research-crew", namespace) or {}
        status = agent.get("status") or {}
        return status if status.get("phase") in ("Failed", "Degraded") else None

    status = wait_for("the agent Failed", failed, timeout=180, interval=1)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert status["phase"] == "Failed" and ready["status"] == "False"
    assert ready["reason"] in ("CrashLoopBackOff", "RunContainerError"), ready
    # The message names the pod and says what the container said before it died.
    assert "pod research-crew-" in ready["message"] and "exit code 1" in ready["message"]
    assert "crewai" in ready["message"].lower(), ready["message"]


def test_hpa_scales_on_real_cpu_and_status_follows(
    kubectl: Kubectl, namespace: str, model: ModelServer
) -> None:
    manifest = example(
        "autoscaled-agent.yaml",
        model,
        resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
    )
    manifest["spec"]["autoscaling"]["maxReplicas"] = 4
    kubectl.apply(manifest, namespace=namespace)
    wait_ready(kubectl, namespace, "autoscaled-agent")
    url = service_url(kubectl, namespace, "autoscaled-agent")

    def top() -> str | None:
        # kubectl top reads the same metrics API as the HPA: metrics-server's real numbers.
        result = kubectl.run(
            "top",
            "pods",
            "-l",
            "aiagents.dev/agent=autoscaled-agent",
            namespace=namespace,
            check=False,
        )
        return result.stdout if result.returncode == 0 else None

    assert "autoscaled-agent-" in wait_for(
        "kubectl top to show the pod", top, timeout=120, interval=2
    )
    started = time.monotonic()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                invoke(url, "triage this ticket", timeout=10)
            except OSError:
                time.sleep(0.1)

    workers = [threading.Thread(target=load) for _ in range(6)]
    for worker in workers:
        worker.start()
    try:

        def scaled() -> dict[str, Any] | None:
            agent = kubectl.get("aiagent", "autoscaled-agent", namespace) or {}
            status = agent.get("status") or {}
            return status if status.get("replicas", 0) >= 3 else None

        status = wait_for("the AIAgent at 3 or more replicas", scaled, timeout=240, interval=2)
        print(
            f"HPA scale-up 1 -> {status['replicas']}: {time.monotonic() - started:.0f}s under load"
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=15)
    hpa = kubectl.get("hpa", "autoscaled-agent", namespace) or {}
    assert hpa["status"]["desiredReplicas"] >= 3
    metric = hpa["status"]["currentMetrics"][0]
    # Dapr's sidecar is in every pod here: the HPA measures the agent container alone.
    assert metric["type"] == "ContainerResource", metric
    assert metric["containerResource"]["container"] == "agent", metric
    pods = agent_pods(kubectl, namespace, "autoscaled-agent")
    assert all("daprd" in {c["name"] for c in p["spec"]["containers"]} for p in pods)
    current = metric["containerResource"]["current"]
    assert int(current.get("averageUtilization", 0)) > 0, metric
    assert status["replicas"] >= 3
