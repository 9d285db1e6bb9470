"""A second writer: another field manager keeps setting a field the operator owns (the
Deployment's image). The operator restores it, with back-off: a bounded number of writes a
minute, no tight loop; a field it does not own (someone else's annotation) is never touched."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from localcluster.controlplane import LocalControlPlane
from localcluster.kubectl import Kubectl, OperatorProcess, load_example, wait_for

from .conftest import create_api_key_secrets
from .test_operator_metrics import scrape, total
from .test_resilience import operator_writes, wait_ready

pytestmark = pytest.mark.usefixtures("crds")

WRITER = "second-writer"
THEIR_IMAGE = "registry.example.com/someone-elses:1"
FIGHT_SECONDS = 60
MAX_RESTORES = 10


def image(kubectl: Kubectl, namespace: str) -> str:
    deployment = kubectl.get("deployment", "support-bot", namespace) or {}
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def restores_metric(operator: OperatorProcess) -> float:
    samples = scrape(f"http://127.0.0.1:{operator.metrics_port}")
    return total(samples, "aiagent_operator_drift_restores_total", kind="Deployment")


def test_a_second_writer_is_fought_with_back_off_and_others_fields_are_left_alone(
    kubectl: Kubectl,
    kubeconfig: Path,
    isolated_namespace: str,
    audit: LocalControlPlane,
    tmp_path: Path,
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    operator = OperatorProcess(
        kubeconfig, tmp_path / "operator.log", standalone="true", watch_namespaces=ns
    ).start()
    try:
        kubectl.apply(load_example("support-bot.yaml", dapr={"enabled": False}, replicas=1), ns)
        wait_ready(kubectl, ns, "support-bot", 1)
        ours = image(kubectl, ns)
        deployment = kubectl.get("deployment", "support-bot", ns) or {}
        container = deployment["spec"]["template"]["spec"]["containers"][0]["name"]

        # Someone else's annotation: not ours, so never a reason to write.
        _, offset = audit.audit_events()
        kubectl.run("annotate", "deployment", "support-bot", "example.com/team=x", namespace=ns)
        time.sleep(3)
        assert [w for w in operator_writes(audit, offset, ns) if "deployments/" in w] == []

        theirs = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "support-bot"},
            "spec": {
                "template": {"spec": {"containers": [{"name": container, "image": THEIR_IMAGE}]}}
            },
        }
        _, offset = audit.audit_events()
        started = time.monotonic()
        writes_by_them = 0
        while time.monotonic() - started < FIGHT_SECONDS:
            kubectl.run(
                "apply",
                "--server-side",
                f"--field-manager={WRITER}",
                "--force-conflicts",
                "-f",
                "-",
                input=yaml.safe_dump(theirs),
                namespace=ns,
            )
            writes_by_them += 1
            time.sleep(1)
        ours_in_fight = [
            w for w in operator_writes(audit, offset, ns) if w == "patch deployments/support-bot"
        ]
        # The writer stopped: the operator has the last word, within its current back-off.
        wait_for("our image back", lambda: image(kubectl, ns) == ours, timeout=90)
        restored_after_s = time.monotonic() - started - FIGHT_SECONDS

        print(
            "\n[second writer] "
            + json.dumps(
                {
                    "seconds": FIGHT_SECONDS,
                    "their_writes": writes_by_them,
                    "operator_restores": len(ours_in_fight),
                    "last_word_after_s": round(restored_after_s, 1),
                }
            )
        )
        assert 2 <= len(ours_in_fight) <= MAX_RESTORES, ours_in_fight
        assert restores_metric(operator) >= len(ours_in_fight)
        warnings = re.findall(
            rf"WARNING.*support-bot was changed again by field manager '{WRITER}'",
            operator.log_text(),
        )
        assert len(warnings) == 1, operator.log_tail()

        annotations = (kubectl.get("deployment", "support-bot", ns) or {})["metadata"][
            "annotations"
        ]
        assert annotations.get("example.com/team") == "x"
        live = kubectl.run(
            "get", "deployment", "support-bot", "-o", "json", "--show-managed-fields", namespace=ns
        ).stdout
        ours_fields = [
            json.dumps(m.get("fieldsV1"))
            for m in json.loads(live)["metadata"]["managedFields"]
            if m["manager"] == "aiagent-operator"
        ]
        assert not [f for f in ours_fields if "example.com/team" in f]
        assert operator.alive()
    finally:
        operator.stop()
