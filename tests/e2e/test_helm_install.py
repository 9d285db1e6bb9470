"""The Helm chart installed for real, and the operator running with the chart's ServiceAccount.

There is no kubelet to run the operator image, so the chart's Deployment lands on a fake kwok node
while the operator itself runs here as a process, with a token of the chart's ServiceAccount (never
admin credentials) and the env of the chart's Deployment: the chart's RBAC is what gets tested.
Every namespace enforces the restricted Pod Security Standard (the real PodSecurity admission).
On the way the Argo CD health check runs over every state an AIAgent passes through;
AIAGENT_RECORD_FIXTURES=1 writes those states to tests/unit/fixtures/argocd/ for the unit tests.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kubectl import (
    KWOK_TOLERATION,
    REPO,
    Kubectl,
    OperatorProcess,
    load_example,
    wait_for,
)
from tests.unit.test_argocd_health import FIXTURES, argocd_health

from .conftest import create_api_key_secrets, create_namespace, install_dapr_crds

CHART = REPO / "charts" / "aiagent-operator"
RECORD = os.environ.get("AIAGENT_RECORD_FIXTURES") == "1"
# What the API server says when RBAC refuses, and what Kopf logs when it falls back for lack of it.
FORBIDDEN = re.compile(r"403 Forbidden|APIForbiddenError|Code: 403|Not enough permissions")


@functools.cache
def helm_binary() -> str:
    from localcluster.binaries import build as build_binaries

    return str(build_binaries() / "helm")


def helm(kubectl: Kubectl, *args: str) -> str:
    cmd = [helm_binary(), f"--kubeconfig={kubectl.kubeconfig}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def restricted_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = create_namespace(kubectl, prefix)
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    kubectl.run(
        "label", "namespace", name, *labels, "pod-security.kubernetes.io/enforce-version=latest"
    )
    return name


@dataclass
class Release:
    """A chart release and an operator process acting as its ServiceAccount."""

    name: str
    namespace: str
    operator: OperatorProcess
    notes: str  # what `helm install` printed (NOTES.txt)

    @property
    def fullname(self) -> str:
        return fullname(self.name)


def fullname(release: str) -> str:
    """The chart's object names (its ServiceAccount, Deployment, Roles) for a release."""
    return f"{release}-aiagent-operator"


def install(kubectl: Kubectl, name: str, namespace: str, tmp: Path, **values: Any) -> Release:
    """helm install (the chart's own CRDs, RBAC, peering, Deployment), then start the operator
    with the chart's ServiceAccount token and its Deployment's environment."""
    if on_fake_nodes(kubectl):  # kwok runs the operator pod: admission and scheduling are real
        values.setdefault("tolerations", [KWOK_TOLERATION])
    else:  # a real cluster (AIAGENT_E2E_KUBECONFIG, kind) could not pull the operator image
        values.setdefault("replicaCount", 0)
    image = os.environ.get("AIAGENT_AGENT_IMAGE")  # the runtime image a kind run has loaded
    if image:
        repository, _, tag = image.rpartition(":")
        values.setdefault("agentImage", {"repository": repository, "tag": tag})
    values_file = tmp / f"{name}-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    notes = helm(
        kubectl, "install", name, str(CHART), "-n", namespace, "-f", str(values_file), "--wait"
    )
    kubectl.run("wait", "--for=condition=Established", "crd/aiagents.aiagents.dev")
    kubeconfig = service_account_kubeconfig(kubectl, namespace, fullname(name), tmp)
    settings = chart_settings(kubectl, namespace, fullname(name))
    operator = OperatorProcess(kubeconfig, tmp / f"{name}-operator.log", **settings).start()
    return Release(name, namespace, operator, notes)


def on_fake_nodes(kubectl: Kubectl) -> bool:
    return bool(kubectl.list("nodes", "", "type=kwok"))


def service_account_kubeconfig(kubectl: Kubectl, namespace: str, account: str, tmp: Path) -> Path:
    """A kubeconfig holding only a token of the ServiceAccount (TokenRequest, as a pod gets)."""
    token = kubectl.run("create", "token", account, "--duration=2h", namespace=namespace).stdout
    admin = json.loads(kubectl.run("config", "view", "--raw", "--minify", "-o", "json").stdout)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": token.strip()}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path = tmp / f"{namespace}-{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def chart_settings(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    """The AIAGENT_* env of the chart's Deployment, as OperatorProcess settings. The liveness
    endpoint stays OperatorProcess's own (a free port here, not 8080)."""
    deployment = kubectl.get("deployment", name, namespace)
    assert deployment is not None
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return {
        var["name"].removeprefix("AIAGENT_").lower(): var.get("value", "")
        for var in env
        if var["name"].startswith("AIAGENT_") and var["name"] != "AIAGENT_LIVENESS_ENDPOINT"
    }


def uninstall(kubectl: Kubectl, release: Release) -> None:
    release.operator.stop()
    helm(kubectl, "uninstall", release.name, "-n", release.namespace, "--wait")
    kubectl.run("delete", "namespace", release.namespace, "--wait=false", check=False)


def forbidden(operator: OperatorProcess) -> list[str]:
    """RBAC refusals only: a cluster-wide operator also sees earlier tests' namespaces being
    deleted, where the API server refuses creates for a reason no Role can change."""
    return [
        line
        for line in operator.log_text().splitlines()
        if FORBIDDEN.search(line) and "being terminated" not in line
    ]


def record(state: str, obj: dict[str, Any]) -> None:
    """Keep a real AIAgent for the Argo CD health unit tests (only when asked to)."""
    if not RECORD:
        return
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    meta.pop("managedFields", None)
    (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{state}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))


class Watch:
    """Every version of one AIAgent, in order (`kubectl get --watch`), from before it exists."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str, tmp: Path) -> None:
        cmd = [kubectl.binary, f"--kubeconfig={kubectl.kubeconfig}", "-n", namespace, "-v=6"]
        cmd += [
            "get",
            "aiagents",
            f"--field-selector=metadata.name={name}",
            "--watch",
            "-o",
            "json",
        ]
        self.log = tmp / f"watch-{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
        # Changes made before the watch request would only show up merged into its initial list.
        wait_for("the watch request", lambda: "watch=true" in self.log.read_text())

    def stop(self) -> list[dict[str, Any]]:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        text, decoder = out.decode(), json.JSONDecoder()
        objects: list[dict[str, Any]] = []
        pos = 0
        while (pos := _skip_space(text, pos)) < len(text):
            obj, pos = decoder.raw_decode(text, pos)
            objects.append(obj)
        return objects


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def runs(items: list[str]) -> list[str]:
    """The items with repeats in a row collapsed: [a, a, b, a] -> [a, b, a]."""
    return [item for i, item in enumerate(items) if i == 0 or items[i - 1] != item]


def phase_of(kubectl: Kubectl, namespace: str, name: str, phase: str, **extra: Any) -> Any:
    def probe() -> dict[str, Any] | None:
        agent = kubectl.get("aiagent", name, namespace)
        status = (agent or {}).get("status") or {}
        if (
            agent
            and status.get("phase") == phase
            and status.get("observedGeneration") == agent["metadata"]["generation"]
            and all(status.get(k) == v for k, v in extra.items())
        ):
            return agent
        return None

    return wait_for(f"AIAgent {name} {phase} {extra or ''}", probe, timeout=90)


# -- cluster mode first: its operator watches every namespace, so it must be gone before the
# -- namespaced release below starts its own.


def test_cluster_mode_with_chart_rbac(kubectl: Kubectl, tmp_path: Path) -> None:
    name = f"cw-{uuid.uuid4().hex[:6]}"
    release = install(
        kubectl, name, restricted_namespace(kubectl, "helm-op"), tmp_path, peering={"name": name}
    )
    try:
        namespace = restricted_namespace(kubectl, "helm-cw")
        create_api_key_secrets(kubectl, namespace)
        kubectl.apply(load_example("autoscaled-agent.yaml"), namespace=namespace)
        phase_of(kubectl, namespace, "autoscaled-agent", "Ready", readyReplicas=1)
        assert kubectl.get("hpa", "autoscaled-agent", namespace) is not None

        # Turning autoscaling off deletes the HPA: the one delete the operator ever makes.
        patch = {"spec": {"autoscaling": {"enabled": False}, "replicas": 2}}
        kubectl.run(
            "patch",
            "aiagent",
            "autoscaled-agent",
            "--type=merge",
            "-p",
            json.dumps(patch),
            namespace=namespace,
        )
        phase_of(kubectl, namespace, "autoscaled-agent", "Ready", readyReplicas=2)
        wait_for("the HPA gone", lambda: kubectl.get("hpa", "autoscaled-agent", namespace) is None)

        # The replica announced itself in the chart's ClusterKopfPeering (patch allowed).
        peering = kubectl.get("clusterkopfpeering", name)
        assert peering and peering.get("status"), peering
        assert forbidden(release.operator) == []
    finally:
        uninstall(kubectl, release)

    # Uninstalling the chart keeps the CRD, and so every AIAgent and its running children.
    assert kubectl.get("crd", "aiagents.aiagents.dev") is not None
    assert kubectl.get("aiagent", "autoscaled-agent", namespace) is not None
    assert kubectl.get("deployment", "autoscaled-agent", namespace) is not None
    assert kubectl.get("clusterrole", release.fullname) is None
    kubectl.run("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="module")
def namespaced(
    kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Release, str]]:
    """A release in namespaced mode (a Role in one watched namespace); all restricted."""
    agents = restricted_namespace(kubectl, "helm-agents")
    create_api_key_secrets(kubectl, agents)
    release = install(
        kubectl,
        "ns",
        restricted_namespace(kubectl, "helm-op"),
        tmp_path_factory.mktemp("helm"),
        watchNamespaces=[agents],
    )
    yield release, agents
    uninstall(kubectl, release)
    kubectl.run("delete", "namespace", agents, "--wait=false", check=False)


def can_i(kubectl: Kubectl, release: Release, *args: str) -> bool:
    account = f"system:serviceaccount:{release.namespace}:{release.fullname}"
    result = kubectl.run("auth", "can-i", f"--as={account}", *args, check=False)
    return result.stdout.strip() == "yes"


def test_chart_grants_nothing_beyond_the_watched_namespace(
    kubectl: Kubectl, namespaced: tuple[Release, str]
) -> None:
    release, agents = namespaced
    # The operator's own pod passed restricted admission in its namespace (helm --wait saw it up).
    deployment = kubectl.get("deployment", release.fullname, release.namespace)
    assert deployment is not None
    wanted = deployment["spec"]["replicas"]
    assert deployment["status"].get("availableReplicas", 0) == wanted == int(on_fake_nodes(kubectl))
    # NOTES.txt shows the first agent, in the watched namespace.
    assert f"kubectl apply --namespace {agents} -f -" in release.notes
    assert "kind: AIAgent" in release.notes
    for allowed in (
        ["patch", "deployments.apps", "-n", agents],
        # The API key Secrets: read, and for a ModelConfig's key copied and watched for rotation.
        ["get", "secrets", "-n", agents],
        ["watch", "secrets", "-n", agents],
        ["create", "secrets", "-n", agents],
        ["list", "modelconfigs.aiagents.dev", "-n", agents],
        ["create", "networkpolicies.networking.k8s.io", "-n", agents],
        ["delete", "networkpolicies.networking.k8s.io", "-n", agents],
        ["create", "events.events.k8s.io", "-n", agents],
        ["list", "kopfpeerings.kopf.dev", "-n", agents],
    ):
        assert can_i(kubectl, release, *allowed), allowed
    for denied in (
        ["list", "secrets", "-n", release.namespace],  # Secrets only where agents are
        ["list", "secrets", "--all-namespaces"],
        ["patch", "modelconfigs.aiagents.dev", "-n", agents],  # read, never written
        ["create", "kopfpeerings.kopf.dev", "-n", agents],  # the chart creates it
        ["delete", "deployments.apps", "-n", agents],
        ["create", "pods", "-n", agents],
        ["patch", "deployments.apps", "-n", release.namespace],  # not a watched namespace
        ["list", "aiagents.aiagents.dev", "--all-namespaces"],
        ["list", "clusterkopfpeerings.kopf.dev"],
    ):
        assert not can_i(kubectl, release, *denied), denied


def test_example_becomes_ready_as_the_chart_service_account(
    kubectl: Kubectl, namespaced: tuple[Release, str], tmp_path: Path
) -> None:
    release, agents = namespaced
    watch = Watch(kubectl, agents, "support-bot", tmp_path)
    kubectl.apply(load_example("support-bot.yaml", replicas=2), namespace=agents)
    phase_of(kubectl, agents, "support-bot", "Ready", readyReplicas=2)
    created = watch.stop()
    pods = kubectl.list("pods", agents, "aiagents.dev/agent=support-bot")
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]  # restricted-admitted

    watch = Watch(kubectl, agents, "support-bot", tmp_path)
    kubectl.run("scale", "aiagent", "support-bot", "--replicas=4", namespace=agents)
    phase_of(kubectl, agents, "support-bot", "Ready", readyReplicas=4)
    scaled = watch.stop()

    # Argo CD sees Progressing until the agent is Ready for its current generation, then Healthy
    # (the scale's watch starts with the Ready agent as it was).
    assert runs([argocd_health(v)["status"] for v in created]) == ["Progressing", "Healthy"]
    assert runs([argocd_health(v)["status"] for v in scaled]) == [
        "Healthy",
        "Progressing",
        "Healthy",
    ]
    record("no-status", created[0])
    assert "status" not in created[0] or not created[0]["status"].get("phase")
    record("ready", scaled[-1])
    lagging = [v for v in scaled if v["status"]["observedGeneration"] < v["metadata"]["generation"]]
    assert lagging, "the scale bumps the generation before the operator applies it"
    record("progressing-generation", lagging[0])
    rolling = [v for v in scaled if v["status"]["phase"] == "Progressing"]
    assert rolling, "the operator reports the scale-up under way"
    # The most telling one: replicas counted (else the rollout not yet seen by its controller).
    rolling.sort(key=lambda v: "replicas" not in v["status"]["conditions"][0]["message"])
    record("progressing-scale-up", rolling[0])
    assert forbidden(release.operator) == []


def test_dapr_components_as_the_chart_service_account(
    kubectl: Kubectl, namespaced: tuple[Release, str]
) -> None:
    """The chart's Role covers what the operator does with Dapr Components: watch and read them,
    create and apply the declared ones, delete the dropped ones (Dapr's CRDs may arrive after
    the operator started, as here when this test runs alone)."""
    release, agents = namespaced
    install_dapr_crds(kubectl)
    manifest = load_example("dapr/helpdesk.yaml", replicas=1)
    kubectl.apply(manifest, namespace=agents)

    def components() -> dict[str, str]:
        items = kubectl.list("components.dapr.io", agents, "aiagents.dev/agent=helpdesk")
        return {c["metadata"]["name"]: c["metadata"]["ownerReferences"][0]["name"] for c in items}

    wait_for(
        "both Components created",
        lambda: components() == {"helpdesk-memory": "helpdesk", "helpdesk-bus": "helpdesk"},
        timeout=90,
    )
    phase_of(kubectl, agents, "helpdesk", "Ready", readyReplicas=1)
    del manifest["spec"]["dapr"]["pubsub"], manifest["spec"]["dapr"]["subscribe"]
    kubectl.apply(manifest, namespace=agents)
    wait_for("the pub/sub pruned", lambda: components() == {"helpdesk-memory": "helpdesk"})
    kubectl.run("delete", "aiagent", "helpdesk", namespace=agents)
    assert forbidden(release.operator) == []


def test_restricted_namespace_refuses_a_noncompliant_pod(
    kubectl: Kubectl, namespaced: tuple[Release, str]
) -> None:
    _, agents = namespaced
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted"},
        "spec": {
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            "tolerations": [KWOK_TOLERATION],
        },
    }
    result = kubectl.run(
        "apply", "-f", "-", input=yaml.safe_dump(pod), namespace=agents, check=False
    )
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr, result.stderr


REFUSED_LABEL = "example.com/refuse-me"


@contextlib.contextmanager
def deployments_refused_by_policy(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses, in `namespace`, Deployments whose pods carry
    REFUSED_LABEL: the API server's own refusal of a child, as a platform's policy makes it."""
    name = f"refuse-labelled-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"!has(object.spec.template.metadata.labels) || "
                    f"!('{REFUSED_LABEL}' in object.spec.template.metadata.labels)",
                    "message": f"pods labelled {REFUSED_LABEL} are not allowed here",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "policy-probe"},
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe", REFUSED_LABEL: "yes"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    kubectl.run("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    try:
        # A policy takes effect a moment after it is created: until a server-side dry run of a
        # labelled Deployment is refused, the agent's Deployment could still get through.
        wait_for(
            "the admission policy in force",
            lambda: kubectl.run(
                "create", "--dry-run=server", "-f", "-",
                input=yaml.safe_dump(probe), namespace=namespace, check=False,
            ).returncode != 0,
            timeout=60,
        )  # fmt: skip
        yield
    finally:
        kubectl.run(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
            "--ignore-not-found", check=False,
        )  # fmt: skip


def test_unhealthy_states_as_argocd_sees_them(
    kubectl: Kubectl, namespaced: tuple[Release, str]
) -> None:
    release, agents = namespaced
    cases = [
        # The API key Secret does not exist: Pending, and the operator waits for it.
        ("pending-secret-not-found", "Pending", "Progressing", "support-bot.yaml",
         {"model": {"name": "gpt-4o-mini", "apiKeySecretRef": {"name": "nope", "key": "k"}}}),
        # The ReplicaSet cannot create pods (no such ServiceAccount): Degraded, with the reason.
        ("degraded-replica-failure", "Degraded", "Degraded", "local-model-agent.yaml",
         {"serviceAccountName": "nobody"}),
        # The API server refuses the Deployment itself (a cluster policy forbids its pod
        # label; the CRD admits every label it could not render): Failed.
        ("failed-child-refused", "Failed", "Degraded", "local-model-agent.yaml",
         {"podLabels": {REFUSED_LABEL: "yes"}}),
    ]  # fmt: skip
    with deployments_refused_by_policy(kubectl, agents):
        for state, _, _, example, changes in cases:
            manifest = load_example(example, **changes)
            manifest["metadata"]["name"] = state
            kubectl.apply(manifest, namespace=agents)
        for state, phase, health, _, _ in cases:
            agent = phase_of(kubectl, agents, state, phase)
            ready = next(c for c in agent["status"]["conditions"] if c["type"] == "Ready")
            assert argocd_health(agent) == {"status": health, "message": ready["message"]}
            record(state, agent)
    assert (
        "not found" in argocd_health(phase_of(kubectl, agents, cases[0][0], "Pending"))["message"]
    )
    assert forbidden(release.operator) == []


def test_without_the_deployments_rule_the_operator_is_refused(
    kubectl: Kubectl, namespaced: tuple[Release, str]
) -> None:
    """The rules are not wider than needed: take one away and the operator fails on it."""
    release, agents = namespaced
    role = kubectl.get("role", release.fullname, agents)
    assert role is not None
    original = yaml.safe_dump({k: role[k] for k in ("apiVersion", "kind", "metadata", "rules")})
    role["rules"] = [r for r in role["rules"] if "deployments" not in r["resources"]]
    kubectl.run("replace", "-f", "-", input=yaml.safe_dump(role))
    try:
        kubectl.apply(load_example("research-crew.yaml"), namespace=agents)
        refusal = 'deployments.apps "research-crew" is forbidden'
        wait_for("the operator to be refused", lambda: refusal in release.operator.log_text())
        assert kubectl.get("deployment", "research-crew", agents) is None
        assert kubectl.get("configmap", "research-crew-agent", agents) is not None
    finally:
        role = yaml.safe_load(original)
        role["metadata"].pop("resourceVersion", None)
        kubectl.run("replace", "-f", "-", input=yaml.safe_dump(role))
    # With the rule back, the same manifest becomes Ready: the refusal was that rule and nothing
    # else. (Created anew, since the refused one waits out Kopf's retry backoff of a minute.)
    kubectl.run("delete", "aiagent", "research-crew", namespace=agents)
    wait_for(
        "the old children collected",
        lambda: kubectl.get("configmap", "research-crew-agent", agents) is None,
    )
    kubectl.apply(load_example("research-crew.yaml"), namespace=agents)
    phase_of(kubectl, agents, "research-crew", "Ready", readyReplicas=1)
    refusals = forbidden(release.operator)
    assert refusals and all("deployments.apps" in line for line in refusals), refusals
