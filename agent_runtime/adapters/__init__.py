"""Framework adapters. Each framework is imported only when an agent.yaml selects it."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import AgentConfig
from ..tools import ToolSpec
from .base import AgentAdapter, AgentReply, ChatMessage, Usage

__all__ = ["AgentAdapter", "AgentReply", "ChatMessage", "Usage", "build_adapter"]


def build_adapter(
    config: AgentConfig, api_key: str | None, extra_tools: Sequence[ToolSpec] = ()
) -> AgentAdapter:
    """Build the agent for the configured framework (slow: imports the framework).

    `extra_tools` (from MCP servers, connected before this is called) go after the built-in
    tools the config names.
    """
    if config.framework == "langchain":
        from .langchain import LangChainAdapter

        return LangChainAdapter(config, api_key, extra_tools)
    if config.framework == "openai-agents":
        from .openai_agents import OpenAIAgentsAdapter

        return OpenAIAgentsAdapter(config, api_key, extra_tools)
    from .crewai import CrewAIAdapter

    return CrewAIAdapter(config, api_key, extra_tools)
