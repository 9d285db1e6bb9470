"""A tool as every framework adapter sees it, whatever serves it (built in, or an MCP server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolSpec:
    """A name, a description and a JSON Schema for the arguments (an object), with two ways to
    call it: `call` from async code, `call_blocking` from a framework's worker thread (CrewAI
    runs tools synchronously). Either returns text for the model; a failing tool returns
    "error: ..." rather than raising, so the model reads it as a tool error.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    call: Callable[[dict[str, Any]], Awaitable[str]]
    call_blocking: Callable[[dict[str, Any]], str]
