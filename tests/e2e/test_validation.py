"""Bad AIAgents are refused by the API server itself, with a message a person can act on."""

from __future__ import annotations

from typing import Any

import pytest

from localcluster.kubectl import Kubectl

pytestmark = pytest.mark.usefixtures("crds")

GOOD = {"framework": "langchain", "model": {"name": "gpt-4o-mini"}}


def with_changes(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {**GOOD, **changes}
    return spec


CASES = [
    (
        "unknown framework",
        "bad-framework",
        with_changes(framework="autogen"),
        ["spec.framework", "crewai", "langchain", "openai-agents"],
    ),
    (
        "negative replicas",
        "bad-replicas",
        with_changes(replicas=-1),
        ["spec.replicas", "greater than or equal to 0"],
    ),
    (
        "maxReplicas below minReplicas",
        "bad-bounds",
        with_changes(autoscaling={"enabled": True, "minReplicas": 5, "maxReplicas": 2}),
        [
            "spec.autoscaling.maxReplicas",
            "must be greater than or equal to autoscaling.minReplicas",
        ],
    ),
    (
        "CPU target 0",
        "bad-cpu-low",
        with_changes(autoscaling={"targetCPUUtilizationPercentage": 0}),
        ["targetCPUUtilizationPercentage", "greater than or equal to 1"],
    ),
    (
        "CPU target 101",
        "bad-cpu-high",
        with_changes(autoscaling={"targetCPUUtilizationPercentage": 101}),
        ["targetCPUUtilizationPercentage", "less than or equal to 100"],
    ),
    (
        "openai-compatible without baseURL",
        "bad-base-url",
        with_changes(model={"name": "m", "provider": "openai-compatible"}),
        ["spec.model.baseURL", "model.baseURL is required"],
    ),
    (
        "missing model",
        "bad-no-model",
        {"framework": "langchain"},
        ["spec", "set exactly one of spec.model (the model, inline) or spec.modelRef"],
    ),
    (
        "model without a name",
        "bad-model-name",
        with_changes(model={"provider": "openai"}),
        ["spec.model.name", "Required"],
    ),
    (
        "unknown tool",
        "bad-tool",
        with_changes(agent={"tools": ["shell"]}),
        ["spec.agent.tools[0]", "calculator"],
    ),
    (
        "API key in plain env",
        "bad-env",
        with_changes(env=[{"name": "MODEL_API_KEY", "value": "sk-x"}]),
        ["MODEL_API_KEY is set by the operator"],
    ),
    (
        "Dapr state store in the old string form",
        "bad-dapr-string",
        with_changes(dapr={"stateStore": "statestore"}),
        ["spec.dapr.stateStore", 'must be of type object: "string"'],
    ),
    (
        "state store of a pub/sub type",
        "bad-dapr-type",
        with_changes(dapr={"stateStore": {"name": "m", "type": "pubsub.redis"}}),
        ["spec.dapr.stateStore.type", "must start with 'state.' (a Dapr state store"],
    ),
    (
        "pub/sub of a state type",
        "bad-dapr-pubsub-type",
        with_changes(dapr={"pubsub": {"name": "bus", "type": "state.redis"}}),
        ["spec.dapr.pubsub.type", "must start with 'pubsub.'"],
    ),
    (
        "metadata entry with both value and secretKeyRef",
        "bad-dapr-both",
        with_changes(
            dapr={
                "stateStore": {
                    "name": "m",
                    "type": "state.redis",
                    "metadata": [
                        {
                            "name": "redisPassword",
                            "value": "sk-x",
                            "secretKeyRef": {"name": "r", "key": "p"},
                        }
                    ],
                }
            }
        ),
        [
            "spec.dapr.stateStore.metadata[0]",
            "metadata entries need exactly one of value or secretKeyRef",
        ],
    ),
    (
        "metadata entry with neither",
        "bad-dapr-neither",
        with_changes(
            dapr={
                "stateStore": {
                    "name": "m",
                    "type": "state.redis",
                    "metadata": [{"name": "redisHost"}],
                }
            }
        ),
        ["metadata entries need exactly one of value or secretKeyRef"],
    ),
    (
        "metadata without a type",
        "bad-dapr-metadata",
        with_changes(
            dapr={
                "stateStore": {"name": "m", "metadata": [{"name": "redisHost", "value": "r:6379"}]}
            }
        ),
        ["spec.dapr.stateStore.metadata", "needs spec.dapr.stateStore.type"],
    ),
    (
        "version without a type",
        "bad-dapr-version",
        with_changes(dapr={"pubsub": {"name": "bus", "version": "v2"}}),
        ["spec.dapr.pubsub.version", "needs spec.dapr.pubsub.type"],
    ),
    (
        "subscribe without pubsub",
        "bad-dapr-subscribe",
        with_changes(dapr={"subscribe": {"topic": "questions"}}),
        ["spec.dapr.subscribe", "spec.dapr.subscribe needs spec.dapr.pubsub"],
    ),
    (
        "reply topic equal to the topic",
        "bad-dapr-reply",
        with_changes(
            dapr={"pubsub": {"name": "bus"}, "subscribe": {"topic": "q", "replyTopic": "q"}}
        ),
        ["spec.dapr.subscribe.replyTopic", "must differ from topic"],
    ),
    (
        "one Component as state store and pub/sub",
        "bad-dapr-same",
        with_changes(dapr={"stateStore": {"name": "c"}, "pubsub": {"name": "c"}}),
        ["spec.dapr.pubsub.name", "must differ"],
    ),
    (
        "duplicate metadata names",
        "bad-dapr-duplicate",
        with_changes(
            dapr={
                "stateStore": {
                    "name": "m",
                    "type": "state.redis",
                    "metadata": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}],
                }
            }
        ),
        ["spec.dapr.stateStore.metadata[1]", "Duplicate value"],
    ),
    (
        "MCP credential header as a plain value",
        "bad-mcp-credential",
        with_changes(
            agent={
                "mcpServers": [
                    {
                        "name": "github",
                        "url": "http://github-mcp/mcp",
                        "headers": [{"name": "Authorization", "value": "Bearer sk-x"}],
                    }
                ]
            }
        ),
        ["spec.agent.mcpServers[0].headers[0].value", "take it from a Secret"],
    ),
    (
        "MCP server URL that is not http(s)",
        "bad-mcp-url",
        with_changes(agent={"mcpServers": [{"name": "github", "url": "http://"}]}),
        ["spec.agent.mcpServers[0].url", "must be an http:// or https:// URL"],
    ),
    (
        "two MCP servers with one name",
        "bad-mcp-duplicate",
        with_changes(
            agent={
                "mcpServers": [
                    {"name": "github", "url": "http://a/mcp"},
                    {"name": "github", "url": "http://b/mcp"},
                ]
            }
        ),
        ["spec.agent.mcpServers[1]", "Duplicate value"],
    ),
    (
        "MCP header names differing only in case",
        "bad-mcp-headers",
        with_changes(
            agent={
                "mcpServers": [
                    {
                        "name": "github",
                        "url": "http://a/mcp",
                        "headers": [
                            {"name": "X-Tenant", "value": "a"},
                            {"name": "x-tenant", "value": "b"},
                        ],
                    }
                ]
            }
        ),
        ["spec.agent.mcpServers[0].headers", "header names must be unique"],
    ),
    (
        "MCP timeout out of bounds",
        "bad-mcp-timeout",
        with_changes(
            agent={"mcpServers": [{"name": "github", "url": "http://a/mcp", "timeoutSeconds": 0}]}
        ),
        ["spec.agent.mcpServers[0].timeoutSeconds", "greater than or equal to 1"],
    ),
    (
        "an MCP header variable set by hand",
        "bad-mcp-env",
        with_changes(env=[{"name": "AIAGENT_MCP_GITHUB__AUTHORIZATION", "value": "sk-x"}]),
        ["set by the operator from spec.agent.mcpServers"],
    ),
    # Holes tests/e2e/test_hostile_specs.py found: each was admitted, then its child refused.
    (
        "a quantity that is not one",
        "bad-quantity",
        with_changes(resources={"requests": {"memory": "1.5.5"}}),
        ["spec.resources.requests.memory", "should match"],
    ),
    (
        "a request above its limit",
        "bad-request-over-limit",
        with_changes(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        ["spec.resources.requests", "less than or equal to the limit"],
    ),
    (
        "an unknown resource",
        "bad-resource-name",
        with_changes(resources={"limits": {"foo": "1"}}),
        ["spec.resources.limits", "nvidia.com/gpu"],
    ),
    (
        "a pod label value with a space",
        "bad-label-value",
        with_changes(podLabels={"team": "has space"}),
        ["spec.podLabels.team", "should match"],
    ),
    (
        "a node selector key that is no label key",
        "bad-node-selector",
        with_changes(nodeSelector={"x/": "zone-a"}),
        ["spec.nodeSelector", "keys must be Kubernetes label keys"],
    ),
    (
        "a toleration with Exists and a value",
        "bad-toleration",
        with_changes(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
        ["spec.tolerations[0].value", "takes no value"],
    ),
    (
        "tolerationSeconds without NoExecute",
        "bad-toleration-seconds",
        with_changes(tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        ["spec.tolerations[0].tolerationSeconds", "needs effect NoExecute"],
    ),
    (
        "an env variable with value and valueFrom",
        "bad-env-both",
        with_changes(
            env=[
                {
                    "name": "A",
                    "value": "x",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                }
            ]
        ),
        ["spec.env[0].valueFrom", "not both"],
    ),
    (
        "an env variable twice",
        "bad-env-twice",
        with_changes(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        ["spec.env[1]", "Duplicate value"],
    ),
    (
        "a downward API field that does not exist",
        "bad-field-ref",
        with_changes(
            env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.nope"}}}]
        ),
        ["spec.env[0].valueFrom.fieldRef.fieldPath"],
    ),
    (
        "a node affinity without terms",
        "bad-affinity",
        with_changes(
            affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}
        ),
        ["nodeSelectorTerms", "Required"],
    ),
    (
        "a CIDR of /33",
        "bad-cidr",
        with_changes(
            networkPolicy={"extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
        ),
        ["spec.networkPolicy.extraEgress[0].to[0].ipBlock.cidr", "must be an IPv4 or IPv6 CIDR"],
    ),
    (
        "an except range outside its CIDR",
        "bad-except",
        with_changes(
            networkPolicy={
                "extraEgress": [
                    {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}
                ]
            }
        ),
        ["ipBlock.except", "strictly inside cidr"],
    ),
    (
        "a port above 65535",
        "bad-np-port",
        with_changes(networkPolicy={"extraIngress": [{"ports": [{"port": 70000}]}]}),
        ["spec.networkPolicy.extraIngress[0].ports[0].port", "1 to 65535"],
    ),
    (
        "a model URL that does not parse",
        "bad-base-url-parse",
        with_changes(model={"name": "m", "baseURL": "http://[::1"}),
        ["spec.model.baseURL", "with a host"],
    ),
    (
        "an image with a leading space",
        "bad-image",
        with_changes(image=" nginx"),
        ["spec.image", "should match"],
    ),
    (
        "name too long for the children",
        "a" * 64,
        GOOD,
        ["metadata.name", "at most 63 characters"],
    ),
    (
        "name that is not a DNS-1035 label",
        "1st-agent",
        GOOD,
        ["metadata.name", "must start with a letter"],
    ),
]


@pytest.mark.parametrize(("case", "name", "spec", "expected"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_a_readable_message(
    kubectl: Kubectl,
    namespace: str,
    case: str,
    name: str,
    spec: dict[str, Any],
    expected: list[str],
) -> None:
    manifest = {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": name},
        "spec": spec,
    }
    import yaml

    result = kubectl.run(
        "apply", "-f", "-", input=yaml.safe_dump(manifest), namespace=namespace, check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    for fragment in expected:
        assert fragment in result.stderr, f"{case}: {fragment!r} not in {result.stderr!r}"
    assert "sk-x" not in result.stderr
    assert kubectl.run("get", "aiagents", "-o", "name", namespace=namespace).stdout == ""


def test_kubectl_explain_shows_the_model_descriptions(kubectl: Kubectl) -> None:
    out = kubectl.run("explain", "aiagent.spec.autoscaling.targetCPUUtilizationPercentage").stdout
    assert "Average CPU utilization" in out
    out = kubectl.run("explain", "aiagents.spec.model").stdout
    assert (
        "apiKeySecretRef" in out
        and "MODEL_API_KEY" in kubectl.run("explain", "aia.spec.model.apiKeySecretRef").stdout
    )
