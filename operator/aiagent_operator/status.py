"""Pure computation of an AIAgent's status from what its children report. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from . import api
from .render import GENERATION_ANNOTATION, selector_labels

READY = "Ready"


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def endpoint(agent: api.AIAgent, cluster_domain: str) -> str:
    port = agent.spec.service.port
    suffix = "" if port == 80 else f":{port}"
    return f"http://{agent.name}.{agent.namespace}.svc.{cluster_domain}{suffix}"


def _deployment_condition(deployment: dict[str, Any], type_: str) -> dict[str, Any]:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return {}


# Container states that do not fix themselves: the image, the config or the agent itself is wrong.
STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def pod_problem(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for the first of the agent's pods whose container is stuck, or None.

    The message names the pod and says what happened last (exit code and the container's last
    words, which the Deployment sets to come from its log when it fails), so a person can act.
    """
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason not in STUCK_REASONS:
                continue
            message = f"pod {pod['metadata']['name']}: container {container['name']} {reason}"
            last = (container.get("lastState") or {}).get("terminated") or {}
            if last:
                message += f" (exit code {last.get('exitCode')}"
                message += f", restarted {container.get('restartCount', 0)} times)"
                words = " ".join(str(last.get("message") or "").split())
                if words:
                    message += f": {words[-300:]}"
            elif waiting.get("message"):
                message += f": {waiting['message'][-300:]}"
            return reason, message
    return None


def _assess(
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    secret_problem: str | None,
    stuck: tuple[str, str] | None = None,
) -> tuple[api.Phase, bool, str, str]:
    """(phase, ready, reason, message) for the Ready condition.

    Ready means every wanted replica runs the current spec and passes its readiness probe; while
    a rollout or scale-up is under way the agent is Progressing (old pods keep serving meanwhile).
    """
    if secret_problem:
        return "Pending", False, "SecretNotFound", secret_problem
    if deployment is None:
        return (
            "Progressing",
            False,
            "DeploymentNotFound",
            f"Deployment {agent.name} does not exist yet",
        )

    status = deployment.get("status") or {}
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    progressing = _deployment_condition(deployment, "Progressing")
    failure = _deployment_condition(deployment, "ReplicaFailure")

    if failure.get("status") == "True":
        return (
            "Degraded",
            False,
            failure.get("reason", "ReplicaFailure"),
            failure.get("message", ""),
        )
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return "Degraded", False, "ProgressDeadlineExceeded", progressing.get("message", "")
    if status.get("observedGeneration", 0) < deployment["metadata"].get("generation", 0):
        return (
            "Progressing",
            False,
            "RollingOut",
            "the Deployment controller has not seen the change yet",
        )
    if wanted == 0:
        return "Ready", True, "ScaledToZero", "scaled to zero replicas"
    if stuck and ready < wanted:
        # No replica serving is a failure; some serving while others crash is degraded.
        return ("Failed" if ready == 0 else "Degraded"), False, stuck[0], stuck[1]
    if updated < wanted:
        return (
            "Progressing",
            False,
            "RollingOut",
            f"{updated}/{wanted} replicas updated, {ready} ready",
        )
    if ready < wanted:
        return "Progressing", False, "ReplicasNotReady", f"{ready}/{wanted} replicas ready"
    return "Ready", True, "AllReplicasReady", f"{ready}/{wanted} replicas ready"


def compute_status(
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    *,
    secret_problem: str | None = None,
    pods: list[dict[str, Any]] | None = None,
    cluster_domain: str = "cluster.local",
    now: str | None = None,
) -> api.AIAgentStatus:
    """The status an AIAgent should show, given its Deployment (None: not there), whether its
    API key Secret is usable (`secret_problem` says why not), and its pods (read only while not
    every replica is ready; a stuck container makes the agent Failed or Degraded)."""
    stuck = pod_problem(pods) if pods else None
    phase, ready, reason, message = _assess(agent, deployment, secret_problem, stuck)
    generation = _applied_generation(deployment)
    condition = api.Condition(
        type=READY,
        status="True" if ready else "False",
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now or now_rfc3339(),
    )
    deployment_status = (deployment or {}).get("status") or {}
    return api.AIAgentStatus(
        observed_generation=generation,
        phase=phase,
        replicas=deployment_status.get("replicas", 0),
        ready_replicas=deployment_status.get("readyReplicas", 0),
        selector=",".join(f"{k}={v}" for k, v in selector_labels(agent).items()),
        endpoint=endpoint(agent, cluster_domain),
        conditions=[_keep_transition_time(agent.status, condition)],
    )


def failed_status(agent: api.AIAgent, reason: str, message: str) -> api.AIAgentStatus:
    """The status of an AIAgent whose children the API server refused."""
    condition = api.Condition(
        type=READY,
        status="False",
        reason=reason,
        message=message,
        observed_generation=agent.generation,
        last_transition_time=now_rfc3339(),
    )
    return agent.status.model_copy(
        update={
            "phase": "Failed",
            "observed_generation": agent.generation,
            "conditions": [_keep_transition_time(agent.status, condition)],
        }
    )


def _applied_generation(deployment: dict[str, Any] | None) -> int | None:
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(GENERATION_ANNOTATION)
    return int(value) if value and value.isdigit() else None


def _keep_transition_time(old: api.AIAgentStatus, new: api.Condition) -> api.Condition:
    """lastTransitionTime moves only when the condition's status flips."""
    for condition in old.conditions:
        if condition.type == new.type and condition.status == new.status:
            return new.model_copy(update={"last_transition_time": condition.last_transition_time})
    return new


def status_patch(old: api.AIAgentStatus, new: api.AIAgentStatus) -> dict[str, Any] | None:
    """A merge patch for `status`, or None when nothing changed (so no write, no event storm)."""
    old_wire, new_wire = old.to_wire(), new.to_wire()
    if old_wire == new_wire:
        return None
    # Only what changed; fields that disappeared must be nulled explicitly in a merge patch.
    return {
        key: new_wire.get(key)
        for key in old_wire.keys() | new_wire.keys()
        if old_wire.get(key) != new_wire.get(key)
    }
