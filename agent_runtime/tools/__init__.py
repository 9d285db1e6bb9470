"""Tools an agent can call: the built-in ones (`builtin`) and MCP servers' (`mcp`, imported by
the app), each a `ToolSpec` (`base`) that every framework adapter wraps in its own tool type."""

from __future__ import annotations

from .base import ToolSpec
from .builtin import builtin_tools

__all__ = ["ToolSpec", "builtin_tools"]
