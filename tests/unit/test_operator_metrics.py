"""The operator's own metrics: what a request counts as, how a reconcile is classified, the
gauges read at scrape time, Kopf's requests counted, and the server for /metrics and /readyz."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiagent_operator import metrics
from aiagent_operator.kube import KubeError


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("method", "url", "content_type", "expected"),
    [
        ("GET", "/apis/apps/v1/namespaces/a/deployments/x", "", ("get", "deployments")),
        ("GET", "/api/v1/namespaces/a/pods?labelSelector=x%3Dy", "", ("list", "pods")),
        ("GET", "/apis/aiagents.dev/v1alpha1/aiagents?watch=true", "", ("watch", "aiagents")),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/x",
            "application/apply-patch+yaml",
            ("apply", "deployments"),
        ),
        (
            "patch",
            "https://h:6443/apis/aiagents.dev/v1alpha1/namespaces/a/aiagents/x/status",
            "application/merge-patch+json",
            ("patch", "aiagents/status"),
        ),
        ("POST", "/api/v1/namespaces/a/events", "", ("create", "events")),
        (
            "DELETE",
            "/apis/autoscaling/v2/namespaces/a/horizontalpodautoscalers/x",
            "",
            ("delete", "horizontalpodautoscalers"),
        ),
        ("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/p", "", ("patch", "clusterkopfpeerings")),
        ("GET", "/api/v1/namespaces", "", ("list", "namespaces")),
        ("GET", "/api/v1/namespaces/a", "", ("get", "namespaces")),
        ("GET", "/apis/kopf.dev/v1", "", ("get", "discovery")),
        ("GET", "/version", "", ("get", "discovery")),
    ],
)
def test_request_info(method: str, url: str, content_type: str, expected: tuple[str, str]) -> None:
    assert metrics.request_info(method, url, content_type) == expected


def test_reconciles_are_counted_by_outcome_and_errors_by_reason() -> None:
    before = {o: value("aiagent_operator_reconciles_total", outcome=o) for o in metrics.OUTCOMES}
    count = value("aiagent_operator_reconcile_duration_seconds_count")
    with metrics.reconciling():
        pass
    for raised in (
        kopf.TemporaryError("wait", delay=1),
        kopf.PermanentError("refused"),
        KubeError(500, "Internal", "boom"),
    ):
        with pytest.raises(type(raised)), metrics.reconciling():
            raise raised
    for outcome in metrics.OUTCOMES:
        assert value("aiagent_operator_reconciles_total", outcome=outcome) == before[outcome] + 1
    assert value("aiagent_operator_reconcile_duration_seconds_count") == count + 4
    assert value("aiagent_operator_errors_total", reason="KubeError 500") >= 1


def test_a_kopf_error_counts_the_error_it_replaced() -> None:
    class SecretNotReady(Exception):
        pass

    before = value("aiagent_operator_errors_total", reason="SecretNotReady")
    with pytest.raises(kopf.TemporaryError), metrics.reconciling():
        try:
            raise SecretNotReady("no Secret")
        except SecretNotReady as exc:
            raise kopf.TemporaryError(str(exc), delay=3) from None
    assert value("aiagent_operator_errors_total", reason="SecretNotReady") == before + 1
    assert metrics.reason_of(KubeError(0, "Unreachable", "x")) == "KubeError unreachable"


def test_reconciles_own_errors_are_classified_by_name() -> None:
    """metrics.py names reconcile's exceptions rather than importing them: a rename shows here."""
    from aiagent_operator import reconcile

    assert metrics.RETRY_ERRORS - {"TemporaryError"} <= set(dir(reconcile))
    assert metrics.REFUSED_ERRORS - {"PermanentError"} <= set(dir(reconcile))
    assert metrics.outcome_of(reconcile.ChildRefused("x")) == "refused"
    assert metrics.outcome_of(reconcile.SecretNotReady("x")) == "retry"


def test_reconciled_and_error_for_callers_that_classify() -> None:
    before = value("aiagent_operator_reconciles_total", outcome="retry")
    metrics.reconciled("retry", 0.2)
    metrics.reconciled("nonsense", 0.2)  # anything else is an error
    assert value("aiagent_operator_reconciles_total", outcome="retry") == before + 1
    metrics.error("report_failed")
    assert value("aiagent_operator_errors_total", reason="report_failed") >= 1


def test_queue_depth_and_agents_by_phase_are_read_when_scraped() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()
    futures = [executor.submit(gate.wait) for _ in range(4)]  # one runs, three wait
    reports_due = {("a", "x"): None, ("a", "y"): None}
    ready = SimpleNamespace(status=SimpleNamespace(phase="Ready"))
    agents = {("a", "x"): [ready], ("a", "y"): [ready], ("a", "z"): [SimpleNamespace()]}
    try:
        metrics.watch_queue(executor, reports_due)
        metrics.watch_agents(agents)
        assert value("aiagent_operator_queue_depth", queue="handlers") == 3
        assert value("aiagent_operator_queue_depth", queue="status_reports") == 2
        assert value("aiagent_operator_aiagents", phase="Ready") == 2
        assert value("aiagent_operator_aiagents", phase="Unknown") == 1
        assert value("aiagent_operator_aiagents", phase="Failed") == 0
    finally:
        gate.set()
        for future in futures:
            future.result()
        executor.shutdown()
        metrics.watch_queue(None, None)
        metrics._watched.agents = None


def test_kopf_requests_are_counted_with_their_final_answer() -> None:
    class NotFound(Exception):
        status = 404

    async def request(method: str, url: str, **kwargs: Any) -> Any:
        if url.endswith("/missing"):
            raise NotFound()
        return SimpleNamespace(status=200)

    module = SimpleNamespace(request=request)
    metrics.instrument_kopf(module)
    metrics.instrument_kopf(module)  # twice: still counted once
    labels = {"client": "kopf", "verb": "get", "resource": "configmaps"}
    before = {
        code: value("aiagent_operator_api_requests_total", **labels, code=code)
        for code in ("200", "404")
    }
    base = "/api/v1/namespaces/a/configmaps"
    asyncio.run(module.request("get", f"{base}/here", settings=None))
    with pytest.raises(NotFound):
        asyncio.run(module.request("get", f"{base}/missing", settings=None))
    for code in ("200", "404"):
        assert value("aiagent_operator_api_requests_total", **labels, code=code) == before[code] + 1


def test_the_real_kopf_client_is_instrumented() -> None:
    from kopf._cogs.clients import api as kopf_api

    metrics.instrument_kopf()
    assert getattr(kopf_api.request, "_counted", False)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_server_serves_metrics_and_readiness() -> None:
    state = {"ready": (False, "no peering object: do this")}
    server = metrics.MetricsServer("http://127.0.0.1:0/metrics", lambda: state["ready"])
    assert server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, content_type, text = get(f"{base}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"aiagent_operator_reconciles", "aiagent_operator_api_requests"} <= names
        assert get(f"{base}/readyz")[::2] == (503, "no peering object: do this\n")
        state["ready"] = (True, "peering ok")
        assert get(f"{base}/readyz")[::2] == (200, "peering ok\n")
        assert get(f"{base}/other")[0] == 404
    finally:
        server.stop()


def test_a_taken_port_turns_metrics_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = metrics.MetricsServer(f"http://127.0.0.1:{port}/metrics", lambda: (True, "ok"))
        with caplog.at_level(logging.WARNING, logger="aiagent_operator.metrics"):
            assert not server.start()
    assert len(caplog.records) == 1 and "Metrics are off" in caplog.records[0].getMessage()


def test_only_http_is_served() -> None:
    with pytest.raises(ValueError, match="only http://"):
        metrics.MetricsServer("https://0.0.0.0:9090/metrics", lambda: (True, "ok"))


def test_drift_restores_are_counted_by_kind() -> None:
    before = value("aiagent_operator_drift_restores_total", kind="Deployment")
    metrics.drift_restored("Deployment")
    assert value("aiagent_operator_drift_restores_total", kind="Deployment") == before + 1
