"""What the routes share for the life of the process: config, the built agent, sessions, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from .adapters.base import AgentAdapter
from .config import AgentConfig
from .errors import NotReady, ProviderTimeout, Redactor, RuntimeFailure
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
    adapter: AgentAdapter | None = None
    build_error: str | None = None
    build_seconds: float | None = None

    def ready_adapter(self) -> AgentAdapter:
        if self.adapter is None:
            raise NotReady(self.build_error or "the agent is still being built")
        return self.adapter

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
