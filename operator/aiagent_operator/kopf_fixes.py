"""Five of Kopf's costs that grow with the cluster, cut, and one gap in its watches closed (Kopf
1.45); each to propose upstream.

**The readiness gate, made linear in the number of objects.**

At startup Kopf holds every object's handlers until all indices are filled: each listed object
adds a toggle to one `ToggleSet` and drops it once indexed, and each object's worker waits on the
set's condition. Every add and drop wakes every waiter (`notify_all`), and each waiter takes the
condition's lock in turn to look: N objects cost N² wake-ups. Measured on a restart with 1000
agents (6000 watched objects) and nothing to do: 80 s and 66 CPU-s until all were resumed; 14 s
and 14 CPU-s with this.

Here one task per wanted state waits on the condition, and the object workers wait on that one
task: the same answer, N wake-ups (kopf._cogs.aiokits.aiotoggles).

**The diff-base essence, without deep-copying what it throws away** (`LeanDiffBaseStorage`).

**The diff-base kept in memory, not in an annotation** (`RememberedDiffBaseStorage`), and **no
marker annotation when no progress is kept** (`ProgressStorage`): with both, a handler that
succeeds at once costs no write to its object.

**Watch events and listings decoded by orjson, without `managedFields`.** Every watch event
of every watched kind is one `json.loads` in Kopf's stream reader: 15% of the operator's CPU
while 1000 agents are created (py-spy --gil), about a third of that with orjson, which gives
the same dicts. Each object's `metadata.managedFields` (the server-side apply bookkeeping:
for a Deployment or a pod, about as large as its spec) is dropped as it is decoded: nothing
here reads it, and Kopf holds every listed body at startup until all indices are filled.

**Objects deleted while a watch was away, told** (`_watch_with_deletions`). When a watch stream
can no longer resume (410 Gone: its resourceVersion compacted away, after an outage or a pause)
Kopf lists afresh, and reports each listed object; one deleted meanwhile is simply not in the
listing, so no handler heard of it and its index entry stayed. A child deleted during the gap
was never restored, and its AIAgent stayed Ready (tests/e2e/test_faults.py). Here each stream
remembers what it has seen (name, kind, owners, labels: no bodies) and, when a listing ends,
reports each object it had seen that the listing lacks as DELETED, as the watch would have.
"""

from __future__ import annotations

import asyncio
import copy
import json
import weakref
from collections.abc import Iterable
from typing import Any, cast

import kopf
import orjson
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import watching
from kopf._cogs.structs import bodies, dicts

_shared: weakref.WeakKeyDictionary[aiotoggles.ToggleSet, dict[bool, asyncio.Future[None]]] = (
    weakref.WeakKeyDictionary()
)
_original_wait_for = aiotoggles.ToggleSet.wait_for


async def _wait_for(self: aiotoggles.ToggleSet, state: bool) -> None:
    wanted = bool(state)
    if self.is_on() == wanted:
        return  # no lock, no wake-up: the common case once the operator runs
    waiting = _shared.setdefault(self, {})
    shared = waiting.get(wanted)
    if shared is None or shared.done():
        shared = waiting[wanted] = asyncio.ensure_future(_original_wait_for(self, wanted))
    # A waiter cancelled (the operator stopping) leaves the shared wait to the others.
    await asyncio.shield(shared)


def _without_managed_fields(decoded: Any) -> Any:
    """A watch event, a list or an object, as decoded, less its objects' `managedFields`, and
    less the values of Secrets (the operator watches Secrets for their versions and keys only:
    their values never enter Kopf's memory, its logs or its indices)."""
    if isinstance(decoded, dict):
        secrets = decoded.get("kind") == "SecretList"
        objects = decoded.get("items") or [decoded.get("object") or decoded]
        for obj in objects:
            if not isinstance(obj, dict):
                continue
            metadata = obj.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("managedFields", None)
            if secrets or obj.get("kind") == "Secret":
                for field in ("data", "stringData"):
                    if isinstance(obj.get(field), dict):
                        obj[field] = dict.fromkeys(obj[field], "")
    return decoded


class _OrjsonLoads:
    """`json` for Kopf's API client module: `loads` by orjson (less `managedFields`), anything
    else the standard one."""

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return _without_managed_fields(orjson.loads(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(json, name)


async def _get(
    url: str,
    *,
    payload: object | None = None,
    headers: dict[str, str] | None = None,
    timeout: Any = None,
    settings: Any,
    logger: Any,
) -> Any:
    """Kopf's `api.get` (listings, discovery), its body decoded by `_OrjsonLoads`."""
    response = await kopf_api.request(
        method="get",
        url=url,
        payload=payload,
        headers=headers,
        timeout=timeout,
        settings=settings,
        logger=logger,
    )
    async with response:
        return _OrjsonLoads.loads(await response.read())


# What each watch stream (resource, namespace) has seen, by uid: enough of each object to report
# its deletion (Kopf's handlers and indices key on kind, namespace and name; ours read owners).
_seen: dict[tuple[Any, Any], dict[str, dict[str, Any]]] = {}
_original_continuous_watch = watching.continuous_watch


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    kept = ("name", "namespace", "uid", "labels", "ownerReferences", "resourceVersion")
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in kept if k in meta},
    }


async def _watch_with_deletions(**kwargs: Any) -> Any:
    """Kopf's `continuous_watch` (a listing, then a watch), with a DELETED event, just before
    the listing's end, for each object seen before that the listing lacks."""
    seen = _seen.setdefault((kwargs["resource"], kwargs["namespace"]), {})
    listed: set[str] = set()
    async for event in _original_continuous_watch(**kwargs):
        if event is watching.Bookmark.LISTED:
            for gone in [uid for uid in seen if uid not in listed]:
                yield {"type": "DELETED", "object": seen.pop(gone)}
        elif isinstance(event, dict) and isinstance(event.get("object"), dict):
            obj = cast(dict[str, Any], event["object"])
            uid = (obj.get("metadata") or {}).get("uid")
            if uid and event.get("type") == "DELETED":
                seen.pop(uid, None)
            elif uid and event.get("type") in (None, "ADDED", "MODIFIED"):
                seen[uid] = _slim(obj)
                if event.get("type") is None:
                    listed.add(uid)
        yield event


def install() -> None:
    aiotoggles.ToggleSet.wait_for = _wait_for  # type: ignore[method-assign]
    watching.continuous_watch = _watch_with_deletions
    kopf_api.json = _OrjsonLoads()  # type: ignore[assignment,attr-defined]
    kopf_api.get = _get


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf builds an object's "essence" (what its change detection compares) on every watch
    event of every watched kind, by deep-copying the whole body (managedFields, status) and then
    deleting metadata and status; and it compares essences only for kinds that have create,
    update or resume handlers (or daemons). With 1000 agents being created, those copies were 18%
    of the operator's CPU (py-spy --gil), nearly all for children and pods, whose essence is
    thrown away. Here the kinds in `compared_kinds` get Kopf's essence, built without copying
    what Kopf deletes; every other kind an empty one, at no cost."""

    def __init__(self, *, compared_kinds: Iterable[str], prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self.compared_kinds = frozenset(compared_kinds)

    def build(
        self, *, body: bodies.Body, extra_fields: Iterable[dicts.FieldSpec] | None = None
    ) -> bodies.BodyEssence:
        if body.get("kind") not in self.compared_kinds:
            return cast(bodies.BodyEssence, {})
        if extra_fields:  # fields kept from metadata or status: Kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        lean: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        lean["metadata"] = {
            k: metadata[k] for k in ("labels", "annotations", "ownerReferences") if k in metadata
        }
        return super().build(
            body=bodies.Body(cast(bodies.RawBody, lean)), extra_fields=extra_fields
        )


class RememberedDiffBaseStorage(LeanDiffBaseStorage):
    """The essence last handled, per object, kept in this process rather than in an annotation.

    Kopf's annotation storage patches the object after every handled change: one write and one
    more watch event to process per agent created or changed (1000 of the operator's 6200 writes
    while 1000 agents were created; `ProgressStorage` removes the other reason for that patch).
    The annotation lets a restarted Kopf tell a change made while it was down (update) from none
    (resume); our reconcile is level-triggered (it renders the whole spec and applies only
    children whose digest differs), so after a restart every agent is handled as created, which
    costs no write when nothing changed. Essences are a few hundred bytes each, dropped by
    `forget` when the object is deleted. An annotation left by an operator that stored it there
    is not compared (the parent's `build` leaves it out of the essence)."""

    def __init__(self, *, compared_kinds: Iterable[str], prefix: str, key: str) -> None:
        super().__init__(compared_kinds=compared_kinds, prefix=prefix, key=key)
        self._handled: dict[str, bodies.BodyEssence] = {}

    def fetch(self, *, body: bodies.Body) -> bodies.BodyEssence | None:
        return self._handled.get(body.metadata.uid or "")

    def store(self, *, body: bodies.Body, patch: kopf.Patch, essence: bodies.BodyEssence) -> None:
        if body.get("kind") in self.compared_kinds and body.metadata.uid:
            # A copy: Kopf hands the same essence to the handlers as `new`.
            self._handled[body.metadata.uid] = copy.deepcopy(essence)

    def forget(self, uid: str) -> None:
        self._handled.pop(uid, None)

    def __len__(self) -> int:
        return len(self._handled)


class ProgressStorage(kopf.AnnotationsProgressStorage):
    """Kopf's progress annotations (a handler's retries), less one write per object.

    Storing a handler's progress also adds `<prefix>/kopf-managed: yes`, which tells other
    Kopf-based operators that annotations under the prefix are Kopf's. A handler that succeeds at
    once has its progress stored and purged in the same pass, and the marker alone was left to
    patch: one write to every AIAgent created. Here the marker goes with the last progress record
    purged from a patch, and stays when progress is really written (a retry)."""

    def purge(self, *, key: str, body: bodies.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)  # type: ignore[arg-type]
        marker = f"{self.prefix}/kopf-managed"
        annotations = (patch.get("metadata") or {}).get("annotations") or {}
        progress = [k for k in annotations if k.startswith(f"{self.prefix}/") and k != marker]
        if marker in annotations and not progress:
            dicts.remove(patch, ["metadata", "annotations", marker])
