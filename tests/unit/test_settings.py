"""Operator settings come from AIAGENT_* environment variables, with sane defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aiagent_operator.settings import DEFAULT_AGENT_IMAGE, OperatorSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIAGENT_AGENT_IMAGE", "AIAGENT_WATCH_NAMESPACES", "AIAGENT_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    settings = OperatorSettings()
    assert settings.agent_image == DEFAULT_AGENT_IMAGE
    assert settings.watch_namespaces == []
    assert settings.log_level == "INFO"
    assert settings.standalone is False


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAGENT_AGENT_IMAGE", "registry.example/runtime:2")
    monkeypatch.setenv("AIAGENT_WATCH_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("AIAGENT_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("AIAGENT_DEFAULT_MEMORY_LIMIT", "2Gi")
    monkeypatch.setenv("AIAGENT_PEERING_PRIORITY", "42")
    settings = OperatorSettings()
    assert settings.agent_image == "registry.example/runtime:2"
    assert settings.watch_namespaces == ["team-a", "team-b"]
    assert settings.log_level == "DEBUG"
    assert settings.default_memory_limit == "2Gi"
    assert settings.peering_priority == 42


def test_replicas_get_distinct_peering_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIAGENT_PEERING_PRIORITY", raising=False)
    # Kopf freezes every operator that sees a peer with the same priority.
    priorities = {OperatorSettings().peering_priority for _ in range(20)}
    assert len(priorities) > 1


def test_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIAGENT_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        OperatorSettings()


def test_metrics_and_network_policy_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIAGENT_METRICS_ENDPOINT", "AIAGENT_NETWORK_POLICY_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    settings = OperatorSettings()
    assert settings.metrics_endpoint == "http://0.0.0.0:9090/metrics"
    assert settings.network_policy_default is False  # the chart turns it on
    monkeypatch.setenv("AIAGENT_METRICS_ENDPOINT", "")
    monkeypatch.setenv("AIAGENT_NETWORK_POLICY_DEFAULT", "true")
    settings = OperatorSettings()
    assert settings.metrics_endpoint == "" and settings.network_policy_default is True
    # Kopf's liveness and the metrics cannot share a port (both would fail to bind).
    liveness = OperatorSettings.model_fields["liveness_endpoint"].default
    metrics = OperatorSettings.model_fields["metrics_endpoint"].default
    assert liveness.split(":")[2].split("/")[0] != metrics.split(":")[2].split("/")[0]
