"""Fixtures for the e2e suite: a real control plane, the CRDs, the operator, a namespace per test.

By default the control plane is the local one built from Go modules (localcluster/), with kwok's
fake nodes only (the real-node suite, tests/node, has its own cluster). Two
switches run the same tests elsewhere:
- AIAGENT_E2E_KUBECONFIG=path: an existing cluster (kind, k3d, Rancher Desktop, a real one); its
  nodes must be able to pull the runtime image the operator is configured with.
- AIAGENT_E2E_KIND=1: a fresh kind cluster through pytest-kind (`pip install pytest-kind`; needs
  Docker), with the runtime image built from Dockerfile.agent and loaded into it. Not runnable on
  machines without a container engine, such as the one this suite is developed on.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import LocalCluster
from localcluster.controlplane import LocalControlPlane
from localcluster.kubectl import REPO, Kubectl, OperatorProcess, wait_for


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster | None]:
    """The local control plane, or None where the suite runs on a cluster it was given."""
    if os.environ.get("AIAGENT_E2E_KUBECONFIG") or os.environ.get("AIAGENT_E2E_KIND"):
        yield None
        return
    workdir = tmp_path_factory.mktemp("controlplane")
    with LocalCluster(workdir, real_node=False) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster | None) -> Iterator[Path]:
    given = os.environ.get("AIAGENT_E2E_KUBECONFIG")
    if given:
        yield Path(given)
        return
    if os.environ.get("AIAGENT_E2E_KIND"):
        yield from kind_cluster()
        return
    assert local_cluster is not None
    yield Path(local_cluster.kubeconfig)


@pytest.fixture
def audit(local_cluster: LocalCluster | None) -> LocalControlPlane:
    """The local API server's audit log of write requests (only the local control plane has
    one we can read)."""
    if local_cluster is None:
        pytest.skip("counting requests needs the local control plane's audit log")
    return local_cluster.control_plane


KIND_IMAGE = "aiagent-operator/agent-runtime:e2e"


def kind_cluster() -> Iterator[Path]:
    import subprocess

    from pytest_kind import KindCluster  # optional: only this mode needs it

    subprocess.run(
        ["docker", "build", "-f", "Dockerfile.agent", "-t", KIND_IMAGE, "."], cwd=REPO, check=True
    )
    cluster = KindCluster("aiagent-e2e")
    cluster.create()
    cluster.load_docker_image(KIND_IMAGE)
    os.environ["AIAGENT_AGENT_IMAGE"] = KIND_IMAGE  # the operator processes inherit it
    try:
        yield Path(cluster.kubeconfig_path)
    finally:
        cluster.delete()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl.run("apply", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/aiagents.aiagents.dev")


@pytest.fixture(scope="session")
def operator(
    crds: None, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator for the session, watching the `e2e-*` namespaces. Standalone: the resilience
    tests start operators of their own in namespaces of their own."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(
        kubeconfig,
        log,
        standalone="true",
        watch_namespaces="e2e-*",
        component_retry_seconds="3",
    ).start()
    yield process
    process.stop()


DAPR_COMPONENTS_CRD = "components.dapr.io"


def dapr_crds_dir() -> Path:
    """Dapr's own CRDs, from the dapr module source at the pin (downloaded if missing)."""
    from localcluster.daprbuild import dapr_source

    return dapr_source() / "charts" / "dapr" / "crds"


def install_dapr_crds(kubectl: Kubectl) -> None:
    """What `helm install dapr` puts in first; no Dapr control plane runs (kwok nodes run no
    sidecar anyway), so Components exist as objects only."""
    if kubectl.get("crd", DAPR_COMPONENTS_CRD) is None:
        kubectl.run("apply", "-f", str(dapr_crds_dir()))
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/{DAPR_COMPONENTS_CRD}"
    )


def remove_dapr_crds(kubectl: Kubectl) -> None:
    """A cluster without Dapr (deleting the CRDs deletes every Component too)."""
    kubectl.run("delete", "-f", str(dapr_crds_dir()), "--ignore-not-found", "--wait=true")
    wait_for("Dapr's CRDs gone", lambda: kubectl.get("crd", DAPR_COMPONENTS_CRD) is None)


@pytest.fixture
def dapr_crds(kubectl: Kubectl) -> None:
    """Dapr's CRDs in the cluster (left there: later tests may use them too)."""
    install_dapr_crds(kubectl)


def create_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    wait_for(
        "the namespace's default ServiceAccount",
        lambda: kubectl.get("serviceaccount", "default", name),
    )
    return name


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace that the session operator watches."""
    name = create_namespace(kubectl, "e2e")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def isolated_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace the session operator does not watch, for tests that run their own."""
    name = create_namespace(kubectl, "iso")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def create_api_key_secrets(kubectl: Kubectl, namespace: str) -> None:
    """The Secrets the examples refer to (dummy keys: no test talks to a real provider)."""
    for secret in ("openai", "anthropic"):
        kubectl.run(
            "create",
            "secret",
            "generic",
            secret,
            "--from-literal=api-key=sk-e2e-not-a-real-key",
            namespace=namespace,
        )


@pytest.fixture
def api_key_secrets(kubectl: Kubectl, namespace: str) -> None:
    create_api_key_secrets(kubectl, namespace)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
