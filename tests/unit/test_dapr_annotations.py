"""Every `dapr.io/*` annotation the operator can put on a pod is one Dapr's sidecar injector knows:
the list is parsed from the injector's own source, at the Dapr version the project pins (an
annotation Dapr does not know is silently ignored, which is how a misspelt one goes unnoticed)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

from aiagent_operator import api, render
from localcluster.daprbuild import dapr_source, dapr_version

AgentFactory = Callable[..., api.AIAgent]

ANNOTATIONS_GO = "pkg/injector/annotations/annotations.go"
CONSTANT = re.compile(r'^\s*Key\w+\s*=\s*"(dapr\.io/[^"]+)"', re.MULTILINE)


@functools.cache
def known_annotations() -> frozenset[str]:
    """The injector's annotation keys (`Key... = "dapr.io/..."`); downloads the dapr module
    into the Go module cache on a fresh machine."""
    source: Path = dapr_source() / ANNOTATIONS_GO
    found = frozenset(CONSTANT.findall(source.read_text()))
    assert len(found) > 40, f"too few annotation constants in {source}: the file changed shape?"
    return found


def every_annotation(agent_factory: AgentFactory) -> dict[str, str]:
    """The annotations of an agent that sets every Dapr option the spec has."""
    dapr = {
        "appId": "support",
        "config": "tracing",
        "logLevel": "debug",
        "enableMetrics": False,
        "sidecar": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "stateStore": {"name": "agent-memory", "type": "state.redis"},
        "pubsub": {"name": "bus"},
        "subscribe": {"topic": "questions"},
    }
    agent = agent_factory({"framework": "langchain", "model": {"name": "m"}, "dapr": dapr})
    return render.dapr_annotations(agent)


def test_the_pinned_dapr_is_the_one_parsed() -> None:
    assert dapr_version() == "v1.18.2"
    assert "dapr.io/app-id" in known_annotations()


def test_every_dapr_annotation_is_known_to_the_injector(agent_factory: AgentFactory) -> None:
    annotations = every_annotation(agent_factory)
    ours = {key for key in annotations if key.startswith("dapr.io/")}
    assert len(ours) == 16  # every option set, so every annotation the operator can write
    assert ours - known_annotations() == set()


def test_annotation_values_are_the_ones_the_injector_parses(agent_factory: AgentFactory) -> None:
    annotations = every_annotation(agent_factory)
    assert annotations["dapr.io/app-port"] == str(render.HTTP_PORT)
    assert annotations["dapr.io/app-protocol"] == "http"
    assert annotations["dapr.io/sidecar-seccomp-profile-type"] == "RuntimeDefault"
    for flag in ("dapr.io/enabled", "dapr.io/enable-metrics", "dapr.io/enable-app-health-check"):
        assert annotations[flag] in ("true", "false")
