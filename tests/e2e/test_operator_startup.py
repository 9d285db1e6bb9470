"""An operator that says what it is doing: started without its peering object it creates it,
falls back to standalone without the peering CRD, or says in one line what to do; and at rest
it writes no INFO lines."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster.kubectl import REPO, Kubectl, OperatorProcess, load_example, wait_for
from localcluster.procs import free_port

from .conftest import create_api_key_secrets
from .test_helm_install import CHART, helm_binary, service_account_kubeconfig
from .test_resilience import handled, wait_ready

pytestmark = pytest.mark.usefixtures("crds")

PEERING_CRDS = REPO / "crds" / "kopf.dev_peerings.yaml"
# A log line as Kopf formats it: "[2026-01-01 10:00:00,000] logger [LEVEL ] message".
LEVEL = re.compile(r"^\[[^]]*\] \S+\s+\[(\w+)\s*\]")


def start(kubeconfig: Path, log: Path, **settings: str) -> tuple[OperatorProcess, str]:
    """An operator with its metrics (and /readyz) on a port of its own; returns its base URL."""
    port = free_port()
    process = OperatorProcess(
        kubeconfig, log, metrics_endpoint=f"http://127.0.0.1:{port}/metrics", **settings
    ).start()
    return process, f"http://127.0.0.1:{port}"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def lines_at(operator: OperatorProcess, level: str) -> list[str]:
    return [
        line
        for line in operator.log_text().splitlines()
        if (m := LEVEL.match(line)) and m.group(1) == level
    ]


def test_creates_its_missing_peering_object_and_acts(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    assert kubectl.get("kopfpeering", "aiagent-operator", ns) is None
    operator, base = start(kubeconfig, tmp_path / "operator.log", watch_namespaces=ns)
    try:
        assert kubectl.get("kopfpeering", "aiagent-operator", ns) is not None
        assert "Created the KopfPeering 'aiagent-operator'" in operator.log_text()
        kubectl.apply(load_example("research-crew.yaml"), namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 1)
        assert handled(operator, ns, "research-crew")
        assert get(f"{base}/readyz")[0] == 200
        # The replica announced itself in the object it created (Kopf's keep-alive).
        wait_for(
            "the keep-alive in the peering",
            lambda: (kubectl.get("kopfpeering", "aiagent-operator", ns) or {}).get("status"),
        )
    finally:
        operator.stop()


@pytest.fixture
def no_peering_crds(kubectl: Kubectl) -> Iterator[None]:
    """A cluster without Kopf's peering CRDs (put back after: other tests meet in them)."""
    kubectl.run("delete", "-f", str(PEERING_CRDS), "--ignore-not-found", "--wait=true")
    wait_for("the peering CRDs gone", lambda: kubectl.get("crd", "kopfpeerings.kopf.dev") is None)
    try:
        yield
    finally:
        kubectl.run("apply", "-f", str(PEERING_CRDS))
        for crd in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
            kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")


def test_without_the_peering_crd_it_runs_standalone_with_one_warning(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    tmp_path: Path,
    no_peering_crds: None,
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    operator, base = start(kubeconfig, tmp_path / "operator.log", watch_namespaces=ns)
    try:
        kubectl.apply(load_example("research-crew.yaml"), namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 1)
        # (Kopf may warn once more, of Dapr's Components where Dapr's CRDs are not installed.)
        warnings = [w for w in lines_at(operator, "WARNING") if "dapr.io" not in w]
        assert len(warnings) == 1, warnings
        assert "kopfpeerings.kopf.dev is not installed: running standalone" in warnings[0]
        assert "kubectl apply -f crds/kopf.dev_peerings.yaml" in warnings[0]
        assert get(f"{base}/readyz")[0] == 200
    finally:
        operator.stop()


@pytest.fixture
def chart_account(kubectl: Kubectl, isolated_namespace: str, tmp_path: Path) -> Iterator[Path]:
    """The chart's ServiceAccount and cluster-mode RBAC (it may not create peering objects: the
    chart does), as a kubeconfig; the chart's peering object itself is not there."""
    release = f"st-{uuid.uuid4().hex[:6]}"
    rendered = subprocess.run(
        [helm_binary(), "template", release, str(CHART), "--namespace", isolated_namespace]
        + ["--show-only", "templates/rbac.yaml", "--show-only", "templates/serviceaccount.yaml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubectl.run("apply", "-f", "-", input=rendered, namespace=isolated_namespace)
    account = f"{release}-aiagent-operator"
    try:
        yield service_account_kubeconfig(kubectl, isolated_namespace, account, tmp_path)
    finally:
        for doc in yaml.safe_load_all(rendered):
            if doc and doc["kind"].startswith("Cluster"):
                kubectl.run("delete", doc["kind"], doc["metadata"]["name"], check=False)


def test_without_permission_it_says_what_to_do_and_is_not_ready(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    tmp_path: Path,
    chart_account: Path,
) -> None:
    """Cluster-wide (the README's manual run) with the chart's RBAC but no peering object: one
    line says what to do, /readyz says no, and nothing is reconciled until the object exists."""
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    name = f"e2e-missing-{uuid.uuid4().hex[:6]}"  # no such ClusterKopfPeering
    kubectl.apply(load_example("research-crew.yaml"), namespace=ns)
    operator, base = start(chart_account, tmp_path / "operator.log", peering_name=name)
    try:
        errors = lines_at(operator, "ERROR")
        assert len(errors) == 1, errors
        manifest = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
        manifest["metadata"] = {"name": name}
        command = f"echo '{json.dumps(manifest, separators=(',', ':'))}' | kubectl apply -f -"
        assert f"no ClusterKopfPeering {name!r}" in errors[0] and command in errors[0]
        assert "AIAGENT_STANDALONE=true" in errors[0]
        assert "is forbidden" in errors[0]  # RBAC refused the create, and it says so
        status, why = get(f"{base}/readyz")
        assert status == 503 and f"no ClusterKopfPeering {name!r}" in why
        _, scraped = get(f"{base}/metrics")
        assert "aiagent_operator_ready 0.0" in scraped
        time.sleep(5)
        assert kubectl.get("configmap", "research-crew-agent", ns) is None
        assert not handled(operator, ns, "research-crew")
        assert len(lines_at(operator, "ERROR")) == 1, "said once"
    finally:
        operator.stop()
        kubectl.run("delete", "aiagent", "research-crew", namespace=ns, check=False)
        kubectl.run("delete", "clusterkopfpeering", name, "--ignore-not-found", check=False)


def test_info_lines_at_rest(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    """Agents Ready and nothing changing: the operator writes no INFO line, however often it is
    probed and scraped."""
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    operator, base = start(
        kubeconfig, tmp_path / "operator.log", standalone="true", watch_namespaces=ns
    )
    try:
        kubectl.apply(load_example("research-crew.yaml", replicas=2), namespace=ns)
        kubectl.apply(load_example("autoscaled-agent.yaml"), namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 2)
        wait_ready(kubectl, ns, "autoscaled-agent", 1)
        time.sleep(3)  # the last status reports and their events
        before = len(operator.log_text().splitlines())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert operator.alive()  # Kopf's /healthz, as the liveness probe calls it
            assert get(f"{base}/readyz")[0] == 200
            assert get(f"{base}/metrics")[0] == 200
            time.sleep(2)
        at_rest = operator.log_text().splitlines()[before:]
        assert [line for line in at_rest if "[INFO" in line] == []
    finally:
        operator.stop()
