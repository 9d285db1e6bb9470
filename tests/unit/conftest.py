"""Fixtures for the unit tests: AIAgents built in memory, no cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiagent_operator import api
from aiagent_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml"))  # dapr/ too


def make_agent(spec: dict[str, Any] | None = None, **meta: Any) -> api.AIAgent:
    body = {
        "metadata": {
            "name": meta.get("name", "support-bot"),
            "namespace": meta.get("namespace", "team-a"),
            "uid": meta.get("uid", "0b9c1f7e-1111-2222-3333-444455556666"),
            "generation": meta.get("generation", 3),
        },
        "spec": spec
        or {
            "framework": "langchain",
            "model": {
                "name": "gpt-4o-mini",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
            "agent": {"instructions": "You answer questions about our product."},
        },
    }
    return api.AIAgent.from_body(body)


@pytest.fixture
def agent_factory() -> Callable[..., api.AIAgent]:
    return make_agent


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(agent_image="example.org/agent-runtime:test", peering_priority=1)


def load_example(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc
