"""Framework adapters. Each framework is imported only when an agent.yaml selects it."""

from __future__ import annotations

from ..config import AgentConfig
from .base import AgentAdapter, AgentReply, ChatMessage, Usage

__all__ = ["AgentAdapter", "AgentReply", "ChatMessage", "Usage", "build_adapter"]


def build_adapter(config: AgentConfig, api_key: str | None) -> AgentAdapter:
    """Build the agent for the configured framework (slow: imports the framework)."""
    if config.framework == "langchain":
        from .langchain import LangChainAdapter

        return LangChainAdapter(config, api_key)
    from .crewai import CrewAIAdapter

    return CrewAIAdapter(config, api_key)
