"""The operator's own /metrics, scraped from a running operator after it reconciled an AIAgent,
read with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from localcluster.kubectl import Kubectl, load_example, wait_for

from .conftest import create_api_key_secrets
from .test_operator_startup import get, start
from .test_resilience import wait_ready

pytestmark = pytest.mark.usefixtures("crds")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    status, text = get(f"{base}/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def test_metrics_of_a_running_operator(
    kubectl: Kubectl, kubeconfig: Path, isolated_namespace: str, tmp_path: Path
) -> None:
    ns = isolated_namespace
    create_api_key_secrets(kubectl, ns)
    operator, base = start(
        kubeconfig, tmp_path / "operator.log", standalone="true", watch_namespaces=ns
    )
    try:
        kubectl.apply(load_example("research-crew.yaml"), namespace=ns)
        wait_ready(kubectl, ns, "research-crew", 1)
        requests = "aiagent_operator_api_requests_total"
        samples = wait_for(
            "the status patches counted",
            lambda: (s := scrape(base)) and total(s, requests, resource="aiagents/status") and s,
        )
        # The operator's own client: its server-side applies and status patches.
        assert total(samples, requests, client="operator", verb="apply", resource="deployments")
        assert total(samples, requests, client="operator", verb="patch", code="200")
        assert total(samples, requests, client="operator", resource="aiagents/status")
        # Kopf's: its listings and watches of the AIAgents and the children.
        assert total(samples, requests, client="kopf", verb="list", resource="aiagents")
        assert total(samples, requests, client="kopf", verb="watch", resource="deployments")
        assert ("aiagent_operator_ready", frozenset()) in samples
        assert samples[("aiagent_operator_ready", frozenset())] == 1
        for queue in ("handlers", "status_reports"):
            key = ("aiagent_operator_queue_depth", frozenset({("queue", queue)}))
            assert key in samples, queue
        # What handlers.py reports: reconciles (metrics.reconciling) and the agents by phase
        # (metrics.watch_agents on the aiagents_by_name index).
        assert total(samples, "aiagent_operator_aiagents", phase="Ready") == 1
        assert total(samples, "aiagent_operator_reconciles_total", outcome="ok") >= 1
        assert total(samples, "aiagent_operator_reconcile_duration_seconds_count") >= 1
    finally:
        operator.stop()
