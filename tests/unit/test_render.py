"""The pure render functions: one AIAgent in, its children out."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from agent_runtime.config import AgentConfig
from aiagent_operator import api, render
from aiagent_operator.settings import OperatorSettings

AgentFactory = Callable[..., api.AIAgent]

BASE = {
    "framework": "langchain",
    "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
    "agent": {"instructions": "Be helpful."},
}


def spec(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(BASE)), **changes}


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return result


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = pod_spec(deployment)["containers"][0]
    return result


def test_children_names_labels_and_owner(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    agent = agent_factory(spec(autoscaling={"enabled": True}))
    children = by_kind(render.render_children(agent, settings))
    assert set(children) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    assert children["ConfigMap"]["metadata"]["name"] == "support-bot-agent"
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler"):
        assert children[kind]["metadata"]["name"] == "support-bot"
    for child in children.values():
        meta = child["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"] == {
            "app.kubernetes.io/name": "support-bot",
            "app.kubernetes.io/component": "agent",
            "app.kubernetes.io/managed-by": "aiagent-operator",
            "aiagents.dev/agent": "support-bot",
        }
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": "aiagents.dev/v1alpha1",
            "kind": "AIAgent",
            "name": "support-bot",
            "uid": agent.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def test_hpa_only_when_autoscaling(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    kinds = [c["kind"] for c in render.render_children(agent_factory(spec()), settings)]
    assert kinds == ["ConfigMap", "Deployment", "Service"]
    assert ("autoscaling/v2", "HorizontalPodAutoscaler") in render.PRUNABLE


def test_configmap_holds_agent_yaml_without_secrets(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        spec(agent={"role": "Analyst", "goal": "Answer", "tools": ["calculator"]})
    )
    data = render.render_configmap(agent)["data"]
    config = AgentConfig.model_validate(yaml.safe_load(data["agent.yaml"]))
    assert config.name == "support-bot"
    assert config.framework == "langchain"
    assert config.model.name == "gpt-4o-mini"
    assert config.agent.role == "Analyst" and config.agent.tools == ["calculator"]
    assert config.dapr.enabled is True
    assert "openai" not in data["agent.yaml"].replace("provider: openai", "")
    assert "apiKeySecretRef" not in data["agent.yaml"]


def test_framework_config_map_is_mounted(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    agent = agent_factory(spec(agent={"configMapRef": {"name": "crew", "key": "crew.yaml"}}))
    deployment = render.render_deployment(agent, settings)
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "framework-config")
    assert volume["configMap"] == {
        "name": "crew",
        "items": [{"key": "crew.yaml", "path": "crew.yaml"}],
    }
    mount = next(
        m for m in container(deployment)["volumeMounts"] if m["name"] == "framework-config"
    )
    assert mount == {
        "name": "framework-config",
        "mountPath": "/etc/aiagent/framework",
        "readOnly": True,
    }
    config = yaml.safe_load(render.render_configmap(agent)["data"]["agent.yaml"])
    assert config["agent"]["frameworkConfigPath"] == "/etc/aiagent/framework/crew.yaml"


def test_deployment_basics(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    deployment = render.render_deployment(agent_factory(spec(replicas=4)), settings)
    assert deployment["spec"]["replicas"] == 4
    assert deployment["spec"]["selector"] == {"matchLabels": {"aiagents.dev/agent": "support-bot"}}
    assert deployment["metadata"]["annotations"] == {"aiagents.dev/generation": "3"}
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert template_labels["aiagents.dev/agent"] == "support-bot"
    c = container(deployment)
    assert c["image"] == settings.agent_image
    assert c["args"] == ["run", "/etc/aiagent/agent.yaml", "--host", "0.0.0.0", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/aiagent" and mount["readOnly"] is True
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == "support-bot-agent"
    assert pod_spec(deployment)["automountServiceAccountToken"] is False


def test_restricted_pod_security(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    deployment = render.render_deployment(agent_factory(spec()), settings)
    pod = pod_spec(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod["volumes"]:  # restricted allows only these volume types among ours
        assert {"configMap", "emptyDir"} & volume.keys()
    assert "hostNetwork" not in pod and "hostPID" not in pod


def test_api_key_only_as_secret_reference(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    deployment = render.render_deployment(agent_factory(spec()), settings)
    env = container(deployment)["env"]
    assert env[0] == {
        "name": "MODEL_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api-key"}},
    }
    no_key = spec(model={"name": "llama3", "provider": "ollama", "baseURL": "http://ollama:11434"})
    env = container(render.render_deployment(agent_factory(no_key), settings))["env"]
    assert all(e["name"] != "MODEL_API_KEY" for e in env)


def test_no_secret_value_in_any_rendered_object(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    # Whatever a user puts in the spec, a Secret's *value* is never an input to rendering; make
    # sure the references stay references and nothing resembling the key leaks into the config.
    agent = agent_factory(
        spec(
            env=[
                {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "other", "key": "token"}}}
            ],
            envFrom=[{"secretRef": {"name": "bulk"}}],
            autoscaling={"enabled": True},
        )
    )
    children = render.render_children(agent, settings)
    for child in children:
        text = json.dumps(child)
        assert "sk-" not in text
        if child["kind"] != "Deployment":
            assert "secretKeyRef" not in text and "secretRef" not in text
    deployment = by_kind(children)["Deployment"]
    env = container(deployment)["env"]
    assert all("value" not in e for e in env if e["name"] in ("MODEL_API_KEY", "OTHER"))
    assert container(deployment)["envFrom"] == [{"secretRef": {"name": "bulk"}}]


def test_config_change_rolls_pods(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    def config_hash(s: dict[str, Any]) -> str:
        deployment = render.render_deployment(agent_factory(s), settings)
        value: str = deployment["spec"]["template"]["metadata"]["annotations"][
            "aiagents.dev/config-hash"
        ]
        return value

    first = config_hash(spec())
    assert config_hash(spec()) == first  # deterministic
    assert config_hash(spec(model={"name": "gpt-4o"})) != first
    assert config_hash(spec(replicas=5)) == first  # scaling is not a config change


def test_replicas_left_to_hpa_when_autoscaling(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    deployment = render.render_deployment(
        agent_factory(spec(replicas=7, autoscaling={"enabled": True})), settings
    )
    assert "replicas" not in deployment["spec"]
    deployment = render.render_deployment(agent_factory(spec(replicas=0)), settings)
    assert deployment["spec"]["replicas"] == 0


def test_resources_merge_over_defaults(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    default = container(render.render_deployment(agent_factory(spec()), settings))["resources"]
    assert default == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    custom = spec(resources={"requests": {"memory": "2Gi"}, "limits": {"cpu": 2}})
    resources = container(render.render_deployment(agent_factory(custom), settings))["resources"]
    # A request above the default limit raises the limit (the API server refuses request > limit).
    assert resources == {
        "requests": {"cpu": "100m", "memory": "2Gi"},
        "limits": {"memory": "2Gi", "cpu": 2},
    }


def test_dapr_annotations(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    dapr = {
        "appId": "support",
        "config": "tracing",
        "logLevel": "debug",
        "enableMetrics": False,
        "sidecar": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    annotations = render.render_deployment(agent_factory(spec(dapr=dapr)), settings)["spec"][
        "template"
    ]["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == "support"
    assert annotations["dapr.io/app-port"] == "8080"
    assert annotations["dapr.io/config"] == "tracing"
    assert annotations["dapr.io/log-level"] == "debug"
    assert annotations["dapr.io/enable-metrics"] == "false"
    assert annotations["dapr.io/app-health-check-path"] == "/healthz"
    assert annotations["dapr.io/sidecar-cpu-request"] == "50m"
    assert annotations["dapr.io/sidecar-memory-request"] == "64Mi"
    assert annotations["dapr.io/sidecar-memory-limit"] == "256Mi"
    assert "dapr.io/sidecar-cpu-limit" not in annotations

    default = render.dapr_annotations(agent_factory(spec()))
    assert default["dapr.io/app-id"] == "support-bot" and "dapr.io/config" not in default
    assert render.dapr_annotations(agent_factory(spec(dapr={"enabled": False}))) == {}


def test_pod_passthrough_fields(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    s = spec(
        image="registry.example/agents/custom:1",
        imagePullPolicy="Always",
        serviceAccountName="agent-sa",
        nodeSelector={"pool": "cpu"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}
        ],
        affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        imagePullSecrets=[{"name": "regcred"}],
        podAnnotations={"team": "support"},
        podLabels={"tier": "gold", "aiagents.dev/agent": "hijack"},
        env=[{"name": "LOG_LEVEL", "value": "debug"}],
    )
    deployment = render.render_deployment(agent_factory(s), settings)
    pod = pod_spec(deployment)
    c = container(deployment)
    assert c["image"] == "registry.example/agents/custom:1" and c["imagePullPolicy"] == "Always"
    assert pod["serviceAccountName"] == "agent-sa" and "automountServiceAccountToken" not in pod
    assert pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ai", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == s["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    meta = deployment["spec"]["template"]["metadata"]
    assert meta["annotations"]["team"] == "support"
    assert meta["labels"]["tier"] == "gold"
    assert (
        meta["labels"]["aiagents.dev/agent"] == "support-bot"
    )  # ours win: the selector depends on it
    assert {"name": "LOG_LEVEL", "value": "debug"} in c["env"]


def test_service(agent_factory: AgentFactory) -> None:
    service = render.render_service(agent_factory(spec(service={"port": 9000})))
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"aiagents.dev/agent": "support-bot"}
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9000 and port["targetPort"] == "http"
    assert render.render_service(agent_factory(spec()))["spec"]["ports"][0]["port"] == 80


@pytest.mark.parametrize("dapr_enabled", [True, False])
def test_hpa(agent_factory: AgentFactory, dapr_enabled: bool) -> None:
    s = spec(
        autoscaling={
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 9,
            "targetCPUUtilizationPercentage": 55,
        },
        dapr={"enabled": dapr_enabled},
    )
    hpa = render.render_hpa(agent_factory(s))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "support-bot",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 9)
    (metric,) = hpa["spec"]["metrics"]
    target = {"type": "Utilization", "averageUtilization": 55}
    if dapr_enabled:  # the sidecar must not skew the average
        assert metric == {
            "type": "ContainerResource",
            "containerResource": {"name": "cpu", "container": "agent", "target": target},
        }
    else:
        assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def test_render_is_pure(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    agent = agent_factory(spec(autoscaling={"enabled": True}))
    before = agent.model_dump()
    assert render.render_children(agent, settings) == render.render_children(agent, settings)
    assert agent.model_dump() == before


def test_runtime_config_names_the_components_only(agent_factory: AgentFactory) -> None:
    # agent.yaml keeps each Component's name: the runtime talks to its sidecar by name, and the
    # definition (metadata, Secret references) is the operator's business alone.
    dapr = {
        "stateStore": {
            "name": "agent-memory",
            "type": "state.redis",
            "metadata": [
                {"name": "redisHost", "value": "10.245.0.1:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
            ],
        },
        "pubsub": {"name": "bus"},
        "subscribe": {"topic": "questions", "replyTopic": "answers"},
    }
    text = render.render_configmap(agent_factory(spec(dapr=dapr)))["data"]["agent.yaml"]
    config = yaml.safe_load(text)["dapr"]
    assert config["stateStore"] == "agent-memory" and config["pubsub"] == "bus"
    assert config["subscribe"]["topic"] == "questions"
    assert config["subscribe"]["replyTopic"] == "answers"
    for absent in ("redisHost", "redisPassword", "secretKeyRef", "state.redis"):
        assert absent not in text


def test_components_are_not_deployment_children(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    # Inline Components are applied apart from the other children (after an ownership check),
    # and pruned by name rather than by kind.
    dapr = {"stateStore": {"name": "agent-memory", "type": "state.redis"}}
    kinds = {c["kind"] for c in render.render_children(agent_factory(spec(dapr=dapr)), settings)}
    assert "Component" not in kinds
    assert all(kind != "Component" for _, kind in render.PRUNABLE)


# -- holes the hostile specs found (tests/e2e/test_hostile_specs.py) ------------------------------


def test_a_limit_below_the_default_request_lowers_the_request(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    # {limits: {memory: "1"}} rendered requests.memory 256Mi over a 1-byte limit: refused.
    custom = spec(resources={"limits": {"memory": "250m", "cpu": "50m"}})
    resources = container(render.render_deployment(agent_factory(custom), settings))["resources"]
    assert resources == {
        "requests": {"cpu": "50m", "memory": "250m"},
        "limits": {"memory": "250m", "cpu": "50m"},
    }
    # A limit above the default request leaves the default request alone.
    roomy = spec(resources={"limits": {"cpu": 2}})
    resources = container(render.render_deployment(agent_factory(roomy), settings))["resources"]
    assert resources["requests"]["cpu"] == "100m"


def test_env_of_the_spec_replaces_the_operators_own(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    # The Deployment's env is a map by name for server-side apply: HOME twice was a 500.
    custom = spec(env=[{"name": "HOME", "value": "/data"}])
    env = container(render.render_deployment(agent_factory(custom), settings))["env"]
    assert [e for e in env if e["name"] == "HOME"] == [{"name": "HOME", "value": "/data"}]


def test_typed_pod_fields_render_as_kubernetes_defines_them(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": "x"}},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        },
    }
    env_from = [{"secretRef": {"name": "extra"}, "prefix": "X_"}]
    env = [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    deployment = render.render_deployment(
        agent_factory(spec(affinity=affinity, envFrom=env_from, env=env)), settings
    )
    assert pod_spec(deployment)["affinity"] == affinity
    assert container(deployment)["envFrom"] == env_from
    assert container(deployment)["env"][-1] == env[0]


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("1Gi", 2**30), ("500m", 0.5), ("1e3", 1000), (2, 2), ("1.5", 1.5), ("1.5.5", None)],
)
def test_parse_quantity(quantity: api.Quantity, value: float | None) -> None:
    from aiagent_operator.kubetypes import parse_quantity

    parsed = parse_quantity(quantity)
    assert (parsed if parsed is None else float(parsed)) == value
