"""The operator itself as a pod: our operator image, installed by `helm install` of our chart,
reaching the apiserver through the `kubernetes` Service, reconciling an agent into real pods."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import yaml

from localcluster import LocalCluster
from localcluster.images import AGENT_IMAGE, OPERATOR_IMAGE
from localcluster.kubectl import REPO, Kubectl
from localcluster.model_server import ModelServer

from .conftest import (
    agent_pods,
    example,
    on_real_node,
    restricted_namespace,
    service_url,
    wait_ready,
)
from .test_agents import invoke

CHART = REPO / "charts" / "aiagent-operator"


def helm(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run(
        [str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def test_operator_pod_from_the_chart_reconciles_an_agent(
    cluster: LocalCluster, kubectl: Kubectl, model: ModelServer, tmp_path: Path
) -> None:
    system = restricted_namespace(kubectl, "node-system")
    # not node-*: the session operator ignores it
    team = restricted_namespace(kubectl, "team", cluster=cluster)
    repository, _, tag = OPERATOR_IMAGE.rpartition(":")
    agent_repository, _, agent_tag = AGENT_IMAGE.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "agentImage": {"repository": agent_repository, "tag": agent_tag},
        "watchNamespaces": [team],
        "logging": {"format": "json"},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    release = f"op-{uuid.uuid4().hex[:6]}"
    try:
        helm(
            cluster,
            "install",
            release,
            str(CHART),
            "-n",
            system,
            "-f",
            str(values_file),
            "--wait",
            "--timeout=180s",
        )
        pods = kubectl.list("pods", system, "app.kubernetes.io/name=aiagent-operator")
        assert pods and all(on_real_node(p) for p in pods), "the operator must run as a real pod"
        assert all(p["status"]["phase"] == "Running" for p in pods)

        kubectl.apply(example("support-bot.yaml", model, replicas=1), namespace=team)
        wait_ready(kubectl, team, "support-bot")
        assert all(on_real_node(p) for p in agent_pods(kubectl, team, "support-bot"))
        answer = invoke(service_url(kubectl, team, "support-bot"), "who runs you")
        assert "who runs you" in answer["output"]

        logs = kubectl.run("logs", pods[0]["metadata"]["name"], namespace=system).stdout
        assert "support-bot" in logs  # it was this pod that did the work
    finally:
        subprocess.run(
            [
                str(cluster.bin_dir / "helm"),
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                release,
                "-n",
                system,
            ],
            capture_output=True,
            timeout=120,
        )
        for ns in (team, system):
            kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
