"""spec.networkPolicy: the NetworkPolicy an AIAgent gets, and that it lets through what it needs."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from pydantic import ValidationError

from aiagent_operator import api, crd, render
from aiagent_operator.network_policy import (
    DAPR_CONTROL_PLANE_PORTS,
    NetworkPolicySpec,
    render_network_policy,
    unread_backends,
)
from aiagent_operator.settings import OperatorSettings
from localcluster.binaries import versions
from localcluster.paths import CACHE_ROOT

from .conftest import EXAMPLES, load_example

AgentFactory = Callable[..., api.AIAgent]
Manifest = dict[str, Any]

BASE = {
    "framework": "langchain",
    "model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "openai", "key": "api-key"}},
    "agent": {"instructions": "Be helpful."},
    "dapr": {"enabled": False},
}
ON = {"enabled": True}
PUBLIC = [
    {
        "ipBlock": {
            "cidr": "0.0.0.0/0",
            "except": [
                "10.0.0.0/8",
                "100.64.0.0/10",
                "169.254.0.0/16",
                "172.16.0.0/12",
                "192.168.0.0/16",
            ],
        }
    },
    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}},
]
DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        },
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}


def spec(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(BASE)), **changes}


def model(**fields: Any) -> dict[str, Any]:
    return {"name": "m", **fields}


def policy_of(
    agent: api.AIAgent, settings: OperatorSettings, policy: dict[str, Any] | None = None
) -> Manifest:
    manifest = render_network_policy(
        agent, settings, NetworkPolicySpec.model_validate(policy or ON)
    )
    assert manifest is not None
    return manifest


def egress(manifest: Manifest) -> list[Manifest]:
    rules: list[Manifest] = manifest["spec"]["egress"]
    return rules


def namespace_rule(namespace: str, ports: list[int] | None) -> Manifest:
    rule: Manifest = {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]
    }
    if ports is not None:
        rule["ports"] = [{"protocol": "TCP", "port": p} for p in ports]
    return rule


def ip_rule(cidr: str, port: int) -> Manifest:
    return {"to": [{"ipBlock": {"cidr": cidr}}], "ports": tcp(port)}


def tcp(*ports: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": p} for p in ports]


# -- on or off ------------------------------------------------------------------------------------


def test_off_unless_asked_or_defaulted(agent_factory: AgentFactory) -> None:
    agent = agent_factory(spec())
    off = OperatorSettings(peering_priority=1)
    on = OperatorSettings(peering_priority=1, network_policy_default=True)
    assert render_network_policy(agent, off) is None  # no spec.networkPolicy, default off
    assert render_network_policy(agent, on) is not None  # the chart turns the default on
    unset = NetworkPolicySpec()
    assert render_network_policy(agent, off, unset) is None
    assert render_network_policy(agent, on, unset) is not None
    assert render_network_policy(agent, on, NetworkPolicySpec(enabled=False)) is None
    assert render_network_policy(agent, off, NetworkPolicySpec(enabled=True)) is not None


def test_reads_spec_network_policy(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    if "network_policy" not in api.AIAgentSpec.model_fields:
        pytest.skip("spec.networkPolicy is not in api.AIAgentSpec yet")
    agent = agent_factory(spec(networkPolicy={"enabled": True, "allowedNamespaces": ["web"]}))
    manifest = render_network_policy(agent, settings)
    assert manifest is not None
    assert manifest["spec"]["ingress"][0]["from"][1]["namespaceSelector"]["matchExpressions"][0][
        "values"
    ] == ["web"]


def test_named_labelled_and_owned_like_the_other_children(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    agent = agent_factory(spec())
    manifest = policy_of(agent, settings)
    assert manifest["apiVersion"] == "networking.k8s.io/v1"
    assert manifest["kind"] == "NetworkPolicy"
    assert manifest["metadata"] == render.child_metadata(agent, "support-bot")
    assert manifest["metadata"]["ownerReferences"][0]["controller"] is True
    assert manifest["spec"]["podSelector"] == {"matchLabels": {"aiagents.dev/agent": "support-bot"}}
    assert manifest["spec"]["policyTypes"] == ["Ingress", "Egress"]


# -- ingress --------------------------------------------------------------------------------------


def test_ingress_from_own_namespace_only_by_default(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    manifest = policy_of(agent_factory(spec()), settings)
    assert manifest["spec"]["ingress"] == [{"from": [{"podSelector": {}}], "ports": tcp(8080)}]


def test_allowed_namespaces_and_selectors(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    policy = {
        "enabled": True,
        "allowedNamespaces": ["web", "batch", "web"],
        "allowedNamespaceSelector": {"matchLabels": {"team": "support"}},
        "allowedPodSelector": {
            "matchExpressions": [{"key": "role", "operator": "In", "values": ["frontend"]}]
        },
    }
    (rule,) = policy_of(agent_factory(spec()), settings, policy)["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {}},
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": ["batch", "web"],
                    }
                ]
            }
        },
        {  # one peer: pods with the role, in the team's namespaces
            "namespaceSelector": {"matchLabels": {"team": "support"}},
            "podSelector": {
                "matchExpressions": [{"key": "role", "operator": "In", "values": ["frontend"]}]
            },
        },
    ]


def test_pod_selector_alone_means_any_namespace(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    policy = {
        "enabled": True,
        "allowSameNamespace": False,
        "allowedPodSelector": {"matchLabels": {"aiagents.dev/client": "true"}},
    }
    (rule,) = policy_of(agent_factory(spec()), settings, policy)["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"aiagents.dev/client": "true"}}}
    ]


def test_nobody_allowed_means_no_ingress_rule(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    policy = {"enabled": True, "allowSameNamespace": False}
    assert policy_of(agent_factory(spec()), settings, policy)["spec"]["ingress"] == []


def test_monitoring_and_extra_ingress(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    extra = {"from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": "http"}]}
    policy = {"enabled": True, "allowMonitoringFrom": ["monitoring"], "extraIngress": [extra]}
    agent = agent_factory(spec(dapr={"enabled": True}))
    ingress = policy_of(agent, settings, policy)["spec"]["ingress"]
    assert ingress[1:] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": ["monitoring"],
                            }
                        ]
                    }
                }
            ],
            "ports": tcp(8080, 9090),  # the runtime's /metrics, daprd's metrics
        },
        {
            "from": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
            "ports": [{"protocol": "TCP", "port": "http"}],
        },
    ]


# -- egress ---------------------------------------------------------------------------------------


def test_public_provider_gets_443_outside_private_ranges(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    manifest = policy_of(agent_factory(spec()), settings)
    assert egress(manifest) == [DNS, {"to": PUBLIC, "ports": tcp(443)}]


def test_external_base_url_uses_its_port(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    url = "https://llm.example.com:8443/v1"
    agent = agent_factory(spec(model=model(provider="openai-compatible", baseURL=url)))
    assert egress(policy_of(agent, settings))[1:] == [{"to": PUBLIC, "ports": tcp(8443)}]


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://vllm.models.svc:8000/v1", namespace_rule("models", [8000])),
        ("http://vllm.models.svc.cluster.local:8000/v1", namespace_rule("models", [8000])),
        ("http://vllm-0.vllm.models.svc.cluster.local:8000/v1", namespace_rule("models", [8000])),
        ("http://vllm:8000/v1", namespace_rule("team-a", [8000])),  # its own namespace
        # No port in the URL: the Service's 80 says nothing of its pods' port.
        ("http://vllm.models.svc/v1", namespace_rule("models", None)),
        ("http://10.1.2.3:8000/v1", ip_rule("10.1.2.3/32", 8000)),
        ("https://[2001:db8::7]/v1", ip_rule("2001:db8::7/128", 443)),
    ],
)
def test_model_endpoint(
    agent_factory: AgentFactory, settings: OperatorSettings, url: str, rule: Manifest
) -> None:
    agent = agent_factory(spec(model=model(provider="openai-compatible", baseURL=url)))
    assert egress(policy_of(agent, settings)) == [DNS, rule]


def test_ollama_without_base_url_stays_in_the_pod(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    agent = agent_factory(spec(model=model(provider="ollama")))
    assert egress(policy_of(agent, settings)) == [DNS]


def test_mcp_servers_and_model_merge_per_namespace(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    servers = [
        {"name": "github", "url": "http://github-mcp.tools.svc:8080/mcp"},
        {"name": "search", "url": "https://mcp.search.example/mcp"},
        {"name": "docs", "url": "http://docs-mcp.tools.svc.cluster.local:9000/mcp"},
        {"name": "local", "url": "http://127.0.0.1:7000/mcp"},  # in the pod: no rule
    ]
    agent = agent_factory(
        spec(
            model=model(provider="openai-compatible", baseURL="http://vllm.tools.svc:8000/v1"),
            agent={"mcpServers": servers},
        )
    )
    assert egress(policy_of(agent, settings)) == [
        DNS,
        namespace_rule("tools", [8000, 8080, 9000]),
        {"to": PUBLIC, "ports": tcp(443)},
    ]


def test_http_get_hosts(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    agent_spec = spec(
        model=model(provider="ollama", baseURL="http://10.9.9.9:11434"),
        agent={"tools": ["http_get"], "httpAllowedHosts": ["*.wikipedia.org", "wiki.kb.svc"]},
    )
    assert egress(policy_of(agent_factory(agent_spec), settings)) == [
        DNS,
        ip_rule("10.9.9.9/32", 11434),
        namespace_rule("kb", None),  # any URL the model picks, on any port
        {"to": PUBLIC, "ports": tcp(80, 443)},
    ]
    # Hosts without the tool open nothing.
    agent_spec["agent"]["tools"] = []
    assert len(egress(policy_of(agent_factory(agent_spec), settings))) == 2


def test_dapr_control_plane_and_sidecar_ports(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    manifest = policy_of(agent_factory(spec(dapr={"enabled": True})), settings)
    assert namespace_rule("dapr-system", [6500, 50001, 50005, 50006]) in egress(manifest)
    assert sorted(DAPR_CONTROL_PLANE_PORTS) == [6500, 50001, 50005, 50006]
    (rule,) = manifest["spec"]["ingress"]
    assert rule["ports"] == tcp(8080, 9090, 50002)  # app, daprd metrics, daprd internal gRPC
    no_metrics = agent_factory(spec(dapr={"enabled": True, "enableMetrics": False}))
    assert policy_of(no_metrics, settings)["spec"]["ingress"][0]["ports"] == tcp(8080, 50002)
    without = policy_of(agent_factory(spec()), settings)
    assert not any("dapr-system" in json.dumps(rule) for rule in egress(without))


def test_inline_component_backends(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    password = {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}}
    state = {
        "name": "memory",
        "type": "state.redis",
        "metadata": [{"name": "redisHost", "value": "redis-master.redis.svc:6379"}, password],
    }
    pubsub = {
        "name": "bus",
        "type": "pubsub.kafka",
        "metadata": [{"name": "brokers", "value": "10.0.5.1:9093,kafka.events.svc"}],
    }
    agent = agent_factory(spec(dapr={"enabled": True, "stateStore": state, "pubsub": pubsub}))
    rules = egress(policy_of(agent, settings))
    assert ip_rule("10.0.5.1/32", 9093) in rules
    assert namespace_rule("events", [9092]) in rules  # kafka's port when the broker gives none
    assert namespace_rule("redis", [6379]) in rules
    assert unread_backends(agent) == []


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("mongodb://u:p@m-0.db.svc:27017,m-1.db.svc/app?tls=1", namespace_rule("db", [27017])),
        ("host=pg.db.svc port=5433 user=agent", namespace_rule("db", [5433])),
        ("amqp://guest@10.2.0.9/vhost", ip_rule("10.2.0.9/32", 5672)),
        ("localhost:6379", None),
    ],
)
def test_component_connection_strings(
    agent_factory: AgentFactory, settings: OperatorSettings, value: str, rule: Manifest | None
) -> None:
    state = {
        "name": "memory",
        "type": "state.mongodb",
        "metadata": [{"name": "connectionString", "value": value}],
    }
    agent = agent_factory(spec(dapr={"enabled": True, "stateStore": state}))
    common = [DNS, namespace_rule("dapr-system", [6500, 50001, 50005, 50006])]
    common.append({"to": PUBLIC, "ports": tcp(443)})  # the model's provider
    assert [r for r in egress(policy_of(agent, settings)) if r not in common] == (
        [rule] if rule else []
    )


def test_backends_the_spec_does_not_name_are_reported(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    secret_host = {
        "name": "memory",
        "type": "state.redis",
        "metadata": [{"name": "redisHost", "secretKeyRef": {"name": "redis", "key": "host"}}],
    }
    agent = agent_factory(
        spec(dapr={"enabled": True, "stateStore": secret_host, "pubsub": {"name": "shared-bus"}})
    )
    assert unread_backends(agent) == [
        "spec.dapr.stateStore (memory)",
        "spec.dapr.pubsub (shared-bus)",
    ]
    # Off, Dapr opens nothing and needs nothing.
    assert unread_backends(agent_factory(spec(dapr={"enabled": False}))) == []


def test_extra_egress_is_passed_through_last(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    extra = [
        {
            "to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"]}}],
            "ports": [{"protocol": "TCP", "port": 6379, "endPort": 6380}],
        },
        {"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]},
    ]
    manifest = policy_of(agent_factory(spec()), settings, {"enabled": True, "extraEgress": extra})
    assert egress(manifest)[-2:] == extra


def test_extra_rules_are_checked_at_apply_time() -> None:
    with pytest.raises(ValidationError):  # "port", not "ports"
        NetworkPolicySpec.model_validate({"extraEgress": [{"port": [{"port": 5432}]}]})
    with pytest.raises(ValidationError):
        NetworkPolicySpec.model_validate({"allowedNamespaces": ["Not_A_Namespace"]})
    with pytest.raises(ValidationError):
        NetworkPolicySpec.model_validate(
            {"extraEgress": [{"to": [{"ipBlock": {"cidr": "example.com"}}]}]}
        )


def test_output_is_stable(agent_factory: AgentFactory, settings: OperatorSettings) -> None:
    servers = [
        {"name": "a", "url": "http://a.x.svc:1/mcp"},
        {"name": "b", "url": "http://b.w.svc:2/mcp"},
        {"name": "c", "url": "https://c.example/mcp"},
    ]
    policy = {"enabled": True, "allowedNamespaces": ["b", "a"]}
    first = policy_of(agent_factory(spec(agent={"mcpServers": servers})), settings, policy)
    policy["allowedNamespaces"] = ["a", "b"]
    servers.reverse()
    second = policy_of(agent_factory(spec(agent={"mcpServers": servers})), settings, policy)
    assert render.applied_hash(first) == render.applied_hash(second)


# -- the CRD's view -------------------------------------------------------------------------------


def test_schema_for_the_crd() -> None:
    schema = crd.structural_schema(NetworkPolicySpec)
    fields = schema["properties"]
    assert "default" not in fields["enabled"]  # unset means the operator's default
    assert fields["allowedNamespaces"]["x-kubernetes-list-type"] == "set"
    assert fields["allowedNamespaces"]["items"]["pattern"] == api.DNS_LABEL
    port = fields["extraEgress"]["items"]["properties"]["ports"]["items"]["properties"]["port"]
    assert port["x-kubernetes-int-or-string"] is True
    peer = fields["extraEgress"]["items"]["properties"]["to"]["items"]
    assert peer["properties"]["ipBlock"]["properties"]["except"]["items"]["maxLength"] == 49
    assert peer["x-kubernetes-validations"][0]["message"]
    assert set(fields["extraIngress"]["items"]["properties"]) == {"from", "ports"}
    for name, field in fields.items():
        assert field["description"], name


# -- a valid NetworkPolicy, that lets through what the agent needs -------------------------------

SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
PEER = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "podSelector": SELECTOR,
        "namespaceSelector": SELECTOR,
        "ipBlock": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cidr"],
            "properties": {
                "cidr": {"type": "string"},
                "except": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}
PORT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
        "port": {"type": ["integer", "string"]},
        "endPort": {"type": "integer"},
    },
}


def rule_schema(peers: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            peers: {"type": "array", "items": PEER},
            "ports": {"type": "array", "items": PORT},
        },
    }


# networking.k8s.io/v1 NetworkPolicy as the API server takes it, strict about unknown fields.
NETWORK_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "networking.k8s.io/v1"},
        "kind": {"const": "NetworkPolicy"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["podSelector"],
            "properties": {
                "podSelector": SELECTOR,
                "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                "ingress": {"type": "array", "items": rule_schema("from")},
                "egress": {"type": "array", "items": rule_schema("to")},
            },
        },
    },
}


def full_policy(agent_factory: AgentFactory, settings: OperatorSettings) -> Manifest:
    """A policy that uses every part of the spec."""
    example = load_example(next(p for p in EXAMPLES if p.name == "helpdesk.yaml"))
    agent_spec = {
        **example["spec"],
        "agent": {
            "mcpServers": [{"name": "gh", "url": "http://github-mcp.tools.svc:8080/mcp"}],
            "tools": ["http_get"],
            "httpAllowedHosts": ["*.example.com", "10.3.3.3"],
        },
    }
    policy = {
        "enabled": True,
        "allowedNamespaces": ["web"],
        "allowedNamespaceSelector": {"matchLabels": {"team": "a"}},
        "allowedPodSelector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
        "allowMonitoringFrom": ["monitoring"],
        "extraIngress": [{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}],
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}], "ports": [{"port": 25}]}],
    }
    return policy_of(agent_factory(agent_spec), settings, policy)


def test_valid_network_policy_structure(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    manifest = full_policy(agent_factory, settings)
    jsonschema.validate(manifest, NETWORK_POLICY)
    for rule in manifest["spec"]["ingress"] + manifest["spec"]["egress"]:
        for peer in rule.get("from", rule.get("to", [])):
            assert "ipBlock" not in peer or len(peer) == 1  # ipBlock stands alone
            if "ipBlock" in peer:
                block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                for inner in peer["ipBlock"].get("except", []):
                    assert ipaddress.ip_network(inner).subnet_of(block)
        for port in rule.get("ports", []):
            assert not isinstance(port["port"], int) or 1 <= port["port"] <= 65535


def kubernetes_openapi() -> dict[str, Any] | None:
    """The API server's own OpenAPI v3 for networking.k8s.io/v1, from the Kubernetes module the
    local cluster builds from (absent until `localcluster/build.sh` has run)."""
    version = versions()["KUBERNETES_VERSION"]
    path = (
        CACHE_ROOT
        / "gomodcache"
        / f"k8s.io/kubernetes@{version}"
        / "api/openapi-spec/v3/apis__networking.k8s.io__v1_openapi.json"
    )
    if not Path(path).is_file():
        return None
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def strict(node: Any) -> Any:
    """The OpenAPI schemas, refusing unknown fields (as `kubectl apply --validate=strict`)."""
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def test_valid_per_the_kubernetes_openapi(
    agent_factory: AgentFactory, settings: OperatorSettings
) -> None:
    doc = kubernetes_openapi()
    if doc is None:
        pytest.skip("the Kubernetes OpenAPI is not in the local cluster's module cache")
    schemas = strict(doc["components"]["schemas"])
    schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["integer", "string"]}
    schema = {
        "$ref": "#/components/schemas/io.k8s.api.networking.v1.NetworkPolicy",
        "components": {"schemas": schemas},
    }
    jsonschema.validate(full_policy(agent_factory, settings), schema)


def selector_matches(selector: Manifest, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator] is False:
            return False
    return True


def egress_allows(
    manifest: Manifest,
    port: int,
    protocol: str = "TCP",
    namespace: str | None = None,
    pod_labels: dict[str, str] | None = None,
    ip: str | None = None,
) -> bool:
    """Whether the policy lets a pod connect to (a pod in namespace, or ip) on port: the
    NetworkPolicy semantics, for the peers this module writes."""
    for rule in egress(manifest):
        ports = rule.get("ports") or [{"protocol": protocol, "port": port}]
        if not any(p.get("protocol", "TCP") == protocol and p.get("port") == port for p in ports):
            continue
        for peer in rule.get("to") or [{}]:
            if not peer:
                return True
            if "ipBlock" in peer:
                if ip is None:
                    continue
                block = peer["ipBlock"]
                address = ipaddress.ip_address(ip)
                if address in ipaddress.ip_network(block["cidr"]) and not any(
                    address in ipaddress.ip_network(e) for e in block.get("except", [])
                ):
                    return True
                continue
            if namespace is None:
                continue
            ns_labels = {"kubernetes.io/metadata.name": namespace}
            if "namespaceSelector" in peer and not selector_matches(
                peer["namespaceSelector"], ns_labels
            ):
                continue
            if "podSelector" in peer and not selector_matches(
                peer["podSelector"], pod_labels or {}
            ):
                continue
            return True
    return False


AGENT_EXAMPLES = [
    path
    for path in EXAMPLES
    if load_example(path).get("kind") == "AIAgent" and "model" in load_example(path)["spec"]
]


@pytest.mark.parametrize("example", AGENT_EXAMPLES, ids=lambda p: p.name)
def test_never_blocks_what_the_agent_needs(
    agent_factory: AgentFactory, settings: OperatorSettings, example: Path
) -> None:
    agent = agent_factory(load_example(example)["spec"], name="agent", namespace="team-a")
    manifest = policy_of(agent, settings)
    for protocol in ("UDP", "TCP"):
        kube_dns = {"k8s-app": "kube-dns"}
        assert egress_allows(manifest, 53, protocol, "kube-system", pod_labels=kube_dns)
    assert not egress_allows(manifest, 53, "UDP", ip="8.8.8.8")  # not any resolver
    urls = [agent.model.base_url or "https://api.openai.com/v1"]
    urls += [server.url for server in agent.spec.agent.mcp_servers]
    for url in urls:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}[parts.scheme]
        host = parts.hostname or ""
        if ".svc" in host:  # a Service: its pods, in its namespace
            labels = host.split(".svc")[0].split(".")
            assert egress_allows(manifest, port, namespace=labels[-1]), url
        else:  # a public endpoint, at some public address
            assert egress_allows(manifest, port, ip="162.159.140.245"), url
            assert not egress_allows(manifest, port, ip="10.96.0.1"), url  # not the cluster
            assert not egress_allows(manifest, 80, ip="169.254.169.254"), url  # nor metadata
    if agent.spec.dapr.enabled:
        for port in DAPR_CONTROL_PLANE_PORTS:
            assert egress_allows(manifest, port, namespace="dapr-system")
        for _, ref in agent.spec.dapr.components():
            for entry in ref.metadata:
                if entry.name == "redisHost" and entry.value:
                    host, port_text = entry.value.rsplit(":", 1)
                    namespace = host.split(".svc")[0].split(".")[-1]
                    assert egress_allows(manifest, int(port_text), namespace=namespace)
    # Nothing else: another namespace's pods on another port stay out.
    assert not egress_allows(manifest, 5432, namespace="payments")
