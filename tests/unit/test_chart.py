"""The Helm chart, checked with the real helm: lint and template with every ci/ values file, then
what the rendered objects say (RBAC per mode, restricted pods, env the operator reads)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiagent_operator import render
from aiagent_operator.settings import OperatorSettings

from .conftest import REPO, make_agent

CHART = REPO / "charts" / "aiagent-operator"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
RELEASE_NAMESPACE = "ops"
# Kubernetes objects passed through as they are; Kubernetes documents their fields.
PASS_THROUGH = {"podSecurityContext", "securityContext", "resources"}

# Every (apiGroup, resource, verb) a watched namespace grants. Each was taken away in turn with the
# operator running as the chart's ServiceAccount, and each made it fail or log a 403
# (tests/e2e/test_helm_install.py keeps that proof for deployments), with two exceptions:
# aiagents/finalizers is needed only where the OwnerReferencesPermissionEnforcement admission plugin
# runs (children set blockOwnerDeletion), and events are for the Events Kopf posts on the AIAgent.
# ModelConfigs, Secrets beyond `get` and NetworkPolicies serve spec.modelRef (its API key copied
# into a Secret the operator manages in the agent's namespace, rotation watched) and
# spec.networkPolicy.
NAMESPACED_GRANTS = {
    *{("aiagents.dev", "aiagents", v) for v in ("get", "list", "watch", "patch")},
    ("aiagents.dev", "aiagents/status", "patch"),
    ("aiagents.dev", "aiagents/finalizers", "update"),
    *{("", r, v) for r in ("configmaps", "services") for v in ("list", "watch", "create", "patch")},
    *{("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch")},
    *{
        ("autoscaling", "horizontalpodautoscalers", v)
        for v in ("get", "list", "watch", "create", "patch", "delete")
    },
    *{("aiagents.dev", "modelconfigs", v) for v in ("get", "list", "watch")},
    *{("", "secrets", v) for v in ("get", "list", "watch", "create", "patch", "delete")},
    *{
        ("networking.k8s.io", "networkpolicies", v)
        for v in ("get", "list", "watch", "create", "patch", "delete")
    },
    *{(group, "events", v) for group in ("", "events.k8s.io") for v in ("create", "patch")},
    # Agent pods, to report a crash loop or an image pull failure (tests/node proves it), and
    # whether their Dapr sidecar is injected and ready.
    *{("", "pods", v) for v in ("list", "watch")},
    # Dapr Components an AIAgent declares: created, applied, checked for their owner, pruned;
    # all watched (tests/e2e/test_helm_install.py does so as the chart's ServiceAccount).
    *{("dapr.io", "components", v) for v in ("get", "list", "watch", "create", "patch", "delete")},
}


@functools.cache
def helm_binary() -> str:
    from localcluster.binaries import build as build_binaries

    return str(build_binaries() / "helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def render_chart(*values: Path, sets: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", RELEASE_NAMESPACE]
    args += [arg for v in values for arg in ("-f", str(v))]
    args += [arg for s in sets for arg in ("--set", s)]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = only(docs, "Deployment")
    return found


def env_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {var["name"]: var.get("value", "") for var in container["env"]}


def test_chart_crds_are_the_generated_ones() -> None:
    generated = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    in_chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert in_chart == generated, "copy crds/*.yaml into charts/aiagent-operator/crds/"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_lint(values: Path) -> None:
    helm("lint", "--strict", str(CHART), "-f", str(values))


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_rendered_objects_are_labelled_and_placed_by_helm(values: Path) -> None:
    docs = render_chart(values)
    watched = set(yaml.safe_load(values.read_text()).get("watchNamespaces") or [])
    for doc in docs:
        meta = doc["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "rel", meta["name"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm", meta["name"]
        # The release's own objects take helm's namespace; only watched namespaces are named.
        assert meta.get("namespace") in watched | {None}, (doc["kind"], meta)
    for subject in (s for d in docs for s in d.get("subjects", [])):
        assert subject["namespace"] == RELEASE_NAMESPACE


def test_templates_never_hard_code_a_namespace() -> None:
    for template in (CHART / "templates").glob("*.yaml"):
        for line in template.read_text().splitlines():
            if re.match(r"\s*namespace:", line):
                assert "{{" in line, f"{template.name}: {line.strip()}"


def test_cluster_mode_rbac() -> None:
    docs = render_chart(CHART / "ci" / "default-values.yaml")
    assert only(docs, "Role") == [] and only(docs, "RoleBinding") == []
    (role,) = only(docs, "ClusterRole")
    assert grants(role["rules"]) == NAMESPACED_GRANTS | {
        *{("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")},
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    }
    (binding,) = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (account,) = only(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "ops"}
    ]
    assert [p["metadata"]["name"] for p in only(docs, "ClusterKopfPeering")] == ["aiagent-operator"]
    assert env_of(docs)["AIAGENT_WATCH_NAMESPACES"] == ""


def test_namespaced_mode_rbac() -> None:
    docs = render_chart(CHART / "ci" / "namespaced-values.yaml")
    roles = only(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED_GRANTS | {
            ("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")
        }
    assert sorted(b["metadata"]["namespace"] for b in only(docs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    # Cluster-wide, only reads Kopf needs: CRDs and namespaces, never a write, never a Secret.
    (cluster_role,) = only(docs, "ClusterRole")
    assert grants(cluster_role["rules"]) == {
        (group, resource, verb)
        for group, resource in (
            ("apiextensions.k8s.io", "customresourcedefinitions"),
            ("", "namespaces"),
        )
        for verb in ("list", "watch")
    }
    peerings = only(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert only(docs, "ClusterKopfPeering") == []
    assert env_of(docs)["AIAGENT_WATCH_NAMESPACES"] == "team-a,team-b"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_no_wildcards_and_secrets_only_where_agents_are(values: Path) -> None:
    docs = render_chart(values)
    for role in only(docs, "ClusterRole") + only(docs, "Role"):
        granted = grants(role["rules"])
        assert not any("*" in part for grant in granted for part in grant), granted
    # Namespaced mode: Secrets in the watched namespaces alone, none cluster-wide.
    if yaml.safe_load(values.read_text()).get("watchNamespaces"):
        for role in only(docs, "ClusterRole"):
            assert not [g for g in grants(role["rules"]) if g[1] == "secrets"]


@pytest.mark.parametrize(
    ("sets", "kind", "resource"),
    [
        ((), "ClusterRole", "clusterkopfpeerings"),
        (("watchNamespaces={team-a}",), "Role", "kopfpeerings"),
    ],
)
def test_the_operator_creates_its_peering_only_when_the_chart_does_not(
    sets: tuple[str, ...], kind: str, resource: str
) -> None:
    """peering.py creates a missing peering object at startup when RBAC allows: the chart
    allows it only when it does not create the object itself."""

    def peering_verbs(docs: list[dict[str, Any]]) -> set[str]:
        (role,) = [r for r in only(docs, kind) if not r["metadata"]["name"].endswith("discovery")]
        return {v for g, r, v in grants(role["rules"]) if g == "kopf.dev" and r == resource}

    assert peering_verbs(render_chart(sets=sets)) == {"list", "watch", "patch"}
    without = render_chart(sets=(*sets, "peering.create=false"))
    assert peering_verbs(without) == {"list", "watch", "patch", "create"}
    assert not only(without, "ClusterKopfPeering") and not only(without, "KopfPeering")


def test_operator_pod_is_restricted() -> None:
    pod = deployment(render_chart())["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["command"] == ["aiagent-operator"]
    # The probe calls the port Kopf's liveness endpoint listens on.
    liveness = env_of(render_chart())["AIAGENT_LIVENESS_ENDPOINT"]
    port = next(
        p for p in container["ports"] if p["name"] == container["livenessProbe"]["httpGet"]["port"]
    )
    assert (
        liveness
        == f"http://0.0.0.0:{port['containerPort']}{container['livenessProbe']['httpGet']['path']}"
    )


def test_readiness_probe_and_metrics_service_use_the_metrics_endpoint() -> None:
    docs = render_chart(CHART / "ci" / "metrics-values.yaml")
    (container,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    endpoint = env_of(docs)["AIAGENT_METRICS_ENDPOINT"]
    assert endpoint == f"http://0.0.0.0:{ports['metrics']}/metrics"
    # The operator serves /readyz beside /metrics (metrics.MetricsServer).
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    (service,) = only(docs, "Service")
    assert (
        service["spec"]["selector"].items()
        <= deployment(docs)["spec"]["selector"]["matchLabels"].items()
    )
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": ports["metrics"], "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["publishNotReadyAddresses"] is True  # a stuck replica is scraped
    monitors = {m["metadata"]["name"]: m for m in only(docs, "ServiceMonitor")}
    operator = monitors["rel-aiagent-operator-operator"]
    assert (
        operator["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert operator["spec"]["namespaceSelector"] == {"matchNames": [RELEASE_NAMESPACE]}
    assert [e["port"] for e in operator["spec"]["endpoints"]] == ["metrics"]
    assert operator["metadata"]["labels"]["release"] == "prometheus"

    off = render_chart(sets=("metrics.operator.enabled=false",))
    (container,) = deployment(off)["spec"]["template"]["spec"]["containers"]
    assert env_of(off)["AIAGENT_METRICS_ENDPOINT"] == ""
    assert "readinessProbe" not in container and only(off, "Service") == []


def test_dashboard_config_map() -> None:
    docs = render_chart(CHART / "ci" / "metrics-values.yaml")
    (dashboard,) = only(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "AI agents"}
    shipped = json.loads(dashboard["data"]["aiagents.json"])
    assert shipped == json.loads((CHART / "dashboards" / "aiagents.json").read_text())
    assert only(render_chart(), "ConfigMap") == []


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_operator_settings_read_the_chart_env(
    values: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_of(render_chart(values))
    fields = {f"AIAGENT_{name.upper()}" for name in OperatorSettings.model_fields}
    assert set(env) <= fields, f"env the operator does not read: {set(env) - fields}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.agent_image == "ghcr.io/aiagent-operator/agent-runtime:0.1.0"
    assert settings.watch_namespaces == yaml.safe_load(values.read_text()).get(
        "watchNamespaces", []
    )
    assert settings.standalone is False
    assert settings.network_policy_default is True  # the chart's default: agents get one
    metrics_enabled = "9191" if "metrics" in values.stem else "9090"
    assert settings.metrics_endpoint == f"http://0.0.0.0:{metrics_enabled}/metrics"


def test_network_policy_default_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(render_chart(sets=("agentDefaults.networkPolicy=false",)))
    monkeypatch.setenv("AIAGENT_NETWORK_POLICY_DEFAULT", env["AIAGENT_NETWORK_POLICY_DEFAULT"])
    assert OperatorSettings().network_policy_default is False


def test_ha_values() -> None:
    docs = render_chart(CHART / "ci" / "ha-values.yaml")
    assert deployment(docs)["spec"]["replicas"] == 2
    (budget,) = only(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"] == deployment(docs)["spec"]["selector"]
    assert only(docs, "ClusterKopfPeering"), "replicas meet in the peering"
    assert only(render_chart(), "PodDisruptionBudget") == []  # one replica: nothing to keep


def test_standalone_refuses_more_than_one_replica() -> None:
    sets = ["--set", "peering.standalone=true", "--set", "replicaCount=2"]
    result = helm("template", "rel", str(CHART), *sets, check=False)
    assert result.returncode != 0 and "one replica only" in result.stderr
    docs = render_chart(sets=("peering.standalone=true",))
    assert env_of(docs)["AIAGENT_STANDALONE"] == "true" and not only(docs, "ClusterKopfPeering")


def test_service_monitor_selects_the_agents_services() -> None:
    docs = render_chart(CHART / "ci" / "metrics-values.yaml")
    (monitor,) = [
        m for m in only(docs, "ServiceMonitor") if m["metadata"]["name"].endswith("-agents")
    ]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # What the operator puts on every agent's Service.
    agent = render.render_service(make_agent())
    labels = agent["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [agent["spec"]["ports"][0]["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert only(render_chart(), "ServiceMonitor") == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCont": 2}, "additional properties 'replicaCont' not allowed"),
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"logging": {"level": "LOUD"}}, "/logging/level"),
        ({"agentDefaults": {"cpuRequest": "lots"}}, "/agentDefaults/cpuRequest"),
        ({"agentDefaults": {"networkPolicy": "yes"}}, "/agentDefaults/networkPolicy"),
        ({"metrics": {"operator": {"port": 8080}}}, "/metrics/operator/port"),
        ({"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}}, "grafana_dashboard"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], complaint: str, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("template", "rel", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def value_paths(node: Any, prefix: str = "") -> set[str]:
    if not isinstance(node, dict) or prefix.split(".")[-1] in PASS_THROUGH:
        return set()
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        paths |= {path} | value_paths(value, path)
    return paths


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    if prefix.split(".")[-1] in PASS_THROUGH:
        return set()
    paths = set()
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths |= {path} | schema_paths(sub, path)
    return paths


def test_schema_and_values_name_the_same_keys() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert value_paths(values) == schema_paths(schema) - {"global"}


def test_every_value_is_documented() -> None:
    """Each key in values.yaml has a comment right above it (inside pass-through Kubernetes
    objects, the object's own comment does)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented, inside_pass_through = [], False
    for previous, line in zip(lines, lines[1:], strict=False):
        key = re.match(r"( *)([A-Za-z]\w*):", line)
        if not key:
            continue
        if not key.group(1):
            inside_pass_through = key.group(2) in PASS_THROUGH
        elif inside_pass_through:
            continue
        if not previous.lstrip().startswith("# "):
            undocumented.append(line.strip())
    assert undocumented == []


def test_argocd_application_values_pass_the_schema(tmp_path: Path) -> None:
    app = yaml.safe_load((REPO / "argocd" / "application-operator.yaml").read_text())
    assert app["spec"]["source"]["path"] == "charts/aiagent-operator"
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    assert deployment(render_chart(path))["spec"]["replicas"] == 2
