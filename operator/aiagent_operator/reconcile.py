"""The reconcile flow: render, apply, prune, observe, report. The only module that mixes
the pure parts (`render`, `status`) with API calls (`kube`); Kopf handlers call into it."""

from __future__ import annotations

import logging
from typing import Any

from . import api, render
from .kube import Kube, KubeError, is_controlled_by
from .settings import OperatorSettings
from .status import compute_status, failed_status, pod_problem, status_patch

logger = logging.getLogger(__name__)


class SecretNotReady(Exception):
    """The AIAgent's API key Secret is missing or lacks its key; retried until it appears."""


class ChildRefused(Exception):
    """The API server refused a rendered child; retrying the same spec cannot help."""


def reconcile_agent(agent: api.AIAgent, kube: Kube, settings: OperatorSettings) -> None:
    """Bring the children in line with the spec and write the status that follows.

    Raises SecretNotReady (retry later) or ChildRefused (wait for a spec change).
    """
    secret_problem = check_secret(kube, agent)
    children = render.render_children(agent, settings)
    deployment: dict[str, Any] | None = None
    try:
        for child in children:
            applied = kube.apply(child)
            if child["kind"] == "Deployment":
                deployment = applied
    except KubeError as exc:
        if exc.namespace_terminating:
            # Our view of the agent predates its namespace's deletion: the namespace controller
            # removes the agent too, so there is nothing to build and nothing to report.
            logger.info("%s/%s: namespace is being deleted", agent.namespace, agent.name)
            return
        if not exc.is_permanent:
            raise
        message = f"{child['kind']} {child['metadata']['name']}: {exc.message}"
        write_status(kube, agent, failed_status(agent, "ChildRefused", message))
        raise ChildRefused(message) from exc

    # The Deployment's watch events carry its status from here on. An apply that changed the
    # spec returns a status the controller has not caught up with; writing it could land after
    # a newer one from the watch and stick, so only a settled answer (or a Secret problem,
    # which no Deployment event would report) is written here.
    if secret_problem or _settled(deployment):
        refresh_status(kube, agent, deployment, secret_problem, settings)

    wanted = {(c["apiVersion"], c["kind"]) for c in children}
    for api_version, kind in render.PRUNABLE:
        if (api_version, kind) not in wanted and kube.delete_if_controlled_by(
            api_version, kind, agent.namespace, agent.name, agent.uid
        ):
            logger.info(
                "deleted %s %s/%s: no longer in the spec", kind, agent.namespace, agent.name
            )
    if secret_problem:
        raise SecretNotReady(secret_problem)


def _settled(deployment: dict[str, Any] | None) -> bool:
    if deployment is None:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration", 0)
    return bool(observed >= deployment["metadata"].get("generation", 0))


def check_secret(kube: Kube, agent: api.AIAgent) -> str | None:
    ref = agent.spec.model.api_key_secret_ref
    return kube.secret_key_problem(agent.namespace, ref) if ref else None


def refresh_status(
    kube: Kube,
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    secret_problem: str | None,
    settings: OperatorSettings,
) -> None:
    pods = None
    if deployment is not None and not _all_ready(deployment):
        # Only then: the Deployment alone cannot tell a slow start from a crash loop.
        pods = kube.list_pods(agent.namespace, render.selector_labels(agent))
    status = compute_status(
        agent,
        deployment,
        secret_problem=secret_problem,
        pods=pods,
        cluster_domain=settings.cluster_domain,
    )
    write_status(kube, agent, status)


def _all_ready(deployment: dict[str, Any]) -> bool:
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    return bool((deployment.get("status") or {}).get("readyReplicas", 0) >= wanted)


def on_pod_event(
    pod: dict[str, Any], owner: api.AIAgent | None, kube: Kube, settings: OperatorSettings
) -> None:
    """A pod of an agent got stuck (crash loop, image pull): report it on the agent at once.

    Pods that are fine cost nothing here; their Deployment's events carry recovery."""
    if owner is None or pod_problem([pod]) is None:
        return
    fresh = kube.get(api.API_VERSION, api.KIND, owner.namespace, owner.name)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        return
    owner = api.AIAgent.from_body(fresh)
    deployment = kube.get("apps/v1", "Deployment", owner.namespace, owner.name)
    if deployment is None or not is_controlled_by(deployment, owner.uid):
        return
    refresh_status(kube, owner, deployment, check_secret(kube, owner), settings)


def write_status(kube: Kube, agent: api.AIAgent, status: api.AIAgentStatus) -> None:
    patch = status_patch(agent.status, status)
    if patch is None:
        return
    try:
        kube.patch_status(agent, patch)
    except KubeError as exc:
        if exc.status != 404:  # the AIAgent was deleted meanwhile: nothing to report on
            raise


def on_child_event(
    event_type: str | None,
    child: dict[str, Any],
    owner: api.AIAgent | None,
    kube: Kube,
    settings: OperatorSettings,
) -> None:
    """React to a change of a child: restore it if it was deleted or edited, and let the
    Deployment's own status flow into the owner's status.

    `owner` comes from Kopf's index, which may lag behind the child's own watch stream. Before
    undoing anything or writing status, the owner is read afresh, so a spec change or status
    written a moment ago is neither reverted nor overwritten with a stale view.
    """
    if owner is None or not is_controlled_by(child, owner.uid):
        return  # the owner is gone (garbage collection under way) or was recreated
    is_deployment = child["kind"] == "Deployment"
    if not is_deployment and _drift(event_type, child, owner, settings) is None:
        return
    fresh = kube.get(api.API_VERSION, api.KIND, owner.namespace, owner.name)
    if fresh is None or fresh["metadata"]["uid"] != owner.uid:
        return
    if fresh["metadata"].get("deletionTimestamp"):
        return
    owner = api.AIAgent.from_body(fresh)
    desired = _drift(event_type, child, owner, settings)
    if desired is not None:
        logger.info(
            "restoring %s %s/%s (%s)",
            child["kind"],
            owner.namespace,
            child["metadata"]["name"],
            "deleted" if event_type == "DELETED" else "changed outside the operator",
        )
        try:
            child = kube.apply(desired)
        except KubeError as exc:
            if exc.namespace_terminating:
                return  # the whole namespace is going away, owner included
            raise
    if is_deployment and event_type != "DELETED":
        refresh_status(kube, owner, child, check_secret(kube, owner), settings)


def _drift(
    event_type: str | None, child: dict[str, Any], owner: api.AIAgent, settings: OperatorSettings
) -> dict[str, Any] | None:
    """The child as the owner wants it, if the actual one was deleted or differs; else None
    (also when the owner no longer wants the child: pruning handles that)."""
    for desired in render.render_children(owner, settings):
        same = (desired["kind"], desired["metadata"]["name"])
        if same == (child["kind"], child["metadata"]["name"]):
            if event_type == "DELETED" or not is_subset(desired, child):
                return desired
            return None
    return None


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field we set still has our value (fields others added do not count)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and is_subset(value, actual[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual or str(desired) == str(actual))
