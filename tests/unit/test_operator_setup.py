"""How the operator sets Kopf up: what its watches ask the API server for, and what it logs."""

from __future__ import annotations

import logging
import sys

import pytest

sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # as the operator does

import kopf  # noqa: E402
from kopf._cogs.structs import references  # noqa: E402

from aiagent_operator import handlers, render  # noqa: E402
from aiagent_operator.__main__ import QuietRoutine  # noqa: E402
from aiagent_operator.settings import OperatorSettings  # noqa: E402


def resource(group: str, version: str, plural: str) -> references.Resource:
    return references.Resource(group=group, version=version, plural=plural, namespaced=True)


@pytest.mark.parametrize(
    ("group", "version", "plural", "selected"),
    [
        ("", "v1", "configmaps", True),
        ("", "v1", "services", True),
        ("apps", "v1", "deployments", True),
        ("autoscaling", "v2", "horizontalpodautoscalers", True),
        ("", "v1", "pods", True),
        # An agent may name a Component it does not own: all of them are watched.
        ("dapr.io", "v1alpha1", "components", False),
        ("aiagents.dev", "v1alpha1", "aiagents", False),
    ],
)
def test_child_and_pod_watches_select_ours_on_the_server(
    group: str, version: str, plural: str, selected: bool
) -> None:
    kopf_settings = kopf.OperatorSettings()
    handlers.configure_kopf(kopf_settings, OperatorSettings(peering_priority=1))
    selectors = kopf_settings.watching.label_selectors.collect(resource(group, version, plural))
    expected = [f"{render.MANAGED_BY_LABEL}={render.FIELD_MANAGER}"] if selected else []
    assert selectors == expected


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, (), None)


def test_routine_success_lines_are_dropped_and_what_the_operator_did_stays() -> None:
    quiet = QuietRoutine()
    assert not quiet.filter(record("Indexer 'applied_services' succeeded."))
    assert not quiet.filter(record("Handler 'child-deployments' succeeded."))
    assert not quiet.filter(record("Handler 'agent_pod_event' succeeded."))
    assert quiet.filter(record("Handler 'reconcile_aiagent' succeeded."))
    assert quiet.filter(record("Creation is processed: 1 succeeded; 0 failed."))
    assert quiet.filter(record("Handler 'child-deployments' failed.", logging.ERROR))


def test_what_the_operator_keeps_of_an_agent_goes_when_it_is_deleted() -> None:
    import asyncio

    diffbase = handlers.configure_kopf(kopf.OperatorSettings(), OperatorSettings())
    body = kopf.Body({"kind": "AIAgent", "metadata": {"uid": "u-1"}, "spec": {}})
    diffbase.store(body=body, patch=kopf.Patch(), essence=diffbase.build(body=body))
    memo = kopf.Memo(diffbase=diffbase, status_versions={"u-1": "7", "u-2": "8"})
    assert handlers.deleted(type="DELETED") and not handlers.deleted(type="MODIFIED")
    asyncio.run(handlers.forget_aiagent(uid="u-1", body=body, memo=memo))
    assert diffbase.fetch(body=body) is None
    assert memo.status_versions == {"u-2": "8"}


def test_a_deleted_childs_digest_goes_unless_a_new_child_was_applied_since() -> None:
    def child(digest: str) -> kopf.Body:
        annotations = {render.APPLIED_HASH_ANNOTATION: digest}
        return kopf.Body({"kind": "Service", "metadata": {"name": "a", "annotations": annotations}})

    applied = {("Service", "team-a", "a"): "old"}
    handlers.forget_applied(applied, child("old"), "team-a")
    assert applied == {}
    applied = {("Service", "team-a", "a"): "new"}  # re-created and applied before the event
    handlers.forget_applied(applied, child("old"), "team-a")
    assert applied == {("Service", "team-a", "a"): "new"}
