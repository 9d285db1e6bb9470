"""Pure functions from an AIAgent to the Kubernetes objects it stands for. No I/O.

Children of an AIAgent `<name>`: ConfigMap `<name>-agent`, Deployment `<name>`, Service `<name>`,
and HorizontalPodAutoscaler `<name>` while autoscaling is enabled (and, from their own modules,
the Secret `<name>-model-key` for a ModelConfig's key, and the NetworkPolicy `<name>`). Each
carries the common labels and a controller ownerReference, so the API server's garbage collector
removes it with its owner.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agent_runtime.config import (
    API_KEY_ENV,
    AgentConfig,
    LimitsFields,
    LimitsSection,
    agent_config_from_manifest,
    mcp_header_env,
)

from . import api
from .kubetypes import parse_quantity
from .settings import OperatorSettings

Manifest = dict[str, Any]

FIELD_MANAGER = "aiagent-operator"
CONTAINER_NAME = "agent"
HTTP_PORT = 8080
CONFIG_DIR = "/etc/aiagent"
CONFIG_FILE = "agent.yaml"
FRAMEWORK_CONFIG_DIR = f"{CONFIG_DIR}/framework"
# A fixed non-root identity: the runtime image creates this user; any image works with it.
RUNTIME_UID = 10001

AGENT_LABEL = f"{api.GROUP}/agent"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Kube-proxies take a moment to drop a terminating pod from a Service; the pod keeps serving
# through it, so a rollout or scale-down loses no request (lifecycle.preStop.sleep: no binary).
PRE_STOP_SLEEP_SECONDS = 5
CONFIG_HASH_ANNOTATION = f"{api.GROUP}/config-hash"
# The AIAgent generation the children were rendered from: status.observedGeneration reads it
# back from the Deployment, so status never claims a generation whose children are not applied.
GENERATION_ANNOTATION = f"{api.GROUP}/generation"
# A digest of the child exactly as the operator applied it: a reconcile whose rendered child has
# the digest the live one carries applies nothing (a restart with nothing changed writes nothing).
APPLIED_HASH_ANNOTATION = f"{api.GROUP}/applied-hash"
# On the pod template: a digest of the resourceVersions of the Secrets the pods read, so that a
# rotated key (the Secret's value changed, the AIAgent not) rolls the pods onto it.
SECRETS_VERSION_ANNOTATION = f"{api.GROUP}/secrets-version"
NAMESPACE_ENV = "AIAGENT_NAMESPACE"


def configmap_name(agent: api.AIAgent) -> str:
    return f"{agent.name}-agent"


def selector_labels(agent: api.AIAgent) -> dict[str, str]:
    """The Deployment selector: minimal, because a selector can never change."""
    return {AGENT_LABEL: agent.name}


def common_labels(agent: api.AIAgent) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": agent.name,
        "app.kubernetes.io/component": "agent",
        MANAGED_BY_LABEL: FIELD_MANAGER,
        **selector_labels(agent),
    }


def owner_reference(agent: api.AIAgent) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": agent.name,
        "uid": agent.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(agent: api.AIAgent, name: str, **extra: Any) -> dict[str, Any]:
    """A child's metadata: its name, the agent's namespace and labels, the agent as controller."""
    return {
        "name": name,
        "namespace": agent.namespace,
        "labels": common_labels(agent),
        "ownerReferences": [owner_reference(agent)],
        **extra,
    }


def render_agent_config(agent: api.AIAgent) -> AgentConfig:
    """The agent.yaml the runtime reads: the spec minus pod settings and Secret references."""
    manifest = {
        "metadata": {"name": agent.name},
        "spec": agent.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    framework_config = (
        f"{FRAMEWORK_CONFIG_DIR}/{agent.spec.agent.config_map_ref.key}"
        if agent.spec.agent.config_map_ref
        else None
    )
    config = agent_config_from_manifest(manifest, framework_config_path=framework_config)
    return config.model_copy(update={"limits": render_limits(agent)})


def limit_divisor(agent: api.AIAgent) -> int:
    """The pods that share the agent's limits when each counts alone: its replicas, or the most
    the autoscaler may run (so that the pods together never exceed a limit)."""
    spec = agent.spec
    return max(1, spec.autoscaling.max_replicas if spec.autoscaling.enabled else spec.replicas)


def render_limits(agent: api.AIAgent) -> LimitsSection:
    """agent.yaml's limits: the spec's, each pod's share, and a shared ModelConfig budget. None
    set: the empty section, which agent.yaml leaves out (a replica count alone changes nothing)."""
    own = agent.spec.limits
    if own == LimitsFields() and agent.budget is None:
        return LimitsSection()
    return LimitsSection(**own.model_dump(), divisor=limit_divisor(agent), budget=agent.budget)


def render_configmap(agent: api.AIAgent) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(agent, configmap_name(agent)),
        "data": {CONFIG_FILE: render_agent_config(agent).to_yaml()},
    }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(configmap: Manifest) -> str:
    """A short digest of the rendered config; in the pod template it makes a config change roll."""
    return _digest(configmap["data"])


def applied_hash(manifest: Manifest) -> str:
    """A short digest of a rendered child (every field the operator sets)."""
    return _digest(manifest)


def stamped(manifest: Manifest, digest: str) -> Manifest:
    """The child with its digest among its annotations, as it is applied."""
    metadata = {**manifest["metadata"]}
    metadata["annotations"] = {**metadata.get("annotations", {}), APPLIED_HASH_ANNOTATION: digest}
    return {**manifest, "metadata": metadata}


def dapr_app_id(agent: api.AIAgent) -> str:
    return agent.spec.dapr.app_id or agent.name


def dapr_annotations(agent: api.AIAgent) -> dict[str, str]:
    dapr = agent.spec.dapr
    if not dapr.enabled:
        return {}
    annotations = {
        "dapr.io/enabled": "true",
        "dapr.io/app-id": dapr_app_id(agent),
        "dapr.io/app-port": str(HTTP_PORT),
        "dapr.io/app-protocol": "http",
        "dapr.io/log-level": dapr.log_level,
        "dapr.io/enable-metrics": "true" if dapr.enable_metrics else "false",
        "dapr.io/enable-app-health-check": "true",
        "dapr.io/app-health-check-path": "/healthz",
        # The injected sidecar must pass the restricted Pod Security Standard like our container.
        "dapr.io/sidecar-seccomp-profile-type": "RuntimeDefault",
        # Our pods mount no ServiceAccount token, so daprd's built-in Kubernetes secret store
        # cannot start (and would crash the sidecar); Components' secretKeyRefs do not need it:
        # Dapr's operator resolves them before handing the Component to the sidecar.
        "dapr.io/disable-builtin-k8s-secret-store": "true",
        # daprd gets SIGTERM when the pod does, while the runtime still drains its last requests
        # (preStop sleep, then graceful shutdown); its state store calls would fail with 502. This
        # keeps daprd's APIs up until the app stops answering its health check (or 30 s, inside
        # the pod's 35 s grace), and stops new pub/sub deliveries meanwhile.
        "dapr.io/block-shutdown-duration": "30s",
    }
    if dapr.config:
        annotations["dapr.io/config"] = dapr.config
    sidecar = dapr.sidecar
    for section, values in (
        ("request", sidecar and sidecar.requests),
        ("limit", sidecar and sidecar.limits),
    ):
        for resource in ("cpu", "memory"):
            if values and resource in values:
                annotations[f"dapr.io/sidecar-{resource}-{section}"] = str(values[resource])
    return annotations


def container_resources(agent: api.AIAgent, settings: OperatorSettings) -> dict[str, Any]:
    """The spec's resources over the operator defaults, key by key (a CPU request must exist for
    the autoscaler to compute utilization, so the default fills it in when the spec omits it)."""
    requests: dict[str, Any] = {
        "cpu": settings.default_cpu_request,
        "memory": settings.default_memory_request,
    }
    limits: dict[str, Any] = {
        key: value
        for key, value in (
            ("cpu", settings.default_cpu_limit),
            ("memory", settings.default_memory_limit),
        )
        if value
    }
    own = agent.spec.resources or api.ResourceRequirements()
    own_requests, own_limits = own.requests or {}, own.limits or {}
    # The API server refuses a request above its limit: a default never makes one. A limit
    # of the spec below the default request lowers the request to it; a request of the spec
    # above the default limit raises the limit to it.
    for key, default in list(requests.items()):
        if key in own_limits and key not in own_requests and _above(default, own_limits[key]):
            requests[key] = own_limits[key]
    for key, default in list(limits.items()):
        if key in own_requests and key not in own_limits and _above(own_requests[key], default):
            limits[key] = own_requests[key]
    requests |= own_requests
    limits |= own_limits
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return resources


def _above(quantity: api.Quantity, bound: api.Quantity) -> bool:
    value, limit = parse_quantity(quantity), parse_quantity(bound)
    return value is not None and limit is not None and value > limit


def _env(agent: api.AIAgent) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    ref = agent.model.api_key_secret_ref
    if ref:
        env.append(
            {
                "name": API_KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    env += _mcp_header_env(agent)
    # The root filesystem is read-only; frameworks (CrewAI) write caches under $HOME.
    env.append({"name": "HOME", "value": "/tmp"})
    # The runtime labels its metrics with its namespace (and its name, from agent.yaml).
    env.append(
        {"name": NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    )
    # A name of the spec replaces ours (HOME, AIAGENT_NAMESPACE): the Deployment's env is a map
    # by name for server-side apply, and the API server refuses a name twice.
    own = [var.to_wire() for var in agent.spec.env]
    names = {var["name"] for var in own}
    return [var for var in env if var["name"] not in names] + own


def _mcp_header_env(agent: api.AIAgent) -> list[dict[str, Any]]:
    """One variable per MCP header taken from a Secret; agent.yaml names the variable (see
    agent_runtime.config), so the value goes from the Secret to the pod and nowhere else."""
    env: list[dict[str, Any]] = []
    for server in agent.spec.agent.mcp_servers:
        for header in server.headers:
            if header.value_from is None:
                continue
            ref = header.value_from.secret_key_ref
            env.append(
                {
                    "name": mcp_header_env(server.name, header.name),
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
    return env


def _container(agent: api.AIAgent, settings: OperatorSettings) -> dict[str, Any]:
    spec = agent.spec
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # the root filesystem is read-only
    ]
    if spec.agent.config_map_ref:
        mounts.append(
            {"name": "framework-config", "mountPath": FRAMEWORK_CONFIG_DIR, "readOnly": True}
        )
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image or settings.agent_image,
        "args": [
            "run",
            f"{CONFIG_DIR}/{CONFIG_FILE}",
            "--host",
            "0.0.0.0",
            "--port",
            str(HTTP_PORT),
        ],
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": _env(agent),
        "resources": container_resources(agent, settings),
        "volumeMounts": mounts,
        # Framework imports can take seconds; the startup probe keeps liveness from killing a
        # pod that is still building its agent.
        "startupProbe": _probe("/healthz", period=2, failures=60),
        "readinessProbe": _probe("/readyz", period=5, failures=3),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        # A container that dies says why in its status (its last log lines), for the AIAgent.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.env_from:
        container["envFrom"] = [source.to_wire() for source in spec.env_from]
    return container


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _volumes(agent: api.AIAgent) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {
                "name": configmap_name(agent),
                "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}],
            },
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    ref = agent.spec.agent.config_map_ref
    if ref:
        volumes.append(
            {
                "name": "framework-config",
                "configMap": {"name": ref.name, "items": [{"key": ref.key, "path": ref.key}]},
            }
        )
    return volumes


def render_pod_template(
    agent: api.AIAgent, settings: OperatorSettings, configmap: Manifest
) -> dict[str, Any]:
    spec = agent.spec
    pod_spec: dict[str, Any] = {
        "containers": [_container(agent, settings)],
        "volumes": _volumes(agent),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,  # the runtime reads its config file, not Service env vars
        # The preStop sleep, then the runtime's own drain (AIAGENT_SHUTDOWN_GRACE_SECONDS, 25).
        "terminationGracePeriodSeconds": 30 + PRE_STOP_SLEEP_SECONDS,
    }
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    else:
        # The agent does not talk to the Kubernetes API: do not hand it a token.
        pod_spec["automountServiceAccountToken"] = False
    if spec.node_selector:
        pod_spec["nodeSelector"] = spec.node_selector
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in spec.tolerations]
    if spec.affinity:
        pod_spec["affinity"] = spec.affinity.to_wire()
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [s.to_wire() for s in spec.image_pull_secrets]
    return {
        "metadata": {
            "labels": {**spec.pod_labels, **common_labels(agent)},
            "annotations": {
                **spec.pod_annotations,
                CONFIG_HASH_ANNOTATION: config_hash(configmap),
                **(
                    {SECRETS_VERSION_ANNOTATION: agent.secrets_version}
                    if agent.secrets_version
                    else {}
                ),
                **dapr_annotations(agent),
            },
        },
        "spec": pod_spec,
    }


def render_deployment(
    agent: api.AIAgent, settings: OperatorSettings, configmap: Manifest | None = None
) -> Manifest:
    configmap = configmap or render_configmap(agent)
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(agent)},
        "template": render_pod_template(agent, settings, configmap),
        "revisionHistoryLimit": 5,
        # Never drop below the wanted capacity during a rollout.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
    }
    # While the autoscaler owns the replica count, leaving it out of our apply hands the field
    # over instead of fighting the HPA on every reconcile.
    if not agent.spec.autoscaling.enabled:
        spec["replicas"] = agent.spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(
            agent, agent.name, annotations={GENERATION_ANNOTATION: str(agent.generation)}
        ),
        "spec": spec,
    }


def render_service(agent: api.AIAgent) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(agent, agent.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(agent),
            "ports": [
                {
                    "name": "http",
                    "port": agent.spec.service.port,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def render_hpa(agent: api.AIAgent) -> Manifest:
    scaling = agent.spec.autoscaling
    target = {
        "type": "Utilization",
        "averageUtilization": scaling.target_cpu_utilization_percentage,
    }
    # With a Dapr sidecar in the pod, pod-level CPU would mix the sidecar into the average;
    # measure the agent container alone.
    metric = (
        {
            "type": "ContainerResource",
            "containerResource": {"name": "cpu", "container": CONTAINER_NAME, "target": target},
        }
        if agent.spec.dapr.enabled
        else {"type": "Resource", "resource": {"name": "cpu", "target": target}}
    )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(agent, agent.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": agent.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric],
        },
    }


# Kinds that exist only while the spec asks for them; the operator deletes them otherwise.
PRUNABLE = [
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
]


def render_children(agent: api.AIAgent, settings: OperatorSettings) -> list[Manifest]:
    """Every child the AIAgent asks for, in apply order (config before the pods that mount it)."""
    from .network_policy import render_network_policy  # it builds on this module

    configmap = render_configmap(agent)
    children = [configmap, render_deployment(agent, settings, configmap), render_service(agent)]
    policy = render_network_policy(agent, settings)
    if policy is not None:
        children.insert(0, policy)  # so that a new agent's pods never run without it
    if agent.spec.autoscaling.enabled:
        children.append(render_hpa(agent))
    return children
