"""Kopf registrations: the whole event surface of the operator on one screen.

Each handler is thin; the work happens in `reconcile`, over the pure `render` and `status`.
Run with `python -m aiagent_operator`, or `kopf run -m aiagent_operator.handlers --all-namespaces`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from . import api, reconcile, render
from .kube import Kube
from .settings import OperatorSettings

AIAGENTS = (api.GROUP, api.VERSION, api.PLURAL)
# Children are watched so that drift is undone and the Deployment's state reaches status at once.
CHILD_RESOURCES = [
    ("v1", "configmaps"),
    ("v1", "services"),
    ("apps", "v1", "deployments"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
]


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: OperatorSettings) -> None:
    # Kopf's bookkeeping goes to annotations under our group; status stays ours alone.
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=api.GROUP, key="last-handled-configuration"
    )
    kopf_settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    # Events on the AIAgent only for what a person must act on, not every successful pass.
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.posting.loggers = True  # e.g. "Secret 'openai' ... not found" in describe
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.priority = settings.peering_priority
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.mandatory = not settings.standalone


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.settings = OperatorSettings()
    memo.kube = Kube.from_environment()
    configure_kopf(settings, memo.settings)


@kopf.index(*AIAGENTS)
def aiagents_by_name(body: kopf.Body, **_: Any) -> dict[tuple[str, str], api.AIAgent]:
    agent = api.AIAgent.from_body(body)
    return {(agent.namespace, agent.name): agent}


@kopf.on.resume(*AIAGENTS)
@kopf.on.create(*AIAGENTS)
@kopf.on.update(*AIAGENTS)
def reconcile_aiagent(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        reconcile.reconcile_agent(api.AIAgent.from_body(body), memo.kube, memo.settings)
    except reconcile.SecretNotReady as exc:
        raise kopf.TemporaryError(str(exc), delay=memo.settings.secret_retry_seconds) from None
    except reconcile.ChildRefused as exc:
        raise kopf.PermanentError(str(exc)) from None


def controlled_by_aiagent(body: kopf.Body, **_: Any) -> bool:
    return any(
        ref.get("controller")
        and ref.get("kind") == api.KIND
        and ref.get("apiVersion") == api.API_VERSION
        for ref in body.metadata.get("ownerReferences") or []
    )


def _on_child_event(
    type: str, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    # Kopf passes indices by name as keyword arguments.
    aiagents_by_name: kopf.Index[tuple[str, str], api.AIAgent] = kwargs["aiagents_by_name"]
    owner_name = next(
        ref["name"] for ref in body.metadata["ownerReferences"] if ref.get("controller")
    )
    owners: Iterable[api.AIAgent] = aiagents_by_name.get((namespace or "", owner_name), [])
    owner = next(iter(owners), None)
    reconcile.on_child_event(type, dict(body), owner, memo.kube, memo.settings)


for _resource in CHILD_RESOURCES:
    kopf.on.event(*_resource, when=controlled_by_aiagent, id=f"child-{_resource[-1]}")(
        _on_child_event
    )


@kopf.on.event(
    "v1",
    "pods",
    labels={render.MANAGED_BY_LABEL: render.FIELD_MANAGER, render.AGENT_LABEL: kopf.PRESENT},
)
def agent_pod_event(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A crash-looping or unpullable agent container shows on its AIAgent without waiting for the
    Deployment's progress deadline."""
    aiagents_by_name: kopf.Index[tuple[str, str], api.AIAgent] = kwargs["aiagents_by_name"]
    name = body.metadata.get("labels", {}).get(render.AGENT_LABEL, "")
    owner = next(iter(aiagents_by_name.get((namespace or "", name), [])), None)
    reconcile.on_pod_event(dict(body), owner, memo.kube, memo.settings)
