"""Dapr as a declared part of an agent: Components the operator creates, scopes, owns, restores and
prunes; a Component two agents want; a named one that is missing; the DaprReady condition; and a
cluster without Dapr at all. kwok's pods run no sidecar injector, so every agent pod here runs
without daprd: DaprReady says SidecarNotInjected, which is itself what these tests expect."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from localcluster.kubectl import KWOK_TOLERATION, Kubectl, OperatorProcess, condition, wait_for

from .conftest import create_api_key_secrets, install_dapr_crds, remove_dapr_crds

REDIS = "redis-master.redis.svc.cluster.local:6379"


def agent(name: str, **dapr: Any) -> dict[str, Any]:
    return {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": name},
        "spec": {
            "framework": "langchain",
            "model": {
                "name": "gpt-4o-mini",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
            "tolerations": [KWOK_TOLERATION],
            "dapr": dapr,
        },
    }


def redis_store(name: str = "agent-memory", kind: str = "state") -> dict[str, Any]:
    return {
        "name": name,
        "type": f"{kind}.redis",
        "metadata": [
            {"name": "redisHost", "value": REDIS},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
        ],
    }


def dapr_ready(
    kubectl: Kubectl, namespace: str, name: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    """The AIAgent once its DaprReady condition has that reason (and its phase is Ready)."""
    return wait_for(
        f"AIAgent {name} Ready with DaprReady {reason}",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and condition(a, "DaprReady").get("reason") == reason
            and a.get("status", {}).get("phase") == "Ready"
            and a
        ),
        timeout=timeout,
    )


def component(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    return kubectl.get("components.dapr.io", name, namespace)


def controller(obj: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in obj["metadata"]["ownerReferences"] if r.get("controller"))


def tracebacks(operator: OperatorProcess) -> list[str]:
    return re.findall(r"^Traceback.*$", operator.log_text(), re.MULTILINE)


# -- First, a cluster without Dapr: nothing asks the operator for Components it cannot serve.


@pytest.mark.usefixtures("crds")
def test_without_dapr_the_operator_keeps_working(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    ns = isolated_namespace
    remove_dapr_crds(kubectl)
    create_api_key_secrets(kubectl, ns)
    operator = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        standalone="true",
        watch_namespaces=ns,
        component_retry_seconds="2",
    ).start()
    try:
        # Dapr on (the default), nothing declared: the agent runs; its pods have no sidecar.
        kubectl.apply(agent("plain"), namespace=ns)
        plain = dapr_ready(kubectl, ns, "plain", "SidecarNotInjected")
        message = condition(plain, "DaprReady")["message"]
        assert condition(plain, "DaprReady")["status"] == "False"
        assert "without a daprd container" in message and "sidecar injector" in message
        assert condition(plain, "Ready")["status"] == "True"

        # A Component asked for where there is no Dapr: said so, and the agent still serves.
        kubectl.apply(agent("wants-redis", stateStore=redis_store()), namespace=ns)
        wants = dapr_ready(kubectl, ns, "wants-redis", "DaprNotInstalled")
        assert condition(wants, "DaprReady")["message"] == (
            "Component 'agent-memory' named by spec.dapr.stateStore cannot be created: the "
            "cluster has no components.dapr.io API (install Dapr, its CRDs and control plane)"
        )
        assert condition(wants, "Ready")["reason"] == "AllReplicasReady"

        # Dapr arrives: the operator starts watching Components and creates the one asked for.
        install_dapr_crds(kubectl)
        created = wait_for(
            "the Component created once Dapr's CRDs exist",
            lambda: component(kubectl, ns, "agent-memory"),
            timeout=60,
        )
        assert controller(created)["name"] == "wants-redis"
        dapr_ready(kubectl, ns, "wants-redis", "SidecarNotInjected")
        # ...and restores it, which needs its watch on Components.
        kubectl.run("delete", "components.dapr.io", "agent-memory", namespace=ns)
        wait_for(
            "the Component restored",
            lambda: (
                (c := component(kubectl, ns, "agent-memory"))
                and c["metadata"]["uid"] != created["metadata"]["uid"]
            ),
        )
        assert tracebacks(operator) == []
        # Kopf says once, not on every CRD change, that it cannot watch Components yet.
        assert operator.log_text().count("Unresolved resources cannot be served") <= 1
    finally:
        operator.stop()


# -- With Dapr's CRDs: the session operator, one namespace per test.


@pytest.mark.usefixtures("operator", "api_key_secrets", "dapr_crds")
def test_inline_components_are_scoped_owned_restored_and_pruned(
    kubectl: Kubectl, namespace: str, operator: OperatorProcess
) -> None:
    manifest = agent(
        "helpdesk",
        stateStore=redis_store("helpdesk-memory"),
        pubsub=redis_store("helpdesk-bus", kind="pubsub"),
        subscribe={"topic": "questions", "replyTopic": "answers"},
    )
    kubectl.apply(manifest, namespace=namespace)
    helpdesk = dapr_ready(kubectl, namespace, "helpdesk", "SidecarNotInjected")

    memory = component(kubectl, namespace, "helpdesk-memory")
    assert memory is not None
    assert memory["scopes"] == ["helpdesk"]
    owner = controller(memory)
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "AIAgent",
        "helpdesk",
        helpdesk["metadata"]["uid"],
    )
    assert memory["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aiagent-operator"
    assert memory["spec"] == {
        "type": "state.redis",
        "version": "v1",
        "metadata": [
            {"name": "redisHost", "value": REDIS},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
        ],
    }
    bus = component(kubectl, namespace, "helpdesk-bus")
    assert bus is not None and bus["spec"]["type"] == "pubsub.redis"
    # The runtime's config names the Components and nothing else.
    configmap = kubectl.get("configmap", "helpdesk-agent", namespace)
    assert configmap is not None
    text = configmap["data"]["agent.yaml"]
    assert "helpdesk-memory" in text and "questions" in text
    assert "redisPassword" not in text and "secretKeyRef" not in text

    # Drift: a hand edit is undone, a deletion repaired.
    kubectl.run(
        "patch",
        "components.dapr.io",
        "helpdesk-memory",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"metadata": [{"name": "redisHost", "value": "elsewhere:6379"}]}}),
        namespace=namespace,
    )
    wait_for(
        "the Component's metadata restored",
        lambda: (
            (c := component(kubectl, namespace, "helpdesk-memory"))
            and c["spec"]["metadata"][0]["value"] == REDIS
        ),
    )
    kubectl.run("delete", "components.dapr.io", "helpdesk-bus", namespace=namespace)
    wait_for("the Component recreated", lambda: component(kubectl, namespace, "helpdesk-bus"))

    # Dropped from the spec: deleted. Dapr off: every Component goes, and DaprReady with them.
    del manifest["spec"]["dapr"]["pubsub"], manifest["spec"]["dapr"]["subscribe"]
    kubectl.apply(manifest, namespace=namespace)
    wait_for("the pub/sub pruned", lambda: component(kubectl, namespace, "helpdesk-bus") is None)
    assert component(kubectl, namespace, "helpdesk-memory") is not None
    manifest["spec"]["dapr"]["enabled"] = False
    kubectl.apply(manifest, namespace=namespace)
    wait_for(
        "the state store pruned", lambda: component(kubectl, namespace, "helpdesk-memory") is None
    )
    # Turning Dapr off changes the pod annotations: the pods roll, so Ready comes back after.
    off = wait_for(
        "no DaprReady while Dapr is off, and the rollout done",
        lambda: (
            (a := kubectl.get("aiagent", "helpdesk", namespace))
            and not condition(a, "DaprReady")
            and a["status"].get("phase") == "Ready"
            and a
        ),
        timeout=90,
    )
    assert not condition(off, "DaprReady")


@pytest.mark.usefixtures("operator", "api_key_secrets", "dapr_crds")
def test_a_second_agent_cannot_take_a_component(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(agent("first", stateStore=redis_store()), namespace=namespace)
    first = dapr_ready(kubectl, namespace, "first", "SidecarNotInjected")
    kubectl.apply(agent("second", stateStore=redis_store()), namespace=namespace)
    second = dapr_ready(kubectl, namespace, "second", "ComponentConflict")
    assert condition(second, "DaprReady")["message"] == (
        "Component 'agent-memory' named by spec.dapr.stateStore already exists in namespace "
        f"{namespace}, managed by AIAgent first: choose another spec.dapr.stateStore.name, or "
        "drop spec.dapr.stateStore.type to use that Component as it is"
    )
    taken = component(kubectl, namespace, "agent-memory")
    assert taken is not None
    assert controller(taken)["uid"] == first["metadata"]["uid"]
    assert taken["scopes"] == ["first"]  # still the first agent's alone
    events = kubectl.run(
        "get", "events", "--field-selector=involvedObject.name=second", namespace=namespace
    ).stdout
    assert "already exists" in events  # `kubectl describe aiagent second` shows it too

    # The first agent goes (its Component with it, by garbage collection): the second gets it.
    kubectl.run("delete", "aiagent", "first", namespace=namespace)
    wait_for(
        "the Component to pass to the second agent",
        lambda: (
            (c := component(kubectl, namespace, "agent-memory"))
            and controller(c)["uid"] == second["metadata"]["uid"]
            and c["scopes"] == ["second"]
        ),
        timeout=90,
    )
    dapr_ready(kubectl, namespace, "second", "SidecarNotInjected")


@pytest.mark.usefixtures("operator", "api_key_secrets", "dapr_crds")
def test_a_missing_named_component_is_reported_until_it_exists(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.apply(agent("reader", stateStore={"name": "agent-memory"}), namespace=namespace)
    reader = dapr_ready(kubectl, namespace, "reader", "ComponentMissing")
    assert condition(reader, "DaprReady")["message"] == (
        "Component 'agent-memory' named by spec.dapr.stateStore does not exist in namespace "
        f"{namespace} (create it, or set spec.dapr.stateStore.type)"
    )
    generation = reader["metadata"]["generation"]

    made_by_hand = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "agent-memory"},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
        "scopes": ["someone-else"],
    }
    kubectl.apply(made_by_hand, namespace=namespace)
    scoped = dapr_ready(kubectl, namespace, "reader", "ComponentNotScoped")
    assert (
        "scoped to [someone-else], not to app id 'reader'"
        in (condition(scoped, "DaprReady")["message"])
    )
    made_by_hand["scopes"] = ["someone-else", "reader"]
    kubectl.apply(made_by_hand, namespace=namespace)
    cleared = dapr_ready(kubectl, namespace, "reader", "SidecarNotInjected")
    assert cleared["metadata"]["generation"] == generation  # nobody touched the AIAgent
    # A Component the agent only names is never the operator's to change or delete.
    kubectl.run("delete", "aiagent", "reader", "--wait=true", namespace=namespace)
    kept = component(kubectl, namespace, "agent-memory")
    assert kept is not None and not kept["metadata"].get("ownerReferences")


def injected_daprd(drop_all: bool) -> dict[str, Any]:
    """The container and volume Dapr v1.18.2's injector adds to our pods with its chart's defaults
    (pkg/injector/patcher/sidecar_container.go, sidecar_volumes.go): no privilege escalation,
    runAsNonRoot and a read-only root filesystem (sidecarRunAsNonRoot and
    sidecarReadOnlyRootFilesystem default true), seccomp from our dapr.io/sidecar-seccomp-profile-
    type annotation, and `capabilities.drop: [ALL]` only with sidecarDropALLCapabilities=true."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if drop_all:
        context["capabilities"] = {"drop": ["ALL"]}
    ports = [
        ("dapr-http", 3500),
        ("dapr-grpc", 50001),
        ("dapr-internal", 50002),
        ("dapr-metrics", 9090),
    ]
    return {
        "name": "daprd",
        "image": "ghcr.io/dapr/daprd:1.18.2",
        "ports": [{"name": name, "containerPort": port} for name, port in ports],
        "securityContext": context,
        "volumeMounts": [
            {
                "name": "dapr-identity-token",
                "mountPath": "/var/run/secrets/dapr.io/sentrytoken",
                "readOnly": True,
            }
        ],
    }


def test_restricted_admits_the_injected_sidecar_only_when_it_drops_all_capabilities(
    kubectl: Kubectl, namespace: str
) -> None:
    """The real PodSecurity admission, on our pod as Dapr's injector leaves it (a server-side dry
    run: kwok runs no injector). Dapr's chart needs
    dapr_sidecar_injector.sidecarDropALLCapabilities=true for the pod to pass `restricted`."""
    from aiagent_operator import api, render
    from aiagent_operator.settings import OperatorSettings

    labels = [f"pod-security.kubernetes.io/{m}=restricted" for m in ("enforce", "warn")]
    kubectl.run("label", "namespace", namespace, *labels)
    body = agent("guarded")
    body["metadata"].update(namespace=namespace, uid="0", generation=1)
    template = render.render_pod_template(
        api.AIAgent.from_body(body),
        OperatorSettings(peering_priority=1),
        render.render_configmap(api.AIAgent.from_body(body)),
    )

    def admitted(drop_all: bool) -> Any:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": "guarded"},
        }
        spec = json.loads(json.dumps(template["spec"]))
        spec["containers"].append(injected_daprd(drop_all))
        spec["volumes"].append(
            {
                "name": "dapr-identity-token",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 7200}}
                    ]
                },
            }
        )
        pod["spec"] = spec
        return kubectl.run(
            "apply", "--dry-run=server", "-f", "-", input=json.dumps(pod), namespace=namespace,
            check=False,
        )  # fmt: skip

    refused = admitted(drop_all=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest": unrestricted capabilities' in refused.stderr
    assert 'container "daprd" must set securityContext.capabilities.drop=["ALL"]' in refused.stderr
    assert 'container "agent"' not in refused.stderr  # ours passes as it is
    passed = admitted(drop_all=True)
    assert passed.returncode == 0, passed.stderr
