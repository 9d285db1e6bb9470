"""Kopf's readiness gate with the fix in `kopf_fixes`: the same answers, linear work."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from typing import Any

import pytest

sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # as the operator does

import kopf  # noqa: E402
from kopf._cogs.aiokits import aiotoggles  # noqa: E402
from kopf._cogs.structs import bodies  # noqa: E402

from aiagent_operator import kopf_fixes  # noqa: E402


@pytest.fixture(autouse=True)
def fixed() -> None:
    kopf_fixes.install()


def test_many_waiters_wake_once_each_when_the_last_toggle_drops() -> None:
    """The startup shape: one toggle per listed object, one waiting worker per object."""
    n = 2000
    looks = 0

    async def scenario() -> None:
        nonlocal looks
        gate = aiotoggles.ToggleSet(all)
        toggles = [await gate.make_toggle(name=str(i)) for i in range(n)]
        original = gate.is_on

        def counted() -> bool:
            nonlocal looks
            looks += 1
            return original()

        gate.is_on = counted  # type: ignore[method-assign]
        passed = 0

        async def worker() -> None:
            nonlocal passed
            await gate.wait_for(True)
            passed += 1

        workers = [asyncio.create_task(worker()) for _ in range(n)]
        await asyncio.sleep(0)
        for toggle in toggles[:-1]:
            await gate.drop_toggle(toggle)
            await asyncio.sleep(0)
        assert passed == 0, "a worker passed the gate while a toggle was still off"
        await gate.drop_toggle(toggles[-1])
        await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
        assert passed == n

    asyncio.run(scenario())
    # Kopf's own wait looks once per waiter per change: n * n (4 000 000) here.
    assert looks < 10 * n, looks


def test_any_and_all_sets_answer_as_before() -> None:
    async def scenario() -> None:
        paused = aiotoggles.ToggleSet(any)  # Kopf's operator pause
        await paused.wait_for(False)  # no toggles: off, returns at once
        toggle = await paused.make_toggle(True)
        waiting = asyncio.create_task(paused.wait_for(False))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await toggle.turn_to(False)  # a toggle's own change wakes the waiters too
        await asyncio.wait_for(waiting, timeout=5)

        indexed = aiotoggles.ToggleSet(all)
        await indexed.wait_for(True)  # no toggles: on
        off = await indexed.make_toggle(False)
        waiting = asyncio.create_task(indexed.wait_for(True))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await off.turn_to(True)
        await asyncio.wait_for(waiting, timeout=5)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        gate = aiotoggles.ToggleSet(all)
        toggle = await gate.make_toggle(False)
        first = asyncio.create_task(gate.wait_for(True))
        second = asyncio.create_task(gate.wait_for(True))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        assert first.cancelled() and not second.done()
        await gate.drop_toggle(toggle)
        await asyncio.wait_for(second, timeout=5)

    asyncio.run(scenario())


AIAGENT = {
    "apiVersion": "aiagents.dev/v1alpha1",
    "kind": "AIAgent",
    "metadata": {
        "name": "support-bot",
        "namespace": "team-a",
        "uid": "u-1",
        "resourceVersion": "7",
        "generation": 2,
        "labels": {"team": "a"},
        "annotations": {
            "aiagents.dev/last-handled-configuration": '{"spec": {"replicas": 1}}',
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "note": "kept",
        },
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"framework": "langchain", "replicas": 2, "model": {"name": "m"}},
    "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "support-bot",
        "namespace": "team-a",
        "ownerReferences": [{"kind": "AIAgent", "uid": "u-1", "controller": True}],
        "labels": {"aiagents.dev/agent": "support-bot"},
        "managedFields": [{"manager": "aiagent-operator"}],
    },
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "agent"}]}}},
    "status": {"readyReplicas": 2},
}
REPLICASET = {  # Kopf names its keys differently for a Deployment's ReplicaSets
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {
        "name": "support-bot-abc",
        "ownerReferences": [{"kind": "Deployment", "name": "support-bot"}],
        "annotations": {"aiagents.dev/last-handled-configuration-ofDRS": "{}"},
    },
    "spec": {"replicas": 1},
}


def storage(cls: type[kopf.AnnotationsDiffBaseStorage]) -> kopf.AnnotationsDiffBaseStorage:
    if cls is kopf_fixes.LeanDiffBaseStorage:
        return kopf_fixes.LeanDiffBaseStorage(
            compared_kinds={"AIAgent", "Deployment", "ReplicaSet", "Empty"},
            prefix="aiagents.dev",
            key="last-handled-configuration",
        )
    return cls(prefix="aiagents.dev", key="last-handled-configuration")


@pytest.mark.parametrize("raw", [AIAGENT, DEPLOYMENT, REPLICASET, {"kind": "Empty"}])
def test_the_lean_essence_is_kopfs_essence(raw: dict[str, object]) -> None:
    """Kopf compares the essence with the one stored on the object: any difference would read
    as a change of spec and rerun the handlers on every restart."""
    body = bodies.Body(raw)  # type: ignore[arg-type]
    lean = storage(kopf_fixes.LeanDiffBaseStorage).build(body=body, extra_fields=set())
    assert lean == storage(kopf.AnnotationsDiffBaseStorage).build(body=body, extra_fields=set())
    assert "status" not in lean and "managedFields" not in str(lean)


def test_kinds_whose_changes_nobody_compares_get_an_empty_essence() -> None:
    lean = kopf_fixes.LeanDiffBaseStorage(compared_kinds={"AIAgent"}, prefix="p", key="k")
    assert lean.build(body=bodies.Body(DEPLOYMENT), extra_fields=set()) == {}  # type: ignore[arg-type]
    assert lean.build(body=bodies.Body(AIAGENT), extra_fields=set())  # type: ignore[arg-type]


def test_every_kind_with_change_handlers_is_compared() -> None:
    """A create/update/resume handler or a daemon on another kind needs its kind in
    `handlers.COMPARED_KINDS`, or Kopf would see no change there."""
    from aiagent_operator import api, handlers

    registry = kopf.get_default_registry()
    selectors = registry._changing.get_all_selectors() | registry._spawning.get_all_selectors()
    plural_to_kind = {api.PLURAL: api.KIND}
    assert {plural_to_kind.get(s.any_name or "", s.any_name) for s in selectors} == (
        handlers.COMPARED_KINDS
    )


def without_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    slim = copy.deepcopy(obj)
    del slim["metadata"]["managedFields"]
    return slim


def test_kopfs_watch_stream_decodes_to_the_same_objects_less_managed_fields() -> None:
    from kopf._cogs.clients import api as kopf_api

    line = json.dumps({"type": "MODIFIED", "object": DEPLOYMENT})
    decoded = kopf_api.json.loads(line)
    assert decoded == {"type": "MODIFIED", "object": without_managed_fields(DEPLOYMENT)}
    assert "managedFields" in DEPLOYMENT["metadata"]  # the fixture itself untouched
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    assert kopf_api.json.loads(json.dumps(error)) == error
    assert kopf_api.json.dumps({"a": 1}) == json.dumps({"a": 1})  # the rest: the standard module


def test_kopfs_listings_decode_to_the_same_items_less_managed_fields() -> None:
    from kopf._cogs.clients import api as kopf_api

    listing = {"kind": "DeploymentList", "metadata": {"resourceVersion": "9"}}
    decoded = kopf_fixes._OrjsonLoads.loads(json.dumps({**listing, "items": [DEPLOYMENT, AIAGENT]}))
    assert decoded == {
        **listing,
        "items": [without_managed_fields(DEPLOYMENT), without_managed_fields(AIAGENT)],
    }
    assert kopf_fixes._OrjsonLoads.loads(b'{"items": []}') == {"items": []}
    assert kopf_api.get is kopf_fixes._get  # Kopf's listings and discovery come through it


def remembered() -> kopf_fixes.RememberedDiffBaseStorage:
    return kopf_fixes.RememberedDiffBaseStorage(
        compared_kinds={"AIAgent"}, prefix="aiagents.dev", key="last-handled-configuration"
    )


def test_the_remembered_diff_base_writes_nothing_to_the_object() -> None:
    """Kopf adds what `store` writes to its patch of the object: nothing, so no write."""
    diffbase, body = remembered(), bodies.Body(AIAGENT)  # type: ignore[arg-type]
    essence = diffbase.build(body=body, extra_fields=set())
    assert diffbase.fetch(body=body) is None  # never handled by this process: a creation
    patch = kopf.Patch()
    diffbase.store(body=body, patch=patch, essence=essence)
    assert not patch
    assert diffbase.fetch(body=body) == essence
    # The annotation an operator that kept the diff-base there left is not part of the essence.
    assert "last-handled-configuration" not in json.dumps(essence)


def test_the_remembered_diff_base_follows_the_object_by_uid() -> None:
    diffbase, body = remembered(), bodies.Body(AIAGENT)  # type: ignore[arg-type]
    diffbase.store(body=body, patch=kopf.Patch(), essence=diffbase.build(body=body))
    changed = copy.deepcopy(AIAGENT)
    changed["spec"]["replicas"] = 3
    new_essence = diffbase.build(body=bodies.Body(changed))  # type: ignore[arg-type]
    old_essence = diffbase.fetch(body=bodies.Body(changed))  # type: ignore[arg-type]
    assert old_essence is not None and old_essence != new_essence  # Kopf sees an update
    recreated = copy.deepcopy(AIAGENT)
    recreated["metadata"]["uid"] = "u-2"
    assert diffbase.fetch(body=bodies.Body(recreated)) is None  # type: ignore[arg-type]
    diffbase.forget("u-1")
    assert diffbase.fetch(body=body) is None and len(diffbase) == 0


def test_the_remembered_diff_base_keeps_nothing_for_kinds_nobody_compares() -> None:
    diffbase, body = remembered(), bodies.Body(DEPLOYMENT)  # type: ignore[arg-type]
    child = {**DEPLOYMENT, "metadata": {**DEPLOYMENT["metadata"], "uid": "d-1"}}
    diffbase.store(body=bodies.Body(child), patch=kopf.Patch(), essence={})  # type: ignore[arg-type,typeddict-item]
    assert len(diffbase) == 0 and diffbase.fetch(body=body) is None


def test_a_handler_that_succeeds_at_once_leaves_nothing_to_patch() -> None:
    storage = kopf_fixes.ProgressStorage(prefix="aiagents.dev")
    body = bodies.Body({"kind": "AIAgent", "metadata": {"name": "a"}})  # type: ignore[typeddict-item]
    record = {"started": "2026-12-06T10:00:00", "success": True, "retries": 1}
    done = kopf.Patch()
    storage.store(key="reconcile", record=record, body=body, patch=done)  # type: ignore[arg-type]
    storage.purge(key="reconcile", body=body, patch=done)
    assert not done  # Kopf patches nothing
    retrying = kopf.Patch()
    storage.store(key="reconcile", record=record, body=body, patch=retrying)  # type: ignore[arg-type]
    annotations = retrying["metadata"]["annotations"]
    assert set(annotations) == {"aiagents.dev/reconcile", "aiagents.dev/kopf-managed"}


def test_an_object_deleted_while_the_watch_was_away_is_reported_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A relist (after 410 Gone) that lacks an object seen before reports it DELETED, before the
    listing's end; objects still there, or deleted by a watch event, are not reported again."""
    from kopf._cogs.clients import watching

    def obj(name: str, **meta: Any) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", **meta},
            "spec": {"big": "x" * 100},
        }

    owners = [{"uid": "agent-uid", "controller": True}]
    streams = [
        # The first listing, then a watch: c deleted, d added (with owners).
        [
            {"type": None, "object": obj("a")},
            {"type": None, "object": obj("b", ownerReferences=owners)},
            {"type": None, "object": obj("c")},
            watching.Bookmark.LISTED,
            {"type": "DELETED", "object": obj("c")},
            {"type": "ADDED", "object": obj("d")},
        ],
        # After a 410: a listing without b and d.
        [{"type": None, "object": obj("a")}, watching.Bookmark.LISTED],
    ]

    async def fake_watch(**kwargs: Any) -> Any:
        for event in streams.pop(0):
            yield event

    monkeypatch.setattr(kopf_fixes, "_original_continuous_watch", fake_watch)
    monkeypatch.setattr(kopf_fixes, "_seen", {})

    async def run() -> list[Any]:
        events = []
        for _ in range(2):  # as Kopf's infinite_watch calls it again after a 410
            async for event in watching.continuous_watch(
                resource="deployments", namespace="ns", settings=None, operator_pause_waiter=None
            ):
                events.append(event)
        return events

    events = asyncio.run(run())
    second = events[6:]
    deleted = [e for e in second if isinstance(e, dict) and e["type"] == "DELETED"]
    assert [e["object"]["metadata"]["name"] for e in deleted] == ["b", "d"]
    assert second[-1] is watching.Bookmark.LISTED  # after the deletions, as the watch would
    b = deleted[0]["object"]
    assert b["kind"] == "Deployment" and b["apiVersion"] == "apps/v1"
    assert b["metadata"]["ownerReferences"] == owners and "spec" not in b
    # The first stream's own events pass through as they were, nothing added.
    first = [e["object"]["metadata"]["name"] if isinstance(e, dict) else e for e in events[:6]]
    assert first == ["a", "b", "c", watching.Bookmark.LISTED, "c", "d"]
