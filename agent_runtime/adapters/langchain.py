"""LangChain: `langchain.agents.create_agent` with the model, system prompt and built-in tools.

A settings file (`agent.frameworkConfigPath`, from `spec.agent.configMapRef`) may replace the
inline fields: `system_prompt` (text) and `tools` (built-in tool names).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import yaml
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.tools import StructuredTool

from ..config import AgentConfig
from ..providers import langchain_chat_model, provider_failure, system_prompt
from ..tools import ToolSpec, builtin_tools
from .base import AgentReply, ChatMessage, Usage


def _tool(spec: ToolSpec) -> StructuredTool:
    async def call(**arguments: Any) -> str:
        return await spec.call(arguments)

    def call_blocking(**arguments: Any) -> str:
        return spec.call_blocking(arguments)

    return StructuredTool(
        name=spec.name,
        description=spec.description,
        args_schema=spec.parameters,  # JSON Schema: LangChain passes it to the model as is
        func=call_blocking,
        coroutine=call,
    )


class LangChainAdapter:
    framework = "langchain"

    def __init__(
        self, config: AgentConfig, api_key: str | None, extra_tools: Sequence[ToolSpec] = ()
    ) -> None:
        settings: dict[str, Any] = {}
        if config.agent.framework_config_path:
            with open(config.agent.framework_config_path) as handle:
                settings = yaml.safe_load(handle) or {}
        tool_names = settings.get("tools", list(config.agent.tools))
        tools = [*builtin_tools(tool_names, list(config.agent.http_allowed_hosts)), *extra_tools]
        # Any: the graph's overloads type `input` as its own state class; we pass plain dicts.
        self._agent: Any = create_agent(
            model=langchain_chat_model(config.model, api_key),
            tools=[_tool(t) for t in tools],
            system_prompt=settings.get("system_prompt") or system_prompt(config),
            name=config.name,
        )

    @staticmethod
    def _input(messages: list[ChatMessage]) -> dict[str, Any]:
        return {"messages": [{"role": m.role, "content": m.content} for m in messages]}

    async def invoke(self, messages: list[ChatMessage]) -> AgentReply:
        try:
            result = await self._agent.ainvoke(self._input(messages))
        except Exception as exc:
            raise (provider_failure(exc) or exc) from None
        new = result["messages"][len(messages) :]
        usage = Usage()
        for message in new:
            _add_usage(usage, message)
        answer = next((m for m in reversed(new) if isinstance(m, AIMessage)), None)
        return AgentReply(output=answer.text if answer else "", usage=usage)

    async def stream(self, messages: list[ChatMessage], usage: Usage) -> AsyncIterator[str]:
        events = self._agent.astream(self._input(messages), stream_mode="messages")
        try:
            async for chunk, metadata in events:
                if not isinstance(chunk, AIMessageChunk):
                    continue  # tool results, not the answer
                _add_usage(usage, chunk)
                # Tokens of the model's final answer; tool-call arguments are not for the user.
                if metadata.get("langgraph_node") == "model" and not chunk.tool_call_chunks:
                    text = chunk.text
                    if text:
                        yield text
        except Exception as exc:
            raise (provider_failure(exc) or exc) from None
        finally:
            await events.aclose()


def _add_usage(usage: Usage, message: Any) -> None:
    metadata = getattr(message, "usage_metadata", None) or {}
    usage.input_tokens += int(metadata.get("input_tokens", 0))
    usage.output_tokens += int(metadata.get("output_tokens", 0))
