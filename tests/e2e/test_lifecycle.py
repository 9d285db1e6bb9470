"""Updates, scaling, drift and deletion of a running AIAgent, through kubectl."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from aiagent_operator.render import FIELD_MANAGER, MANAGED_BY_LABEL
from localcluster.kubectl import Kubectl, condition, load_example, wait_for

pytestmark = pytest.mark.usefixtures("operator", "api_key_secrets")


def ready_agent(
    kubectl: Kubectl, namespace: str, manifest: dict[str, Any], timeout: float = 90
) -> dict[str, Any]:
    name = manifest["metadata"]["name"]
    kubectl.apply(manifest, namespace=namespace)
    return wait_for(
        f"AIAgent {name} Ready",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and a.get("status", {}).get("phase") == "Ready"
            and a["status"].get("observedGeneration") == a["metadata"]["generation"]
            and a
        ),
        timeout=timeout,
    )


def ready_replicas(kubectl: Kubectl, namespace: str, name: str, count: int) -> dict[str, Any]:
    return wait_for(
        f"{count} ready replicas of {name}",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and a.get("status", {}).get("readyReplicas") == count
            and a["status"].get("phase") == "Ready"
            and a
        ),
        timeout=90,
    )


def test_model_change_updates_config_and_rolls_pods(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("support-bot.yaml", replicas=1)
    ready_agent(kubectl, namespace, manifest)
    before = kubectl.get("deployment", "support-bot", namespace)
    assert before is not None
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["aiagents.dev/config-hash"]

    manifest["spec"]["model"]["name"] = "gpt-4o"
    ready_agent(kubectl, namespace, manifest)
    configmap = kubectl.get("configmap", "support-bot-agent", namespace)
    assert configmap is not None
    assert yaml.safe_load(configmap["data"]["agent.yaml"])["model"]["name"] == "gpt-4o"
    after = wait_for(
        "the pod template to change",
        lambda: (
            (d := kubectl.get("deployment", "support-bot", namespace))
            and d["spec"]["template"]["metadata"]["annotations"]["aiagents.dev/config-hash"]
            != old_hash
            and d
        ),
    )

    # A new ReplicaSet (a new pod-template-hash) rolls out and becomes the only one with pods.
    def rolled() -> bool:
        sets = kubectl.list("replicasets", namespace, "aiagents.dev/agent=support-bot")
        active = [rs for rs in sets if rs["spec"].get("replicas", 0) > 0]
        return len(sets) == 2 and len(active) == 1 and active[0]["status"].get("readyReplicas") == 1

    wait_for("the rollout to a new ReplicaSet", rolled, timeout=90)
    assert after["metadata"]["generation"] > before["metadata"]["generation"]


def test_scale_through_scale_subresource_and_spec(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("research-crew.yaml")
    ready_agent(kubectl, namespace, manifest)

    kubectl.run("scale", "aiagent", "research-crew", "--replicas=5", namespace=namespace)
    agent = ready_replicas(kubectl, namespace, "research-crew", 5)
    assert agent["spec"]["replicas"] == 5
    assert len(kubectl.list("pods", namespace, "aiagents.dev/agent=research-crew")) == 5
    scale = json.loads(
        kubectl.run(
            "get",
            "--raw",
            f"/apis/aiagents.dev/v1alpha1/namespaces/{namespace}/aiagents/research-crew/scale",
        ).stdout
    )
    assert scale["status"]["replicas"] == 5
    assert scale["status"]["selector"] == "aiagents.dev/agent=research-crew"

    manifest["spec"]["replicas"] = 2
    kubectl.apply(manifest, namespace=namespace)
    ready_replicas(kubectl, namespace, "research-crew", 2)
    wait_for(
        "pods to scale down to 2",
        lambda: len(kubectl.list("pods", namespace, "aiagents.dev/agent=research-crew")) == 2,
        timeout=60,
    )


def test_autoscaling_off_removes_hpa_and_on_restores_it(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("autoscaled-agent.yaml")
    ready_agent(kubectl, namespace, manifest)
    hpa = kubectl.get("hpa", "autoscaled-agent", namespace)
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "ContainerResource"
    assert metric["containerResource"]["target"]["averageUtilization"] == 70

    manifest["spec"]["autoscaling"]["enabled"] = False
    manifest["spec"]["replicas"] = 3
    ready_agent(kubectl, namespace, manifest)
    wait_for(
        "the HPA to be deleted", lambda: kubectl.get("hpa", "autoscaled-agent", namespace) is None
    )
    ready_replicas(kubectl, namespace, "autoscaled-agent", 3)

    manifest["spec"]["autoscaling"]["enabled"] = True
    ready_agent(kubectl, namespace, manifest)
    wait_for("the HPA to come back", lambda: kubectl.get("hpa", "autoscaled-agent", namespace))


def test_drift_is_restored(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("local-model-agent.yaml", replicas=2)
    ready_agent(kubectl, namespace, manifest)
    service = kubectl.get("service", "local-model-agent", namespace)
    assert service is not None

    kubectl.run("delete", "service", "local-model-agent", namespace=namespace)
    restored = wait_for(
        "the Service to be recreated",
        lambda: (
            (s := kubectl.get("service", "local-model-agent", namespace))
            and s["metadata"]["uid"] != service["metadata"]["uid"]
            and s
        ),
    )
    assert restored["spec"]["ports"][0]["port"] == 8080

    # Hand edits to fields the operator owns: replicas and a label.
    kubectl.run("scale", "deployment", "local-model-agent", "--replicas=4", namespace=namespace)
    kubectl.run(
        "label",
        "deployment",
        "local-model-agent",
        "app.kubernetes.io/name=hijacked",
        "--overwrite",
        namespace=namespace,
    )
    wait_for(
        "the Deployment's replicas and labels to be restored",
        lambda: (
            (d := kubectl.get("deployment", "local-model-agent", namespace))
            and d["spec"]["replicas"] == 2
            and d["metadata"]["labels"]["app.kubernetes.io/name"] == "local-model-agent"
        ),
    )

    kubectl.run("delete", "configmap", "local-model-agent-agent", namespace=namespace)
    wait_for(
        "the ConfigMap to be recreated",
        lambda: kubectl.get("configmap", "local-model-agent-agent", namespace),
    )

    # The label the operator's watches select on (server-side): without it the Service leaves
    # the watch, which reads as deleted, and the operator puts it back.
    kubectl.run(
        "label", "service", "local-model-agent", f"{MANAGED_BY_LABEL}-", namespace=namespace
    )
    wait_for(
        "the Service's managed-by label to be restored",
        lambda: (
            (s := kubectl.get("service", "local-model-agent", namespace))
            and s["metadata"]["labels"].get(MANAGED_BY_LABEL) == FIELD_MANAGER
        ),
    )


def test_deleting_the_agent_garbage_collects_children(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("autoscaled-agent.yaml")
    ready_agent(kubectl, namespace, manifest)
    kubectl.run(
        "delete", "aiagent", "autoscaled-agent", "--wait=true", "--timeout=60s", namespace=namespace
    )

    def all_gone() -> bool:
        return all(
            kubectl.get(kind, name, namespace) is None
            for kind, name in (
                ("configmap", "autoscaled-agent-agent"),
                ("deployment", "autoscaled-agent"),
                ("service", "autoscaled-agent"),
                ("hpa", "autoscaled-agent"),
            )
        ) and not kubectl.list("pods", namespace, "aiagents.dev/agent=autoscaled-agent")

    wait_for("every child to be garbage-collected", all_gone, timeout=90)


def test_missing_secret_then_recovery(kubectl: Kubectl, namespace: str) -> None:
    manifest = load_example("support-bot.yaml")
    manifest["spec"]["model"]["apiKeySecretRef"] = {"name": "late-key", "key": "api-key"}
    kubectl.apply(manifest, namespace=namespace)
    agent = wait_for(
        "Ready=False naming the Secret",
        lambda: (
            (a := kubectl.get("aiagent", "support-bot", namespace))
            and condition(a, "Ready").get("reason") == "SecretNotFound"
            and a
        ),
    )
    ready = condition(agent, "Ready")
    assert ready["status"] == "False" and "late-key" in ready["message"]
    assert agent["status"]["phase"] == "Pending"
    generation = agent["metadata"]["generation"]

    kubectl.run(
        "create",
        "secret",
        "generic",
        "late-key",
        "--from-literal=api-key=sk-e2e",
        namespace=namespace,
    )
    agent = wait_for(
        "recovery once the Secret exists",
        lambda: (
            (a := kubectl.get("aiagent", "support-bot", namespace))
            and a.get("status", {}).get("phase") == "Ready"
            and a
        ),
        timeout=60,
    )
    assert agent["metadata"]["generation"] == generation  # nobody touched the AIAgent
    assert condition(agent, "Ready")["status"] == "True"
