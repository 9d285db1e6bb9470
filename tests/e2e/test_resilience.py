"""The operator survives being killed, and two replicas never both act (Kopf peering)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from aiagent_operator import api, reconcile
from aiagent_operator.kube import USER_AGENT, Kube
from aiagent_operator.settings import OperatorSettings
from localcluster.controlplane import LocalControlPlane
from localcluster.kubectl import Kubectl, OperatorProcess, load_example, wait_for

from .conftest import create_api_key_secrets

pytestmark = pytest.mark.usefixtures("crds")


def wait_ready(
    kubectl: Kubectl, namespace: str, name: str, replicas: int, timeout: float = 90
) -> None:
    wait_for(
        f"{name} Ready with {replicas} replicas",
        lambda: (
            (a := kubectl.get("aiagent", name, namespace))
            and a.get("status", {}).get("phase") == "Ready"
            and a["status"].get("readyReplicas") == replicas
            and a["status"].get("observedGeneration") == a["metadata"]["generation"]
        ),
        timeout=timeout,
    )


def handled(operator: OperatorProcess, namespace: str, name: str) -> bool:
    """Whether this operator's reconcile handler ran for the object (Kopf logs each success)."""
    pattern = rf"\[{re.escape(namespace)}/{re.escape(name)}\] Handler 'reconcile_aiagent' succeeded"
    return re.search(pattern, operator.log_text()) is not None


def test_killed_mid_reconcile_converges_without_duplicates(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    first = OperatorProcess(
        kubeconfig, tmp_path / "first.log", standalone="true", watch_namespaces=ns
    ).start()
    try:
        kubectl.apply(load_example("support-bot.yaml", replicas=3), namespace=ns)
        # Kill it hard as soon as it has started on the object: nothing gets to clean up.
        wait_for(
            "the operator to start on the AIAgent",
            lambda: kubectl.get("configmap", "support-bot-agent", ns),
            interval=0.05,
        )
    finally:
        first.stop(signal.SIGKILL)

    second = OperatorProcess(
        kubeconfig, tmp_path / "second.log", standalone="true", watch_namespaces=ns
    ).start()
    try:
        wait_ready(kubectl, ns, "support-bot", 3)
        assert len(kubectl.list("deployments", ns)) == 1
        assert len(kubectl.list("services", ns)) == 1
        assert (
            len(
                [
                    c
                    for c in kubectl.list("configmaps", ns)
                    if c["metadata"]["name"].startswith("support-bot")
                ]
            )
            == 1
        )
        assert len(kubectl.list("replicasets", ns, "aiagents.dev/agent=support-bot")) == 1
        assert len(kubectl.list("pods", ns, "aiagents.dev/agent=support-bot")) == 3
    finally:
        second.stop()


def test_two_replicas_with_peering_only_one_acts(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    # Namespaced operators meet in a KopfPeering of their namespace (the chart creates it).
    kubectl.apply(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "aiagent-operator"},
        },
        namespace=ns,
    )
    low = OperatorProcess(
        kubeconfig, tmp_path / "low.log", watch_namespaces=ns, peering_priority="100"
    ).start()
    high = OperatorProcess(
        kubeconfig, tmp_path / "high.log", watch_namespaces=ns, peering_priority="200"
    ).start()
    try:
        wait_for(
            "the low-priority replica to pause",
            lambda: "Pausing operations" in low.log_text() or "paused" in low.log_text().lower(),
            timeout=30,
        )
        kubectl.apply(load_example("research-crew.yaml"), namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 1)
        assert handled(high, ns, "research-crew")
        time.sleep(2)  # give a misbehaving standby the chance to act too
        assert not handled(low, ns, "research-crew"), "the paused replica reconciled as well"

        # The active replica leaves (a rolling update, a node drain): the standby takes over.
        high.stop()
        kubectl.run("scale", "aiagent", "research-crew", "--replicas=2", namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 2, timeout=120)
        assert handled(low, ns, "research-crew")
    finally:
        high.stop()
        low.stop()


def test_reconcile_in_a_namespace_being_deleted_is_quiet(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str
) -> None:
    """An operator watching many namespaces can act on an agent whose namespace was deleted a
    moment ago (its event predates the deletion). The API server then refuses every create; that
    is no failure to retry or report, or each dying namespace would log tracebacks for a minute."""
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    kubectl.apply(load_example("support-bot.yaml"), namespace=ns)
    stale = api.AIAgent.from_body(kubectl.get("aiagent", "support-bot", ns))
    # A finalizer of ours holds the namespace in Terminating once its content is gone.
    hold = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hold", "finalizers": ["e2e.aiagents.dev/hold"]},
    }
    kubectl.apply(hold, namespace=ns)
    kubectl.run("delete", "namespace", ns, "--wait=false")
    try:
        wait_for(
            "the agent deleted with its namespace",
            lambda: not kubectl.get("aiagent", "support-bot", ns),
        )
        reconcile.reconcile_agent(stale, Kube.from_kubeconfig(kubeconfig), OperatorSettings())

        assert kubectl.get("deployment", "support-bot", ns) is None
    finally:
        kubectl.run(
            "patch",
            "configmap",
            "hold",
            "--type=merge",
            "-p",
            json.dumps({"metadata": {"finalizers": None}}),
            namespace=ns,
        )


def operator_writes(audit: LocalControlPlane, offset: int, namespace: str) -> list[str]:
    """The write requests our operator (its own client, or Kopf's) made in `namespace` since
    `offset` of the audit log, as "verb resource/name" lines."""
    events, _ = audit.audit_events(offset)
    return [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
        + (f"/{e['objectRef']['subresource']}" if e["objectRef"].get("subresource") else "")
        for e in events
        if e.get("userAgent", "").startswith((USER_AGENT, "kopf/"))
        and e.get("objectRef", {}).get("namespace") == namespace
    ]


def agents_of_a_killed_operator(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, tmp_path: Path
) -> list[str]:
    """Two healthy agents (Deployment, Service, ConfigMap; one with an HPA), made Ready by an
    operator that is then killed with SIGKILL."""
    first = OperatorProcess(
        kubeconfig, tmp_path / "first.log", standalone="true", watch_namespaces=namespace
    ).start()
    try:
        create_api_key_secrets(kubectl, namespace)
        kubectl.apply(
            load_example("support-bot.yaml", dapr={"enabled": False}), namespace=namespace
        )
        kubectl.apply(load_example("autoscaled-agent.yaml"), namespace=namespace)
        wait_ready(kubectl, namespace, "support-bot", 2)
        wait_ready(kubectl, namespace, "autoscaled-agent", 1)
    finally:
        first.stop(signal.SIGKILL)
    return ["support-bot", "autoscaled-agent"]


def test_the_operator_writes_nothing_to_an_aiagent_but_its_status(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    audit: LocalControlPlane,
    tmp_path: Path,
) -> None:
    """What Kopf last handled stays in the operator's memory, not in an annotation that would
    cost a write (and one more watch event) per change."""
    ns = isolated_namespace
    _, offset = audit.audit_events()
    names = agents_of_a_killed_operator(kubectl, kubeconfig, ns, tmp_path)
    writes = operator_writes(audit, offset, ns)
    on_agents = [w for w in writes if w.split()[1].startswith("aiagents/")]
    assert on_agents and all(w.endswith("/status") for w in on_agents), on_agents
    for name in names:
        annotations = kubectl.get("aiagent", name, ns)["metadata"].get("annotations") or {}
        assert not [key for key in annotations if key.startswith("aiagents.dev/")], annotations


def test_restart_with_nothing_changed_makes_no_writes(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    audit: LocalControlPlane,
    tmp_path: Path,
) -> None:
    ns = isolated_namespace
    names = agents_of_a_killed_operator(kubectl, kubeconfig, ns, tmp_path)
    _, offset = audit.audit_events()
    second = OperatorProcess(
        kubeconfig, tmp_path / "second.log", standalone="true", watch_namespaces=ns
    ).start()
    try:
        for name in names:
            wait_for(f"{name} resumed", lambda name=name: handled(second, ns, name))
        # The children's first events (status refreshes) follow the resume: give them a moment.
        time.sleep(3)
        assert operator_writes(audit, offset, ns) == []
    finally:
        second.stop()


def test_a_spec_changed_while_the_operator_was_down_is_applied_and_nothing_else(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    audit: LocalControlPlane,
    tmp_path: Path,
) -> None:
    ns = isolated_namespace
    agents_of_a_killed_operator(kubectl, kubeconfig, ns, tmp_path)
    _, offset = audit.audit_events()
    kubectl.run(
        "patch",
        "aiagent",
        "support-bot",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"replicas": 3}}),
    )
    second = OperatorProcess(
        kubeconfig, tmp_path / "second.log", standalone="true", watch_namespaces=ns
    ).start()
    try:
        wait_ready(kubectl, ns, "support-bot", 3)
        wait_for("autoscaled-agent resumed", lambda: handled(second, ns, "autoscaled-agent"))
        time.sleep(3)
        writes = operator_writes(audit, offset, ns)
        assert "patch deployments/support-bot" in writes
        assert not [w for w in writes if "autoscaled-agent" in w], writes
    finally:
        second.stop()
