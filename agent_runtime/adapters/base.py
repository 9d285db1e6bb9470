"""The one small interface every framework adapter implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass
class Usage:
    """Tokens spent on one request; adapters add to it as the provider reports them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class AgentReply:
    output: str
    usage: Usage


class AgentAdapter(Protocol):
    """An agent built once at startup and called for every request.

    `messages` is the conversation so far, oldest first, ending with the user's new message.
    Adapters raise ProviderError for provider failures; the caller enforces the timeout.
    """

    framework: str

    async def invoke(self, messages: list[ChatMessage]) -> AgentReply: ...

    def stream(self, messages: list[ChatMessage], usage: Usage) -> AsyncIterator[str]:
        """Text deltas of the answer as they arrive; fills `usage` as the provider reports it."""
        ...
