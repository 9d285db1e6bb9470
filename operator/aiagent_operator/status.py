"""Pure computation of an AIAgent's status from what its children report. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import api
from .components import ComponentFact
from .render import (
    APPLIED_HASH_ANNOTATION,
    GENERATION_ANNOTATION,
    dapr_app_id,
    selector_labels,
)

READY = "Ready"
DAPR_READY = "DaprReady"
DAPR_CONTAINER = "daprd"  # the name Dapr's injector gives the sidecar
# What lets the injected daprd pass the restricted Pod Security Standard (Dapr's chart value).
DROP_ALL_HINT = (
    "install Dapr with dapr_sidecar_injector.sidecarDropALLCapabilities=true so that the "
    "injected daprd drops all capabilities, as the restricted Pod Security Standard requires"
)


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
    model_problem: tuple[str, str] | None = None,
) -> tuple[api.Phase, bool, str, str]:
    """(phase, ready, reason, message) for the Ready condition.

    Ready means every wanted replica runs the current spec and passes its readiness probe; while
    a rollout or scale-up is under way the agent is Progressing (old pods keep serving meanwhile).
    """
    if model_problem:
        # The children stay as they were (pods keep serving with the last model); the agent is
        # not Ready until its ModelConfig can be used again.
        return "Pending", False, model_problem[0], model_problem[1]
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
        message = failure.get("message", "")
        if _sidecar_refused(message):
            message += f" ({DROP_ALL_HINT})"
        return "Degraded", False, failure.get("reason", "ReplicaFailure"), message
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


@dataclass(frozen=True)
class Sidecar:
    """What one agent pod says about its Dapr sidecar, and whether a container of it is stuck:
    all the operator's pod index keeps."""

    pod: str
    injected: bool  # the pod has a daprd container (or native sidecar init container)
    ready: bool  # daprd passes its readiness probe
    pod_ready: bool
    terminating: bool
    stuck: tuple[str, str] | None = None  # pod_problem of this pod alone


def sidecar_of(pod: dict[str, Any]) -> Sidecar:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    # With dapr.io/enable-native-sidecar the injector adds daprd as an init container that runs
    # beside the app (restartPolicy Always); otherwise as a container.
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    statuses = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    return Sidecar(
        pod=str((pod.get("metadata") or {}).get("name", "")),
        injected=any(c.get("name") == DAPR_CONTAINER for c in containers),
        ready=any(s.get("name") == DAPR_CONTAINER and s.get("ready") for s in statuses),
        pod_ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        ),
        terminating=bool((pod.get("metadata") or {}).get("deletionTimestamp")),
        stuck=pod_problem([pod]),
    )


def _sidecar_refused(message: str) -> bool:
    """Whether the ReplicaSet's pods were refused (Pod Security) because of the daprd container."""
    return f'container "{DAPR_CONTAINER}"' in message and "forbidden" in message


# Component problems first: the sidecar of a pod cannot make up for a Component it cannot load.
_VERDICT_ORDER = ("NoDaprAPI", "Conflict", "Missing", "WrongType", "NotScoped")


def _assess_dapr(
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    facts: list[ComponentFact],
    sidecars: list[Sidecar] | None,
) -> tuple[api.ConditionStatus, str, str]:
    """(status, reason, message) of the DaprReady condition."""
    for verdict in _VERDICT_ORDER:
        for fact in facts:
            problem = fact.problem(agent.namespace, dapr_app_id(agent))
            if fact.verdict == verdict and problem:
                return "False", problem[0], problem[1]
    failure = _deployment_condition(deployment or {}, "ReplicaFailure")
    if failure.get("status") == "True" and _sidecar_refused(failure.get("message", "")):
        return "False", "SidecarRefused", f"{failure['message']} ({DROP_ALL_HINT})"
    live = sorted((s for s in sidecars or [] if not s.terminating), key=lambda s: s.pod)
    if not live:
        return "Unknown", "NoPods", "no running pod to look for a daprd sidecar in"
    missing = [s for s in live if not s.injected]
    if missing:
        return (
            "False",
            "SidecarNotInjected",
            f"{len(missing)}/{len(live)} pods run without a daprd container (pod "
            f"{missing[0].pod}): Dapr's sidecar injector is not installed or did not act on "
            "them (pods created before it was running keep running without a sidecar)",
        )
    unready = [s for s in live if not s.ready]
    if unready:
        return (
            "False",
            "SidecarNotReady",
            f"daprd is not ready in {len(unready)}/{len(live)} pods (pod {unready[0].pod})",
        )
    return "True", "SidecarsReady", f"daprd injected and ready in {len(live)}/{len(live)} pods"


def compute_status(
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    *,
    secret_problem: str | None = None,
    model_problem: tuple[str, str] | None = None,
    pods: list[dict[str, Any]] | None = None,
    stuck: tuple[str, str] | None = None,
    components: list[ComponentFact] | None = None,
    sidecars: list[Sidecar] | None = None,
    cluster_domain: str = "cluster.local",
    now: str | None = None,
) -> api.AIAgentStatus:
    """The status an AIAgent should show, given its Deployment (None: not there), whether its
    API key Secret is usable (`secret_problem` says why not), its ModelConfig (`model_problem`:
    reason and message when it cannot be used), and its pods (read only while not
    every replica is ready; a stuck container makes the agent Failed or Degraded), or what a
    stuck one says (`stuck`, from the pod index).

    With Dapr enabled, a DaprReady condition says whether every pod has a ready daprd and every
    Component the spec names is usable (`components`, `sidecars`). It is reported beside Ready and
    never changes the phase: the agent serves without its sidecar (sessions in process), and a
    cluster without Dapr would otherwise show every agent Degraded, since Dapr is on by default.
    """
    stuck = stuck or (pod_problem(pods) if pods else None)
    phase, ready, reason, message = _assess(agent, deployment, secret_problem, stuck, model_problem)
    generation = _applied_generation(deployment)
    timestamp = now or now_rfc3339()
    conditions = [
        api.Condition(
            type=READY,
            status="True" if ready else "False",
            reason=reason,
            message=message,
            observed_generation=generation,
            last_transition_time=timestamp,
        )
    ]
    if agent.spec.dapr.enabled:
        dapr_status, dapr_reason, dapr_message = _assess_dapr(
            agent, deployment, components or [], sidecars
        )
        conditions.append(
            api.Condition(
                type=DAPR_READY,
                status=dapr_status,
                reason=dapr_reason,
                message=dapr_message,
                observed_generation=generation,
                last_transition_time=timestamp,
            )
        )
    deployment_status = (deployment or {}).get("status") or {}
    return api.AIAgentStatus(
        observed_generation=generation,
        phase=phase,
        replicas=deployment_status.get("replicas", 0),
        ready_replicas=deployment_status.get("readyReplicas", 0),
        selector=",".join(f"{k}={v}" for k, v in selector_labels(agent).items()),
        endpoint=endpoint(agent, cluster_domain),
        conditions=[_keep_transition_time(agent.status, c) for c in conditions],
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
    others = [c for c in agent.status.conditions if c.type != READY]
    return agent.status.model_copy(
        update={
            "phase": "Failed",
            "observed_generation": agent.generation,
            "conditions": [_keep_transition_time(agent.status, condition), *others],
        }
    )


def deployment_facts(deployment: dict[str, Any]) -> dict[str, Any]:
    """The part of a Deployment that its agent's status and reconcile read (`compute_status`,
    `reconcile`): its identity, owner, generations, digest, wanted replicas and status. Kept per
    agent in an index, a few hundred bytes rather than the whole Deployment."""
    metadata = deployment.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    return {
        "apiVersion": deployment.get("apiVersion", "apps/v1"),
        "kind": "Deployment",
        "metadata": {
            **{k: metadata[k] for k in ("name", "namespace", "uid", "generation") if k in metadata},
            "ownerReferences": metadata.get("ownerReferences") or [],
            "annotations": {
                k: annotations[k]
                for k in (APPLIED_HASH_ANNOTATION, GENERATION_ANNOTATION)
                if k in annotations
            },
        },
        "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 1)},
        "status": deployment.get("status") or {},
    }


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
