"""Conversation memory per session_id: bounded, in process by default, in Dapr when configured.

In-process memory is lost when the process restarts; only the Dapr state store keeps it
across restarts and shares it between replicas. A turn is recorded with `append`, on top of
the history it was answered from if nothing changed since, else on top of the history as it is
by then: two turns of one session that run at the same time (two requests, two replicas) both
land, neither overwrites the other.

Besides conversations, a store keeps JSON records by key (A2A tasks, for one), in a key space of
their own, saved unconditionally or only if unchanged since read (the same ETag handling).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from .adapters.base import ChatMessage
from .errors import RuntimeFailure

# How many times a Dapr save is tried against a history that keeps changing under it. Each
# failed try means another turn of the same session was recorded in between, so running out
# takes that many concurrent writers on one conversation: contention, not an outage.
SAVE_ATTEMPTS = 5
SAVE_BACKOFF_SECONDS = 0.02


class SessionStoreError(RuntimeFailure):
    """The state store failed or could not be reached."""

    status_code = 502
    error_type = "session_store_error"


class SessionConflict(RuntimeFailure):
    """The session changed under every save attempt; nothing of this turn was recorded.

    409, not 502: the store works, the conversation is contended, and sending the turn again
    is safe because none of it was kept.
    """

    status_code = 409
    error_type = "session_conflict"


@dataclass(frozen=True)
class History:
    """A session as read: its messages and the store's version of them (Dapr's ETag; None for
    a session not stored yet, and for process memory)."""

    messages: list[ChatMessage] = field(default_factory=list)
    version: str | None = None


@dataclass(frozen=True)
class Record:
    """A JSON record as read: its value (None when there is none) and the store's version of it
    (Dapr's ETag, a counter in process memory; None when there is no record)."""

    value: Any = None
    version: str | None = None


class SessionStore(Protocol):
    kind: str

    async def load(self, session_id: str) -> History:
        """The conversation so far (no messages for a new session)."""
        ...

    async def append(self, session_id: str, read: History, new_messages: list[ChatMessage]) -> None:
        """Record this turn's messages after `read` (what the turn was answered from) or, if
        the session changed since, after whatever it holds by now."""
        ...

    async def load_record(self, key: str) -> Record:
        """The record under `key` (an empty Record when there is none)."""
        ...

    async def save_record(self, key: str, value: Any, read: Record | None = None) -> bool:
        """Store the JSON `value` under `key`. Without `read` it overwrites whatever is there;
        with it, it saves only if the record is still as read (first-write-wins) and returns
        False, saving nothing, when it changed (or appeared) since."""
        ...

    async def delete_record(self, key: str) -> None:
        """Remove the record under `key`, if any."""
        ...

    async def close(self) -> None: ...


class InMemorySessionStore:
    """The most recent `max_sessions` conversations, each cut to its last `max_messages`."""

    kind = "memory"

    def __init__(
        self, max_sessions: int, max_messages: int, max_records: int | None = None
    ) -> None:
        self._sessions: OrderedDict[str, list[ChatMessage]] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_messages = max_messages
        # Records as JSON text, so a caller's later change to a value never reaches the store
        # (as with Dapr); the most recently used `max_records` are kept.
        self._records: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._max_records = max_records or max_sessions
        self._versions = itertools.count(1)

    async def load(self, session_id: str) -> History:
        messages = self._sessions.get(session_id, [])
        if session_id in self._sessions:
            self._sessions.move_to_end(session_id)
        return History(list(messages))

    async def append(self, session_id: str, read: History, new_messages: list[ChatMessage]) -> None:
        # No await between read and write: atomic on the event loop, and always on top of the
        # session as it is now (the same outcome as a Dapr save after a conflict).
        messages = [*self._sessions.get(session_id, []), *new_messages]
        self._sessions[session_id] = messages[-self._max_messages :]
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)

    async def load_record(self, key: str) -> Record:
        if key not in self._records:
            return Record()
        self._records.move_to_end(key)
        text, version = self._records[key]
        return Record(json.loads(text), version)

    async def save_record(self, key: str, value: Any, read: Record | None = None) -> bool:
        # No await between the check and the write: atomic on the event loop.
        if read is not None:
            current = self._records.get(key)
            if (current[1] if current else None) != read.version:
                return False
        self._records[key] = (json.dumps(value), str(next(self._versions)))
        self._records.move_to_end(key)
        while len(self._records) > self._max_records:
            self._records.popitem(last=False)
        return True

    async def delete_record(self, key: str) -> None:
        self._records.pop(key, None)

    async def close(self) -> None:
        self._sessions.clear()
        self._records.clear()


class DaprSessionStore:
    """Conversations in a Dapr state store, through the sidecar's HTTP API.

    Saves are first-write-wins: each carries the ETag of the history it extends, and the store
    refuses it (409) if another turn was saved since; the turn is then re-appended to the fresh
    history and saved again. Dapr prefixes every key with the app id, so replicas sharing an
    app id (and a store) share sessions. Records live under `<agent>__record__<key>`: session
    ids cannot hold "_", so no session key is ever a record key.
    """

    kind = "dapr"

    def __init__(
        self,
        http_port: int,
        store: str,
        max_messages: int,
        agent_name: str,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}/v1.0/state/{store}",
            timeout=5.0,
        )
        self._max_messages = max_messages
        # Several agents may share one store: keep their keys apart.
        self._prefix = f"{agent_name}__"  # Dapr reserves "||" for its own key prefixes
        self._on_conflict = on_conflict or (lambda: None)

    async def load(self, session_id: str) -> History:
        return await self._get(self._key(session_id))

    async def append(self, session_id: str, read: History, new_messages: list[ChatMessage]) -> None:
        key = self._key(session_id)
        history = read
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            if await self._save(key, [*history.messages, *new_messages], history.version):
                return
            self._on_conflict()
            if attempt < SAVE_ATTEMPTS:
                # Jitter, so writers that collided do not collide again in lockstep.
                await asyncio.sleep(random.uniform(0, SAVE_BACKOFF_SECONDS * attempt))
            history = await self._get(key)  # the fresh history, with its ETag
        raise SessionConflict(
            f"session {session_id} changed during each of {SAVE_ATTEMPTS} attempts to record "
            "this turn (other turns of it running at the same time); nothing was recorded, "
            "send it again"
        )

    async def load_record(self, key: str) -> Record:
        response = await self._read(self._record_key(key))
        if response is None:
            return Record()
        return Record(response.json(), response.headers.get("etag") or None)

    async def save_record(self, key: str, value: Any, read: Record | None = None) -> bool:
        full_key = self._record_key(key)
        item: dict[str, Any] = {"key": full_key, "value": value}
        if read is None:
            item["options"] = {"concurrency": "last-write", "consistency": "strong"}
            return await self._post(full_key, item, conditional=False)
        item["options"] = {"concurrency": "first-write", "consistency": "strong"}
        if read.version is not None:
            item["etag"] = read.version
        return await self._post(full_key, item, conditional=True, expected_absent=not read.version)

    async def delete_record(self, key: str) -> None:
        path = f"/{urllib.parse.quote(self._record_key(key), safe=':')}"
        try:
            response = await self._client.delete(path)
        except httpx.HTTPError as exc:
            raise SessionStoreError(f"Dapr state store unreachable: {exc}") from None
        if response.status_code not in (200, 204):
            raise SessionStoreError(
                f"Dapr state store answered {response.status_code}: {response.text[:200]}"
            )

    async def close(self) -> None:
        await self._client.aclose()

    def _key(self, session_id: str) -> str:
        return f"{self._prefix}{session_id}"

    def _record_key(self, key: str) -> str:
        return f"{self._prefix}record__{key}"

    async def _get(self, key: str) -> History:
        response = await self._read(key)
        if response is None:
            return History()
        messages = [ChatMessage(role=m["role"], content=m["content"]) for m in response.json()]
        return History(messages, response.headers.get("etag") or None)

    async def _read(self, key: str) -> httpx.Response | None:
        """The sidecar's answer for `key`; None when nothing is stored under it."""
        try:
            response = await self._client.get(
                f"/{urllib.parse.quote(key, safe=':')}", params={"consistency": "strong"}
            )
        except httpx.HTTPError as exc:
            raise SessionStoreError(f"Dapr state store unreachable: {exc}") from None
        if response.status_code == 204 or not response.content:
            return None
        if response.status_code != 200:
            # Dapr says why (e.g. ERR_STATE_STORE_NOT_FOUND: the Component is missing or not
            # scoped to this app id); its messages carry names, never values.
            raise SessionStoreError(
                f"Dapr state store answered {response.status_code}: {response.text[:200]}"
            )
        return response

    async def _post(
        self, key: str, item: dict[str, Any], conditional: bool, expected_absent: bool = False
    ) -> bool:
        """Save one item; False if a conditional save met a changed record."""
        try:
            response = await self._client.post("", content=json.dumps([item]))
        except httpx.HTTPError as exc:
            raise SessionStoreError(f"Dapr state store unreachable: {exc}") from None
        if response.status_code in (200, 201, 204):
            return True
        if conditional and response.status_code == 409:  # ETag mismatch (Dapr's ETagMismatch)
            return False
        # A first save of a key another writer created meanwhile: the in-memory store says 409,
        # but Redis says 500 ("failed to set key") for first-write without an ETag. The key
        # existing now tells the conflict apart from a failure.
        if conditional and expected_absent and await self._read(key) is not None:
            return False
        raise SessionStoreError(
            f"Dapr state store answered {response.status_code}: {response.text[:200]}"
        )

    async def _save(self, key: str, messages: list[ChatMessage], etag: str | None) -> bool:
        """True once saved; False if the history changed since it was read (an ETag conflict)."""
        item: dict[str, Any] = {
            "key": key,
            "value": [
                {"role": m.role, "content": m.content} for m in messages[-self._max_messages :]
            ],
            "options": {"concurrency": "first-write", "consistency": "strong"},
        }
        if etag is not None:
            item["etag"] = etag
        return await self._post(key, item, conditional=True, expected_absent=etag is None)
