"""Conversation memory per session_id: bounded, in process by default, in Dapr when configured.

In-process memory is lost when the process restarts; only the Dapr state store keeps it
across restarts (and shares it between replicas).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Protocol

import httpx

from .adapters.base import ChatMessage
from .errors import RuntimeFailure


class SessionStoreError(RuntimeFailure):
    status_code = 502
    error_type = "session_store_error"


class SessionStore(Protocol):
    kind: str

    async def load(self, session_id: str) -> list[ChatMessage]: ...

    async def save(self, session_id: str, messages: list[ChatMessage]) -> None: ...

    async def close(self) -> None: ...


class InMemorySessionStore:
    """The most recent `max_sessions` conversations, each cut to its last `max_messages`."""

    kind = "memory"

    def __init__(self, max_sessions: int, max_messages: int) -> None:
        self._sessions: OrderedDict[str, list[ChatMessage]] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_messages = max_messages

    async def load(self, session_id: str) -> list[ChatMessage]:
        messages = self._sessions.get(session_id, [])
        if session_id in self._sessions:
            self._sessions.move_to_end(session_id)
        return list(messages)

    async def save(self, session_id: str, messages: list[ChatMessage]) -> None:
        self._sessions[session_id] = messages[-self._max_messages :]
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)

    async def close(self) -> None:
        self._sessions.clear()


class DaprSessionStore:
    """Conversations in a Dapr state store, through the sidecar's HTTP API."""

    kind = "dapr"

    def __init__(self, http_port: int, store: str, max_messages: int, agent_name: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}/v1.0/state/{store}", timeout=5.0
        )
        self._max_messages = max_messages
        # Several agents may share one store: keep their keys apart.
        self._prefix = f"{agent_name}__"  # Dapr reserves "||" for its own key prefixes

    async def load(self, session_id: str) -> list[ChatMessage]:
        try:
            response = await self._client.get(f"/{self._prefix}{session_id}")
        except httpx.HTTPError as exc:
            raise SessionStoreError(f"Dapr state store unreachable: {exc}") from None
        if response.status_code == 204 or not response.content:
            return []
        if response.status_code != 200:
            raise SessionStoreError(f"Dapr state store answered {response.status_code}")
        return [ChatMessage(role=m["role"], content=m["content"]) for m in response.json()]

    async def save(self, session_id: str, messages: list[ChatMessage]) -> None:
        value = [{"role": m.role, "content": m.content} for m in messages[-self._max_messages :]]
        body = [{"key": f"{self._prefix}{session_id}", "value": value}]
        try:
            response = await self._client.post("", content=json.dumps(body))
        except httpx.HTTPError as exc:
            raise SessionStoreError(f"Dapr state store unreachable: {exc}") from None
        if response.status_code not in (200, 201, 204):
            raise SessionStoreError(f"Dapr state store answered {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()
