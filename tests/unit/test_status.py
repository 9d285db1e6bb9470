"""Status is computed from the Deployment's own status, the Secret check and the spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aiagent_operator import api
from aiagent_operator.reconcile import is_subset
from aiagent_operator.status import compute_status, failed_status, status_patch

AgentFactory = Callable[..., api.AIAgent]
NOW = "2026-11-23T12:00:00Z"


def deployment(
    wanted: int = 2,
    ready: int = 2,
    updated: int | None = None,
    generation: int = 4,
    observed: int = 4,
    conditions: list[dict[str, Any]] | None = None,
    agent_generation: str = "3",
) -> dict[str, Any]:
    return {
        "metadata": {
            "generation": generation,
            "annotations": {"aiagents.dev/generation": agent_generation},
        },
        "spec": {"replicas": wanted},
        "status": {
            "observedGeneration": observed,
            "replicas": max(wanted, ready),
            "readyReplicas": ready,
            "updatedReplicas": wanted if updated is None else updated,
            "conditions": conditions or [],
        },
    }


def ready_condition(status: api.AIAgentStatus) -> api.Condition:
    (condition,) = [c for c in status.conditions if c.type == "Ready"]
    return condition


def test_ready(agent_factory: AgentFactory) -> None:
    status = compute_status(agent_factory(), deployment(), now=NOW)
    assert status.phase == "Ready"
    assert (status.replicas, status.ready_replicas) == (2, 2)
    assert status.observed_generation == 3
    assert status.selector == "aiagents.dev/agent=support-bot"
    assert status.endpoint == "http://support-bot.team-a.svc.cluster.local"
    condition = ready_condition(status)
    assert (condition.status, condition.reason, condition.observed_generation) == (
        "True",
        "AllReplicasReady",
        3,
    )
    assert condition.last_transition_time == NOW


def test_endpoint_includes_non_default_port_and_domain(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        {"framework": "crewai", "model": {"name": "m"}, "service": {"port": 8080}}
    )
    status = compute_status(agent, deployment(), cluster_domain="corp.local")
    assert status.endpoint == "http://support-bot.team-a.svc.corp.local:8080"


@pytest.mark.parametrize(
    ("dep", "phase", "ready", "reason"),
    [
        (None, "Progressing", "False", "DeploymentNotFound"),
        (deployment(ready=1), "Progressing", "False", "ReplicasNotReady"),
        (deployment(ready=0), "Progressing", "False", "ReplicasNotReady"),
        (deployment(updated=1), "Progressing", "False", "RollingOut"),
        (deployment(generation=5, observed=4), "Progressing", "False", "RollingOut"),
        (deployment(wanted=0, ready=0), "Ready", "True", "ScaledToZero"),
        (
            deployment(
                ready=0,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "took too long",
                    }
                ],
            ),
            "Degraded",
            "False",
            "ProgressDeadlineExceeded",
        ),
        (
            deployment(
                ready=0,
                conditions=[
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": "quota exceeded",
                    }
                ],
            ),
            "Degraded",
            "False",
            "FailedCreate",
        ),
    ],
)
def test_phases(
    agent_factory: AgentFactory, dep: dict[str, Any] | None, phase: str, ready: str, reason: str
) -> None:
    status = compute_status(agent_factory(), dep, now=NOW)
    condition = ready_condition(status)
    assert (status.phase, condition.status, condition.reason) == (phase, ready, reason)
    assert condition.message


def test_missing_secret_wins_over_ready_pods(agent_factory: AgentFactory) -> None:
    problem = "Secret 'openai' (spec.model.apiKeySecretRef) not found in namespace team-a"
    status = compute_status(agent_factory(), deployment(), secret_problem=problem)
    condition = ready_condition(status)
    assert status.phase == "Pending"
    assert (condition.status, condition.reason) == ("False", "SecretNotFound")
    assert "'openai'" in condition.message


def test_transition_time_moves_only_on_flip(agent_factory: AgentFactory) -> None:
    first = compute_status(agent_factory(), deployment(ready=1), now="2026-01-01T00:00:00Z")
    agent = agent_factory().model_copy(update={"status": first})
    still_not_ready = compute_status(agent, deployment(ready=0), now="2026-01-02T00:00:00Z")
    assert ready_condition(still_not_ready).last_transition_time == "2026-01-01T00:00:00Z"
    now_ready = compute_status(agent, deployment(), now="2026-01-03T00:00:00Z")
    assert ready_condition(now_ready).last_transition_time == "2026-01-03T00:00:00Z"


def test_status_patch_is_none_when_nothing_changed(agent_factory: AgentFactory) -> None:
    status = compute_status(agent_factory(), deployment(), now=NOW)
    agent = agent_factory().model_copy(update={"status": status})
    assert (
        status_patch(agent.status, compute_status(agent, deployment(), now="2027-01-01T00:00:00Z"))
        is None
    )
    patch = status_patch(agent.status, compute_status(agent, deployment(ready=1)))
    assert patch is not None and patch["readyReplicas"] == 1 and patch["phase"] == "Progressing"


def test_status_patch_nulls_vanished_fields() -> None:
    old = api.AIAgentStatus(phase="Ready", endpoint="http://x")
    new = api.AIAgentStatus(phase="Failed")
    assert status_patch(old, new) == {"phase": "Failed", "endpoint": None}


def test_failed_status_keeps_observed_fields(agent_factory: AgentFactory) -> None:
    ready = compute_status(agent_factory(), deployment(), now=NOW)
    agent = agent_factory().model_copy(update={"status": ready})
    failed = failed_status(agent, "ChildRefused", "Deployment support-bot: spec.template: invalid")
    assert failed.phase == "Failed" and failed.ready_replicas == 2
    assert ready_condition(failed).reason == "ChildRefused"
    assert failed.observed_generation == agent.generation


@pytest.mark.parametrize(
    ("desired", "actual", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "x", "d": 0}]}}, True),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": "1"}, {"a": 1}, True),  # quantities come back as numbers or strings
        ({"labels": {"k": "v"}}, {"labels": {}}, False),
    ],
)
def test_is_subset(desired: Any, actual: Any, expected: bool) -> None:
    assert is_subset(desired, actual) is expected


def crashing_pod(name: str = "bot-7d9f-abcde", reason: str = "CrashLoopBackOff") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "containerStatuses": [
                {
                    "name": "agent",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": reason, "message": "back-off 40s"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 1,
                            "message": "aiagent: cannot build the agent:\n"
                            "  No module named 'crewai'",
                        }
                    },
                }
            ]
        },
    }


def test_a_crash_looping_pod_fails_the_agent_with_what_it_said(agent_factory: AgentFactory) -> None:
    status = compute_status(
        agent_factory(), deployment(wanted=1, ready=0), pods=[crashing_pod()], now=NOW
    )
    assert status.phase == "Failed"
    ready = status.conditions[0]
    assert ready.reason == "CrashLoopBackOff"
    assert ready.message == (
        "pod bot-7d9f-abcde: container agent CrashLoopBackOff (exit code 1, restarted 3 times): "
        "aiagent: cannot build the agent: No module named 'crewai'"
    )


def test_some_replicas_serving_while_one_crashes_is_degraded(agent_factory: AgentFactory) -> None:
    status = compute_status(
        agent_factory(), deployment(wanted=3, ready=2), pods=[crashing_pod()], now=NOW
    )
    assert (status.phase, status.conditions[0].reason) == ("Degraded", "CrashLoopBackOff")


def test_pods_starting_normally_are_not_a_problem(agent_factory: AgentFactory) -> None:
    starting = crashing_pod(reason="ContainerCreating")
    status = compute_status(
        agent_factory(), deployment(wanted=1, ready=0), pods=[starting], now=NOW
    )
    assert (status.phase, status.conditions[0].reason) == ("Progressing", "ReplicasNotReady")


def test_an_unpullable_image_says_so(agent_factory: AgentFactory) -> None:
    pod = crashing_pod(reason="ErrImageNeverPull")
    pod["status"]["containerStatuses"][0]["lastState"] = {}
    pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = "image not present"
    status = compute_status(agent_factory(), deployment(wanted=1, ready=0), pods=[pod], now=NOW)
    assert status.conditions[0].message == (
        "pod bot-7d9f-abcde: container agent ErrImageNeverPull: image not present"
    )
