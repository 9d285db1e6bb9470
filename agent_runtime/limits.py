"""Budgets enforced before a request reaches the model (agent.yaml `limits`): requests and tokens
per window, requests in flight, and a cap on the tokens one answer may take.

Requests and tokens are counted in fixed windows (AIAGENT_LIMIT_WINDOW_SECONDS, a minute by
default) that start at multiples of the window length, so every pod agrees on the window.
With a Dapr state store the window's counters live in it, one record per window (agent:
`<agent>__limits__<start>-<length>s`, shared budget: `~budget__<name>__<start>-<length>s`),
updated first-write-wins with ETags, and removed by the store's TTL after two windows.
Without one, or while it fails, each pod counts alone and may spend limit/divisor.
Concurrency is always counted per pod, and divided the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .config import AgentConfig
from .errors import RuntimeFailure
from .metrics import Metrics
from .settings import RuntimeSettings

logger = logging.getLogger("agent_runtime.limits")

# Updates of one window's record that met another writer's first, before giving up on the store
# for this request; each conflict means another admission landed in between.
UPDATE_ATTEMPTS = 8
UPDATE_BACKOFF_SECONDS = 0.01
STORE_TIMEOUT_SECONDS = 2.0
# After a failure, the store is left alone this long (no request waits on a dead sidecar).
STORE_RETRY_SECONDS = 5.0
PER_POD = " (this pod's share)"


class RateLimited(RuntimeFailure):
    """Over a limit: nothing reached the model. 429 with Retry-After."""

    status_code = 429
    error_type = "rate_limited"

    def __init__(self, message: str, limit: str, retry_after: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class CounterStoreError(Exception):
    """The state store failed, could not be reached, or stayed contended."""


def capped(config: AgentConfig) -> AgentConfig:
    """The config the agent is built from: model.maxTokens lowered to limits.maxTokensPerRequest.

    The agent's own model settings decide what the provider is asked for (a client's max_tokens
    is not passed on), so capping them caps every request, whatever it asks for.
    """
    cap = config.limits.max_tokens_per_request
    if cap is None or (config.model.max_tokens is not None and config.model.max_tokens <= cap):
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"max_tokens": cap})})


def share(limit: int, divisor: int) -> int:
    """One pod's part of a limit when pods count alone: never more than the whole between them,
    never nothing."""
    return max(1, limit // divisor)


@dataclass(frozen=True)
class Quota:
    """One pair of per-window counters and their limits: the agent's own, or a shared budget's."""

    key: str  # names the counters; the window is appended
    owner: str  # for messages: "the agent's", "budget X's"
    requests: int | None
    tokens: int | None
    divisor: int
    budget: bool

    def limit_kind(self, what: str) -> str:
        return f"budget_{what}" if self.budget else what


def quotas_of(config: AgentConfig) -> list[Quota]:
    limits = config.limits
    found = []
    if limits.requests_per_minute or limits.tokens_per_minute:
        found.append(
            Quota(
                f"{config.name}__limits",
                "the agent's",
                limits.requests_per_minute,
                limits.tokens_per_minute,
                limits.divisor,
                budget=False,
            )
        )
    budget = limits.budget
    if budget and (budget.requests_per_minute or budget.tokens_per_minute):
        found.append(
            Quota(
                f"~budget__{_key_safe(budget.name)}",
                f"budget {budget.name}'s",
                budget.requests_per_minute,
                budget.tokens_per_minute,
                budget.divisor,
                budget=True,
            )
        )
    return found


def _key_safe(name: str) -> str:
    """`name` as a part of a state key: URL-safe characters kept, anything else replaced and a
    hash of the whole added, so two names never share counters."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    if safe == name:
        return name
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Counts:
    requests: int = 0
    tokens: int = 0

    def plus(self, requests: int = 0, tokens: int = 0) -> Counts:
        return Counts(max(0, self.requests + requests), max(0, self.tokens + tokens))


class LocalCounters:
    """This pod's counts in the current window (always kept: they are the fallback)."""

    def __init__(self) -> None:
        self._window = -1
        self._counts: dict[str, Counts] = {}

    def get(self, key: str, window: int) -> Counts:
        return self._counts.get(key, Counts()) if window == self._window else Counts()

    def add(self, key: str, window: int, requests: int = 0, tokens: int = 0) -> None:
        if window != self._window:  # a new window: the old one's counts are gone
            self._window, self._counts = window, {}
        self._counts[key] = self.get(key, window).plus(requests, tokens)


class DaprCounters:
    """Window records in a Dapr state store, through the sidecar's HTTP API."""

    def __init__(self, http_port: int, store: str, ttl_seconds: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}/v1.0/state/{store}",
            timeout=STORE_TIMEOUT_SECONDS,
        )
        self._ttl = str(ttl_seconds)

    async def update(self, key: str, change: Callable[[Counts], Counts | None]) -> None:
        """Apply `change` to the record under `key` (nothing is written when it returns None),
        on top of the record as it is when the write lands: a conflict means read again."""
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            counts, etag = await self._read(key)
            new = change(counts)
            if new is None or await self._write(key, new, etag):
                return
            # Jitter, so writers that collided do not collide again in lockstep.
            await asyncio.sleep(random.uniform(0, UPDATE_BACKOFF_SECONDS * attempt))
        raise CounterStoreError(f"{key} changed during each of {UPDATE_ATTEMPTS} updates")

    async def close(self) -> None:
        await self._client.aclose()

    async def _read(self, key: str) -> tuple[Counts, str | None]:
        try:
            response = await self._client.get(
                f"/{urllib.parse.quote(key, safe='')}", params={"consistency": "strong"}
            )
        except httpx.HTTPError as exc:
            raise CounterStoreError(f"unreachable: {type(exc).__name__}") from None
        if response.status_code == 204 or not response.content:
            return Counts(), None
        if response.status_code != 200:
            raise CounterStoreError(f"answered {response.status_code}: {response.text[:200]}")
        try:
            value = response.json()
            counts = Counts(int(value["requests"]), int(value["tokens"]))
        except (ValueError, KeyError, TypeError):
            counts = Counts()  # not ours to read: start the window afresh
        return counts, response.headers.get("etag") or None

    async def _write(self, key: str, counts: Counts, etag: str | None) -> bool:
        """True once written; False if the record changed (or appeared) since it was read."""
        item: dict[str, Any] = {
            "key": key,
            "value": {"requests": counts.requests, "tokens": counts.tokens},
            "options": {"concurrency": "first-write", "consistency": "strong"},
            "metadata": {"ttlInSeconds": self._ttl},
        }
        if etag is not None:
            item["etag"] = etag
        try:
            response = await self._client.post("", content=json.dumps([item]))
        except httpx.HTTPError as exc:
            raise CounterStoreError(f"unreachable: {type(exc).__name__}") from None
        if response.status_code in (200, 201, 204):
            return True
        if response.status_code == 409:  # ETag mismatch
            return False
        # Redis answers a first write of a key that appeared meanwhile with a 500, not a 409
        # (see sessions.DaprSessionStore._post): the key existing now tells it apart.
        if etag is None and (await self._read(key))[1] is not None:
            return False
        raise CounterStoreError(f"answered {response.status_code}: {response.text[:200]}")


class Limiter:
    """Admits a request (or refuses it with RateLimited) and counts what it spends."""

    def __init__(
        self,
        config: AgentConfig,
        settings: RuntimeSettings,
        metrics: Metrics,
        store: DaprCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        limits = config.limits
        self.quotas = quotas_of(config)
        self.concurrency = (
            share(limits.concurrent_requests, limits.divisor) if limits.concurrent_requests else 0
        )
        self._divided = limits.divisor > 1
        self.window_seconds = settings.limit_window_seconds
        self.in_flight = 0
        self._metrics = metrics
        self._store = store
        self._clock = clock
        self._local = LocalCounters()
        self._store_down_until = 0.0

    @classmethod
    def for_agent(cls, config: AgentConfig, settings: RuntimeSettings, metrics: Metrics) -> Limiter:
        """Counters in the agent's Dapr state store when it has one, else in this pod."""
        store = None
        if settings.dapr_http_port and config.dapr.state_store and quotas_of(config):
            ttl = 2 * settings.limit_window_seconds  # a window's record outlives it a little
            store = DaprCounters(settings.dapr_http_port, config.dapr.state_store, ttl)
        return cls(config, settings, metrics, store)

    @property
    def counting(self) -> str:
        """Where the per-window counters live, for the startup log line."""
        if not self.quotas:
            return "none"
        return "the Dapr state store" if self._store else "this pod (limit / divisor)"

    async def admit(self) -> None:
        """Take a place for one request, or raise RateLimited. Pair with release()."""
        if self.concurrency and self.in_flight >= self.concurrency:
            raise self._refused(
                "concurrency",
                f"the agent serves at most {self.concurrency} requests at once"
                + (PER_POD if self._divided else ""),
                retry_after=1,
            )
        # Taken before any await, so requests admitted meanwhile see it.
        self.in_flight += 1
        window = self._window()
        charged: list[Quota] = []
        try:
            for quota in self.quotas:
                await self._charge(quota, window)
                charged.append(quota)
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, RateLimited):  # refused by the budget: the agent's count back
                for quota in charged:
                    await self._add(quota, window, requests=-1)
            raise

    def release(self) -> None:
        self.in_flight -= 1

    async def spend(self, tokens: int) -> None:
        """Count the tokens an answer used (as the provider reported them) in this window."""
        if tokens <= 0:
            return
        window = self._window()
        for quota in self.quotas:
            if quota.tokens:
                await self._add(quota, window, tokens=tokens)

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()

    def _window(self) -> int:
        """The current window's start, in seconds since the epoch."""
        return int(self._clock() // self.window_seconds) * self.window_seconds

    def _key(self, quota: Quota, window: int) -> str:
        return f"{quota.key}__{window}-{self.window_seconds}s"

    async def _charge(self, quota: Quota, window: int) -> None:
        key = self._key(quota, window)
        refusal: tuple[str, int] | None = None

        def admit_one(counts: Counts) -> Counts | None:
            nonlocal refusal
            refusal = self._over(quota, counts, divisor=1)
            return None if refusal else counts.plus(requests=1)

        if not await self._shared(key, admit_one):
            refusal = self._over(quota, self._local.get(key, window), quota.divisor)
        if refusal:
            what, limit = refusal
            divided = limit != getattr(quota, what)  # this pod's share, not the whole
            raise self._refused(
                quota.limit_kind(what),
                f"{quota.owner} limit of {limit} {what} per {self._window_name()} is spent"
                + (PER_POD if divided else ""),
                retry_after=self._retry_after(window),
            )
        self._local.add(key, window, requests=1)

    async def _add(self, quota: Quota, window: int, requests: int = 0, tokens: int = 0) -> None:
        key = self._key(quota, window)
        await self._shared(key, lambda counts: counts.plus(requests, tokens))
        self._local.add(key, window, requests, tokens)

    @staticmethod
    def _over(quota: Quota, counts: Counts, divisor: int) -> tuple[str, int] | None:
        """The limit `counts` already reach ("tokens" or "requests", and its value), if any."""
        if quota.tokens and counts.tokens >= share(quota.tokens, divisor):
            return "tokens", share(quota.tokens, divisor)
        if quota.requests and counts.requests >= share(quota.requests, divisor):
            return "requests", share(quota.requests, divisor)
        return None

    async def _shared(self, key: str, change: Callable[[Counts], Counts | None]) -> bool:
        """Update `key` in the state store; False when there is none or it failed (the caller
        counts in this pod instead)."""
        if self._store is None:
            return False
        if time.monotonic() < self._store_down_until:
            self._metrics.limit_store_fallbacks.inc()
            return False
        try:
            await self._store.update(key, change)
        except CounterStoreError as exc:
            self._metrics.limit_store_fallbacks.inc()
            if not self._store_down_until:  # once per outage, not once per request
                logger.warning(
                    "limit counters: the Dapr state store failed (%s); each pod counts alone "
                    "(limit / divisor) until it answers again",
                    exc,
                )
            self._store_down_until = time.monotonic() + STORE_RETRY_SECONDS
            return False
        if self._store_down_until:
            logger.info("limit counters: the Dapr state store answers again")
            self._store_down_until = 0.0
        return True

    def _refused(self, kind: str, why: str, retry_after: int) -> RateLimited:
        self._metrics.rate_limited.labels(kind).inc()
        return RateLimited(f"{why}; retry in {retry_after} s", kind, retry_after)

    def _retry_after(self, window: int) -> int:
        return max(1, math.ceil(window + self.window_seconds - self._clock()))

    def _window_name(self) -> str:
        return "minute" if self.window_seconds == 60 else f"{self.window_seconds} s"
