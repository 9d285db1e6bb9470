"""Status is computed from the Deployment's own status, the Secret check and the spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aiagent_operator import api
from aiagent_operator.components import ComponentFact, Verdict
from aiagent_operator.reconcile import is_subset
from aiagent_operator.status import (
    Sidecar,
    compute_status,
    failed_status,
    sidecar_of,
    status_patch,
)

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


# -- DaprReady: the sidecar of every pod, and the Components the spec names.


def dapr_pod(
    name: str = "bot-1",
    injected: bool = True,
    daprd_ready: bool = True,
    native: bool = False,
    terminating: bool = False,
) -> dict[str, Any]:
    containers = [{"name": "agent"}]
    statuses = [{"name": "agent", "ready": True}]
    daprd = {"name": "daprd", "ready": daprd_ready}
    spec: dict[str, Any] = {"containers": containers}
    status: dict[str, Any] = {
        "containerStatuses": statuses,
        "conditions": [{"type": "Ready", "status": "True" if daprd_ready else "False"}],
    }
    if injected and native:  # dapr.io/enable-native-sidecar: an init container that keeps running
        spec["initContainers"] = [{"name": "daprd", "restartPolicy": "Always"}]
        status["initContainerStatuses"] = [daprd]
    elif injected:
        containers.append({"name": "daprd"})
        statuses.append(daprd)
    metadata: dict[str, Any] = {"name": name}
    if terminating:
        metadata["deletionTimestamp"] = NOW
    return {"metadata": metadata, "spec": spec, "status": status}


def dapr_condition(status: api.AIAgentStatus) -> api.Condition:
    (condition,) = [c for c in status.conditions if c.type == "DaprReady"]
    return condition


def dapr_status(agent: api.AIAgent, pods: list[dict[str, Any]], **kw: Any) -> api.AIAgentStatus:
    sidecars = [sidecar_of(p) for p in pods]
    return compute_status(agent, deployment(), sidecars=sidecars, now=NOW, **kw)


def test_sidecar_of() -> None:
    assert sidecar_of(dapr_pod()) == Sidecar("bot-1", True, True, True, False)
    assert sidecar_of(dapr_pod(native=True)) == Sidecar("bot-1", True, True, True, False)
    assert sidecar_of(dapr_pod(injected=False)) == Sidecar("bot-1", False, False, True, False)
    assert sidecar_of(dapr_pod(daprd_ready=False)) == Sidecar("bot-1", True, False, False, False)
    assert sidecar_of(dapr_pod(terminating=True)).terminating
    assert sidecar_of({"metadata": {"name": "p"}}) == Sidecar("p", False, False, False, False)


def test_dapr_ready_when_every_pod_has_a_ready_daprd(agent_factory: AgentFactory) -> None:
    status = dapr_status(agent_factory(), [dapr_pod("bot-1"), dapr_pod("bot-2", native=True)])
    condition = dapr_condition(status)
    assert (condition.status, condition.reason) == ("True", "SidecarsReady")
    assert condition.message == "daprd injected and ready in 2/2 pods"
    assert condition.observed_generation == 3 and condition.last_transition_time == NOW


@pytest.mark.parametrize(
    ("pods", "reason", "fragment"),
    [
        ([dapr_pod("bot-1"), dapr_pod("bot-2", injected=False)], "SidecarNotInjected",
         "1/2 pods run without a daprd container (pod bot-2): Dapr's sidecar injector is not "
         "installed or did not act on them"),
        ([dapr_pod("bot-1", daprd_ready=False), dapr_pod("bot-2")], "SidecarNotReady",
         "daprd is not ready in 1/2 pods (pod bot-1)"),
    ],
)  # fmt: skip
def test_dapr_not_ready_says_which_pod(
    agent_factory: AgentFactory, pods: list[dict[str, Any]], reason: str, fragment: str
) -> None:
    condition = dapr_condition(dapr_status(agent_factory(), pods))
    assert (condition.status, condition.reason) == ("False", reason)
    assert fragment in condition.message


def test_terminating_pods_and_no_pods(agent_factory: AgentFactory) -> None:
    old = dapr_pod("bot-0", injected=False, terminating=True)
    condition = dapr_condition(dapr_status(agent_factory(), [old, dapr_pod("bot-1")]))
    assert condition.reason == "SidecarsReady"  # a pod on its way out does not count
    condition = dapr_condition(dapr_status(agent_factory(), [old]))
    assert (condition.status, condition.reason) == ("Unknown", "NoPods")
    unknown = compute_status(agent_factory(), deployment(), now=NOW)  # nothing known of pods
    assert dapr_condition(unknown).status == "Unknown"


def test_dapr_ready_never_changes_the_phase(agent_factory: AgentFactory) -> None:
    status = dapr_status(agent_factory(), [dapr_pod(injected=False)])
    assert dapr_condition(status).status == "False"
    assert status.phase == "Ready" and ready_condition(status).status == "True"


def test_no_dapr_ready_condition_when_dapr_is_off(agent_factory: AgentFactory) -> None:
    agent = agent_factory(
        {"framework": "langchain", "model": {"name": "m"}, "dapr": {"enabled": False}}
    )
    assert [c.type for c in dapr_status(agent, [dapr_pod()]).conditions] == ["Ready"]


def fact(
    verdict: Verdict, field: str = "spec.dapr.stateStore", inline: bool = False
) -> ComponentFact:
    return ComponentFact(field=field, name="agent-memory", inline=inline, verdict=verdict)


@pytest.mark.parametrize(
    ("facts", "reason", "message"),
    [
        ([fact("Missing")], "ComponentMissing",
         "Component 'agent-memory' named by spec.dapr.stateStore does not exist in namespace "
         "team-a (create it, or set spec.dapr.stateStore.type)"),
        ([fact("NoDaprAPI", inline=True)], "DaprNotInstalled",
         "Component 'agent-memory' named by spec.dapr.stateStore cannot be created: the cluster "
         "has no components.dapr.io API (install Dapr, its CRDs and control plane)"),
        ([fact("Conflict", inline=True)], "ComponentConflict",
         "Component 'agent-memory' named by spec.dapr.stateStore already exists in namespace "
         "team-a and is not managed by this AIAgent: choose another spec.dapr.stateStore.name, "
         "or drop spec.dapr.stateStore.type to use that Component as it is"),
        # The most severe problem wins, whatever the field order.
        ([fact("Missing", "spec.dapr.pubsub"), fact("NoDaprAPI")], "DaprNotInstalled", ""),
        ([fact("Ok"), fact("Missing", "spec.dapr.pubsub")], "ComponentMissing",
         "named by spec.dapr.pubsub"),
    ],
)  # fmt: skip
def test_component_problems_come_before_the_sidecars(
    agent_factory: AgentFactory, facts: list[ComponentFact], reason: str, message: str
) -> None:
    status = dapr_status(agent_factory(), [dapr_pod()], components=facts)
    condition = dapr_condition(status)
    assert (condition.status, condition.reason) == ("False", reason)
    assert message in condition.message
    assert status.phase == "Ready"


def test_sidecar_refused_by_pod_security_says_which_dapr_setting(
    agent_factory: AgentFactory,
) -> None:
    refused = (
        'pods "bot-5d8-x" is forbidden: violates PodSecurity "restricted:latest": unrestricted '
        'capabilities (container "daprd" must set securityContext.capabilities.drop=["ALL"])'
    )
    failure = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate"}
    dep = deployment(ready=0, conditions=[{**failure, "message": refused}])
    status = compute_status(agent_factory(), dep, sidecars=[], now=NOW)
    hint = "dapr_sidecar_injector.sidecarDropALLCapabilities=true"
    assert status.phase == "Degraded"
    assert (
        ready_condition(status).message.startswith(refused)
        and hint in ready_condition(status).message
    )
    condition = dapr_condition(status)
    assert (condition.status, condition.reason) == ("False", "SidecarRefused")
    assert hint in condition.message
    other = {**failure, "message": 'pods "x" is forbidden: exceeded quota'}
    status = compute_status(agent_factory(), deployment(ready=0, conditions=[other]), now=NOW)
    assert hint not in ready_condition(status).message
    assert dapr_condition(status).reason == "NoPods"


def test_dapr_transition_time_and_failed_status_keep_dapr_ready(
    agent_factory: AgentFactory,
) -> None:
    first = compute_status(
        agent_factory(), deployment(), sidecars=[sidecar_of(dapr_pod(injected=False))],
        now="2026-01-01T00:00:00Z",
    )  # fmt: skip
    agent = agent_factory().model_copy(update={"status": first})
    again = compute_status(
        agent, deployment(), sidecars=[sidecar_of(dapr_pod("bot-2", injected=False))],
        now="2026-01-02T00:00:00Z",
    )  # fmt: skip
    assert dapr_condition(again).last_transition_time == "2026-01-01T00:00:00Z"
    failed = failed_status(agent, "ChildRefused", "Deployment support-bot: invalid")
    assert [c.type for c in failed.conditions] == ["Ready", "DaprReady"]
    assert dapr_condition(failed) == dapr_condition(first)
