"""Every example, applied with kubectl, becomes a Ready agent with the children it should have."""

from __future__ import annotations

import pytest
import yaml

from localcluster.kubectl import (
    EXAMPLES,
    Kubectl,
    OperatorProcess,
    condition,
    load_example,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator", "api_key_secrets")


@pytest.mark.parametrize(
    "example", sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.yaml"))
)
def test_example_becomes_ready(
    kubectl: Kubectl, namespace: str, example: str, operator: OperatorProcess
) -> None:
    manifest = load_example(example)
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    kubectl.apply(manifest, namespace=namespace)

    agent = wait_for(
        f"AIAgent {name} to be Ready",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and a.get("status", {}).get("phase") == "Ready"
            and a
        ),
        timeout=90,
    )
    status = agent["status"]
    wanted = (
        spec.get("replicas", 1)
        if not spec.get("autoscaling", {}).get("enabled")
        else spec["autoscaling"]["minReplicas"]
    )
    assert status["readyReplicas"] == wanted
    assert status["observedGeneration"] == agent["metadata"]["generation"]
    port = spec.get("service", {}).get("port", 80)
    suffix = "" if port == 80 else f":{port}"
    assert status["endpoint"] == f"http://{name}.{namespace}.svc.cluster.local{suffix}"
    ready = condition(agent, "Ready")
    assert ready["status"] == "True" and ready["reason"] == "AllReplicasReady"
    # DaprReady beside Ready when Dapr is on (False here on kwok: no sidecar injector).
    dapr_ready = condition(agent, "DaprReady")
    assert bool(dapr_ready) == spec.get("dapr", {}).get("enabled", True)
    assert not dapr_ready or (dapr_ready["reason"] and dapr_ready["message"])

    configmap = kubectl.get("configmap", f"{name}-agent", namespace)
    assert configmap is not None
    config = yaml.safe_load(configmap["data"]["agent.yaml"])
    assert (
        config["framework"] == spec["framework"]
        and config["model"]["name"] == spec["model"]["name"]
    )
    assert "apiKeySecretRef" not in configmap["data"]["agent.yaml"]

    deployment = kubectl.get("deployment", name, namespace)
    assert deployment is not None
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "AIAgent",
        name,
        agent["metadata"]["uid"],
        True,
    )
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert (annotations.get("dapr.io/enabled") == "true") == spec.get("dapr", {}).get(
        "enabled", True
    )

    service = kubectl.get("service", name, namespace)
    assert service is not None and service["spec"]["ports"][0]["port"] == port

    hpa = kubectl.get("hpa", name, namespace)
    assert (hpa is not None) == spec.get("autoscaling", {}).get("enabled", False)

    pods = kubectl.list("pods", namespace, f"aiagents.dev/agent={name}")
    assert len(pods) == wanted
    assert all(p["status"]["phase"] == "Running" for p in pods)

    columns = kubectl.run("get", "aiagent", name, namespace=namespace).stdout.splitlines()
    assert columns[0].split() == ["NAME", "FRAMEWORK", "MODEL", "REPLICAS", "READY", "PHASE", "AGE"]
    assert columns[1].split()[:6] == [
        name,
        spec["framework"],
        spec["model"]["name"],
        str(wanted),
        str(wanted),
        "Ready",
    ]
