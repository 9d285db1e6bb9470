"""`spec.networkPolicy`: the API, and the NetworkPolicy `<name>` that lets the agent's pods talk to
what their spec names (model, MCP servers, Dapr, DNS) and be called only by the peers it allows."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field

from agent_runtime.config import CamelModel, cel_rule

from .kubetypes import DNS_LABEL, LabelSelector, LabelSelectorRequirement
from .settings import OperatorSettings

# `api` imports this module (spec.networkPolicy), so the rendering half takes `api` and `render`
# (which needs a whole `api`) only when it runs.
if TYPE_CHECKING:
    from . import api

Manifest = dict[str, Any]

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server

DNS_NAMESPACE = "kube-system"
DNS_POD_LABELS = {"k8s-app": "kube-dns"}  # CoreDNS and kube-dns alike, on kubeadm, EKS, GKE, AKS
# NodeLocal DNSCache's default address: pods that resolve through it never reach a kube-dns pod.
NODE_LOCAL_DNS = "169.254.20.10/32"

DAPR_NAMESPACE = "dapr-system"
# The pods' own ports (a policy sees the port after a Service's translation): sentry (its Service
# serves 443), the operator's API (dapr-api, 443), placement, scheduler.
DAPR_CONTROL_PLANE_PORTS = (50001, 6500, 50005, 50006)
DAPR_INTERNAL_GRPC_PORT = 50002  # sidecar to sidecar: service invocation of this agent
DAPR_METRICS_PORT = 9090

# Addresses that are never a public provider: private, shared (CGNAT) and link-local (the cloud
# metadata server) ranges, where pods, Services and nodes live.
PRIVATE_V4 = ("10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
PRIVATE_V6 = ("fc00::/7", "fe80::/10")
WEB_PORTS = (80, 443)
SCHEME_PORTS = {
    "http": 80,
    "https": 443,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
    "postgres": 5432,
    "postgresql": 5432,
    "mongodb": 27017,
    "nats": 4222,
    "mysql": 3306,
}
# Metadata entries of Dapr Components that name their backend, with the port it defaults to.
COMPONENT_ENDPOINT_KEYS: dict[str, int | None] = {
    "redisHost": 6379,  # state.redis, pubsub.redis, lock.redis: host:port
    "brokers": 9092,  # pubsub.kafka: host:port,host:port
    "natsURL": 4222,  # pubsub.jetstream
    "host": None,  # state.mongodb, state.cassandra ...: host[:port]
    "hosts": None,
    "connectionString": None,  # only its URL or key=value forms; a Secret's value is unknown
    "url": None,
    "endpoint": None,
}
CIDR = r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
Cidr = Annotated[
    str,
    Field(
        max_length=49,
        pattern=CIDR,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "isCIDR(self)",
                    "must be an IPv4 or IPv6 CIDR, e.g. 10.0.12.0/24 or 2001:db8::/64",
                )
            ]
        },
    ),
]
# A named port: an IANA service name (at most 15 characters, a letter among them, no '--').
PORT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

__all__ = ["LabelSelector", "LabelSelectorRequirement"]
NamespaceName = Annotated[str, Field(max_length=63, pattern=DNS_LABEL)]


# -- the API --------------------------------------------------------------------------------------


class IPBlock(CamelModel):
    """A CIDR range, as in Kubernetes."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) "
                    "|| (cidr(self.cidr).containsCIDR(e) "
                    "&& cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))",
                    "each except range must lie strictly inside cidr",
                    ".except",
                )
            ]
        }
    }

    cidr: Cidr = Field(description="CIDR range, e.g. 10.0.12.0/24 or 2001:db8::/64.")
    except_: list[Cidr] | None = Field(
        None, alias="except", max_length=32, description="Ranges inside cidr to leave out."
    )


class NetworkPolicyPeer(CamelModel):
    """Pods (by namespace and pod labels) or an IP range, as in a Kubernetes NetworkPolicyPeer."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "has(self.ipBlock) != (has(self.podSelector) || has(self.namespaceSelector))",
                    "a peer is either ipBlock, or podSelector and/or namespaceSelector",
                )
            ]
        }
    }

    pod_selector: LabelSelector | None = Field(
        None,
        description="Pods with these labels, in the AIAgent's namespace, or in the namespaces "
        "namespaceSelector selects.",
    )
    namespace_selector: LabelSelector | None = Field(
        None, description="All pods (or the podSelector's) of the namespaces with these labels."
    )
    ip_block: IPBlock | None = Field(None, description="An IP range (outside the cluster).")


class NetworkPolicyPort(CamelModel):
    """A port, or a range of ports, as in a Kubernetes NetworkPolicyPort."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.port) || (type(self.port) == int ? "
                    "(self.port >= 1 && self.port <= 65535) : (size(self.port) <= 15 "
                    f"&& self.port.matches('{PORT_NAME}') && self.port.matches('[a-z]') "
                    "&& !self.port.contains('--')))",
                    "port must be a number from 1 to 65535 or a port name (at most 15 lowercase "
                    "letters, digits and '-', with a letter)",
                    ".port",
                ),
                cel_rule(
                    "!has(self.endPort) || (has(self.port) && type(self.port) == int "
                    "&& self.endPort >= self.port)",
                    "endPort needs a numeric port, and must be at least port",
                    ".endPort",
                ),
            ]
        }
    }

    protocol: Literal["TCP", "UDP", "SCTP"] = Field("TCP", description="TCP, UDP or SCTP.")
    port: int | str | None = Field(
        None,
        json_schema_extra={"maxLength": 15},
        description="The pod's port (number or name; after a Service's translation). Unset: "
        "every port.",
    )
    end_port: int | None = Field(
        None, ge=1, le=65535, description="Last port of a range starting at port (a number)."
    )


class NetworkPolicyEgressRule(CamelModel):
    """Traffic the agent's pods may send, as in a Kubernetes NetworkPolicyEgressRule."""

    to: list[NetworkPolicyPeer] = Field(
        default_factory=list, max_length=32, description="Destinations; empty: any destination."
    )
    ports: list[NetworkPolicyPort] = Field(
        default_factory=list, max_length=32, description="Ports; empty: every port."
    )


class NetworkPolicyIngressRule(CamelModel):
    """Traffic the agent's pods may receive, as in a Kubernetes NetworkPolicyIngressRule."""

    from_: list[NetworkPolicyPeer] = Field(
        default_factory=list, alias="from", max_length=32, description="Sources; empty: any."
    )
    ports: list[NetworkPolicyPort] = Field(
        default_factory=list, max_length=32, description="Ports; empty: every port."
    )


class NetworkPolicySpec(CamelModel):
    """A NetworkPolicy named like the agent: only the listed peers may call it, and it may reach
    only DNS, its model, its MCP servers, Dapr and its Components' backends (as far as the spec
    names them), plus extraEgress. Enforced only where the cluster's network plugin enforces
    NetworkPolicy (Calico, Cilium, Antrea, kube-router, ...)."""

    enabled: bool | None = Field(
        None,
        description="Create the NetworkPolicy. Unset: the operator's default (the Helm chart's "
        "networkPolicy.enabled, AIAGENT_NETWORK_POLICY_DEFAULT).",
    )
    allow_same_namespace: bool = Field(
        True, description="Every pod of the AIAgent's namespace may call the agent."
    )
    allowed_namespaces: list[NamespaceName] = Field(
        default_factory=list,
        max_length=64,
        description="Namespaces, besides its own, whose pods may call the agent.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allowed_namespace_selector: LabelSelector | None = Field(
        None,
        description="Pods of the namespaces with these labels may call the agent (only those "
        "matching allowedPodSelector, when it is set too).",
    )
    allowed_pod_selector: LabelSelector | None = Field(
        None,
        description="Pods with these labels, in any namespace (or in those of "
        "allowedNamespaceSelector, when it is set too), may call the agent.",
    )
    allow_monitoring_from: list[NamespaceName] = Field(
        default_factory=list,
        max_length=16,
        description="Namespaces whose pods (Prometheus) may scrape the agent's metrics (port "
        "8080, /metrics) and the Dapr sidecar's (9090).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    extra_ingress: list[NetworkPolicyIngressRule] = Field(
        default_factory=list,
        max_length=16,
        description="More ingress rules, as in a NetworkPolicy (e.g. an ingress controller's "
        "nodes by ipBlock).",
    )
    extra_egress: list[NetworkPolicyEgressRule] = Field(
        default_factory=list,
        max_length=32,
        description="More egress rules, as in a NetworkPolicy: for what the operator cannot read "
        "from the spec, e.g. the backends of Dapr Components given by name or with a secret "
        "host, a proxy, or a model endpoint behind a private address.",
    )


# -- where the agent's traffic goes ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Destination:
    """Where the pods connect: a namespace (a Service's pods), an IP, or the public internet."""

    kind: Literal["namespace", "ip", "public"]
    target: str  # the namespace or the CIDR; "" for public
    port: int | None  # None: any port (a Service's port says nothing of its pods' port)


def destinations(agent: api.AIAgent, settings: OperatorSettings) -> set[Destination]:
    """Every destination the spec names (`unread_backends` tells what it cannot name)."""
    found: set[Destination] = set()
    spec = agent.spec

    def add(host: str, port: int | None, default_port: int | None) -> None:
        dest = classify(host, port, default_port, agent.namespace, settings.cluster_domain)
        if dest:
            found.add(dest)

    model = agent.model
    if model.base_url:
        add(*url_endpoint(model.base_url))
    elif model.provider != "ollama":  # ollama without baseURL: localhost, inside the pod
        found.add(Destination("public", "", 443))
    for server in spec.agent.mcp_servers:
        add(*url_endpoint(server.url))
    if "http_get" in spec.agent.tools:
        web = {Destination("public", "", 80), Destination("public", "", 443)}
        for pattern in spec.agent.http_allowed_hosts:
            # Any port: the model picks the URL. Wildcards match public names only.
            dest = classify(pattern, None, None, agent.namespace, settings.cluster_domain)
            if "*" in pattern or (dest and dest.kind == "public"):
                found |= web
            elif dest:
                found.add(dest)
    if spec.dapr.enabled:
        found |= {Destination("namespace", DAPR_NAMESPACE, p) for p in DAPR_CONTROL_PLANE_PORTS}
        for _, ref in spec.dapr.components():
            for entry in ref.metadata if ref.type else []:
                if entry.name in COMPONENT_ENDPOINT_KEYS and entry.value is not None:
                    for endpoint in endpoints(entry.value, COMPONENT_ENDPOINT_KEYS[entry.name]):
                        add(*endpoint)
    return found


def unread_backends(agent: api.AIAgent) -> list[str]:
    """The Components whose backends the policy cannot open (their traffic needs extraEgress):
    existing ones (named only), and inline ones whose address is in a Secret or absent."""
    unread: list[str] = []
    if not agent.spec.dapr.enabled:
        return unread
    for field, ref in agent.spec.dapr.components():
        readable = [
            entry
            for entry in ref.metadata
            if entry.name in COMPONENT_ENDPOINT_KEYS and entry.value is not None
        ]
        if not ref.type or not readable:
            unread.append(f"{field} ({ref.name})")
    return unread


def url_endpoint(url: str) -> tuple[str, int | None, int | None]:
    """(host, port given in the URL, the scheme's port) of a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1": the CRD's URL rules keep these out
        return "", None, None
    try:
        port = parts.port
    except ValueError:  # not a port: the CRD's URL rules keep these out
        port = None
    return parts.hostname or "", port, SCHEME_PORTS.get(parts.scheme)


def endpoints(value: str, default_port: int | None) -> list[tuple[str, int | None, int | None]]:
    """(host, port, default port) of each backend a Component metadata value names: a URL
    (mongodb://a:1,b:2/db), a key=value connection string (host=a port=5432), or host:port list."""
    value = value.strip()
    if "://" in value:
        scheme, rest = value.split("://", 1)
        default_port = SCHEME_PORTS.get(scheme.lower(), default_port)
        netloc = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
        items = netloc.split(",")
    elif "=" in value:
        fields = dict(
            token.split("=", 1) for token in value.replace(";", " ").split() if "=" in token
        )
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        host = fields.get("host") or fields.get("server") or ""
        if fields.get("port", "").isdigit():
            host = f"{host}:{fields['port']}"
        items = host.split(",")
    else:
        items = value.split(",")
    found: list[tuple[str, int | None, int | None]] = []
    for item in items:
        try:  # a metadata value is free text: "[" or "h:99999" name no backend
            parts = urlsplit("//" + item.strip())
            port = parts.port
        except ValueError:
            continue
        if parts.hostname:
            found.append((parts.hostname, port, default_port))
    return found


def classify(
    host: str, port: int | None, default_port: int | None, namespace: str, cluster_domain: str
) -> Destination | None:
    """Where a host name or address is; None for the pod itself (localhost), or an external name
    whose port is unknown.

    In-cluster Service names (`svc`, `svc.ns.svc`, `svc.ns.svc.<domain>`, and pod names under a
    headless Service) become their namespace, on the port the URL gives, else on the protocol's
    (Redis 6379, Kafka 9092, ...); with neither, or a bare http(s) URL, on any port: a policy
    sees the pods' port, and a Service's 80/443 seldom is. IPs become /32 (or /128) on the port.
    Any other name is public: its port, to every address outside the private ranges.
    """
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_loopback:
            return None
        return Destination("ip", f"{address}/{address.max_prefixlen}", port or default_port)
    if not host or host == "localhost":
        return None
    service_port = port or (default_port if default_port not in WEB_PORTS else None)
    for suffix in (f".svc.{cluster_domain}", ".svc.cluster.local", ".svc"):
        name = host.removesuffix(suffix).split(".")
        if host.endswith(suffix) and len(name) >= 2:
            return Destination("namespace", name[-1], service_port)
    if "." not in host:  # a Service of the agent's own namespace
        return Destination("namespace", namespace, service_port)
    public_port = port or default_port
    return Destination("public", "", public_port) if public_port else None


# -- the manifest ---------------------------------------------------------------------------------


def policy_spec(agent: api.AIAgent) -> NetworkPolicySpec:
    """spec.networkPolicy (its defaults when left out)."""
    return agent.spec.network_policy


def enabled(policy: NetworkPolicySpec, settings: OperatorSettings) -> bool:
    """spec.networkPolicy.enabled, or the operator's default when the spec leaves it unset."""
    return settings.network_policy_default if policy.enabled is None else policy.enabled


def render_network_policy(
    agent: api.AIAgent, settings: OperatorSettings, policy: NetworkPolicySpec | None = None
) -> Manifest | None:
    """The agent's NetworkPolicy, or None while it has none (`policy`: spec.networkPolicy)."""
    from . import render

    policy = policy or policy_spec(agent)
    if not enabled(policy, settings):
        return None
    found = destinations(agent, settings)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": render.child_metadata(agent, agent.name),
        "spec": {
            "podSelector": {"matchLabels": render.selector_labels(agent)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress_rules(agent, policy),
            "egress": [dns_rule(), *egress_rules(found), *wire(policy.extra_egress)],
        },
    }


def ingress_rules(agent: api.AIAgent, policy: NetworkPolicySpec) -> list[Manifest]:
    from . import render

    dapr = agent.spec.dapr
    ports = [render.HTTP_PORT]
    metrics = [render.HTTP_PORT]  # the runtime serves /metrics beside its API
    if dapr.enabled:
        ports.append(DAPR_INTERNAL_GRPC_PORT)
        if dapr.enable_metrics:
            ports.append(DAPR_METRICS_PORT)
            metrics.append(DAPR_METRICS_PORT)
    peers: list[Manifest] = []
    if policy.allow_same_namespace:
        peers.append({"podSelector": {}})
    if policy.allowed_namespaces:
        peers.append({"namespaceSelector": namespaces_selector(policy.allowed_namespaces)})
    ns_selector = policy.allowed_namespace_selector
    pod_selector = policy.allowed_pod_selector
    if ns_selector or pod_selector:
        peer: Manifest = {"namespaceSelector": ns_selector.to_wire() if ns_selector else {}}
        if pod_selector:
            peer["podSelector"] = pod_selector.to_wire()
        peers.append(peer)
    rules: list[Manifest] = []
    if peers:
        rules.append({"from": peers, "ports": tcp_ports(ports)})
    if policy.allow_monitoring_from:
        rules.append(
            {
                "from": [{"namespaceSelector": namespaces_selector(policy.allow_monitoring_from)}],
                "ports": tcp_ports(metrics),
            }
        )
    return rules + wire(policy.extra_ingress)


def dns_rule() -> Manifest:
    return {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}},
                "podSelector": {"matchLabels": dict(DNS_POD_LABELS)},
            },
            {"ipBlock": {"cidr": NODE_LOCAL_DNS}},
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def egress_rules(found: set[Destination]) -> list[Manifest]:
    """One rule per namespace, per IP, and one for the public internet, in a stable order."""
    ports: dict[tuple[str, str], set[int | None]] = defaultdict(set)
    for dest in found:
        ports[(dest.kind, dest.target)].add(dest.port)
    rules: list[Manifest] = []
    for (kind, target), wanted in sorted(ports.items()):
        rule: Manifest = {"to": peers_of(kind, target)}
        if None not in wanted:
            rule["ports"] = tcp_ports(sorted(p for p in wanted if p is not None))
        rules.append(rule)
    return rules


def peers_of(kind: str, target: str) -> list[Manifest]:
    if kind == "namespace":
        return [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: target}}}]
    if kind == "ip":
        return [{"ipBlock": {"cidr": target}}]
    return [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_V4)}},
        {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_V6)}},
    ]


def namespaces_selector(names: list[str]) -> Manifest:
    return {
        "matchExpressions": [
            {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(set(names))}
        ]
    }


def tcp_ports(ports: list[int]) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port} for port in sorted(set(ports))]


def wire(rules: list[NetworkPolicyEgressRule] | list[NetworkPolicyIngressRule]) -> list[Manifest]:
    # An empty list means what an absent one does (any peer, any port); leave it out.
    return [{k: v for k, v in rule.to_wire().items() if v != []} for rule in rules]
