"""What the routes share for the life of the process: config, the built agent, sessions, metrics,
limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from .adapters.base import AgentAdapter
from .config import AgentConfig
from .dapr import DaprPublisher
from .errors import NotReady, ProviderTimeout, Redactor, RuntimeFailure
from .limits import Limiter
from .metrics import Metrics
from .sessions import SessionStore
from .settings import RuntimeSettings

T = TypeVar("T")


@dataclass
class RuntimeState:
    config: AgentConfig
    settings: RuntimeSettings
    sessions: SessionStore
    redact: Redactor
    metrics: Metrics = field(default_factory=Metrics)
    publisher: DaprPublisher | None = None  # set when the agent answers pub/sub messages
    limiter: Limiter | None = None  # None: no limits (tests that build a state by hand)
    adapter: AgentAdapter | None = None
    build_error: str | None = None
    build_seconds: float | None = None
    # Set once building ends, either way.
    built: asyncio.Event = field(default_factory=asyncio.Event)

    def ready_adapter(self) -> AgentAdapter:
        if self.adapter is None:
            raise NotReady(self.build_error or "the agent is still being built")
        return self.adapter

    async def built_adapter(self, timeout: float) -> AgentAdapter:
        """The agent, waiting up to `timeout` for it to be built: Dapr delivers messages as
        soon as the app listens, which is before the agent is ready."""
        if self.adapter is None and not self.built.is_set():
            try:
                async with asyncio.timeout(timeout):
                    await self.built.wait()
            except TimeoutError:
                pass
        return self.ready_adapter()

    async def within_timeout(self, call: Awaitable[T]) -> T:
        """Await a provider call, giving up (504) after model.timeoutSeconds."""
        seconds = self.config.model.timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await call
        except TimeoutError:
            raise ProviderTimeout(
                f"the model provider did not answer within {seconds} s (model.timeoutSeconds)"
            ) from None

    def safe(self, failure: RuntimeFailure) -> RuntimeFailure:
        """The same failure with any secret scrubbed from its message."""
        failure.message = self.redact(failure.message)
        return failure
