"""OpenAI Agents SDK: an `Agent` over the chat completions API, run by `Runner` per request.

A settings file (`agent.frameworkConfigPath`, from `spec.agent.configMapRef`) may replace the
inline fields: `instructions` (text) and `tools` (built-in tool names), as for LangChain.
"""

from __future__ import annotations

import os

# Before the SDK is imported: its tracing exports to OpenAI, and a pod has no egress.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "true"

import json  # noqa: E402
from collections.abc import AsyncIterator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from agents import (  # noqa: E402
    Agent,
    AgentsException,
    FunctionTool,
    MaxTurnsExceeded,
    ModelSettings,
    OpenAIChatCompletionsModel,
    RunConfig,
    Runner,
    RunResultStreaming,
    set_trace_processors,
    set_tracing_disabled,
)
from agents import Usage as SDKUsage  # noqa: E402
from agents.tool_context import ToolContext  # noqa: E402
from openai.types.responses import ResponseTextDeltaEvent  # noqa: E402

from ..config import AgentConfig  # noqa: E402
from ..errors import ProviderError, RuntimeFailure  # noqa: E402
from ..providers import openai_client, provider_failure, system_prompt  # noqa: E402
from ..tools import ToolSpec, builtin_tools  # noqa: E402
from .base import AgentReply, ChatMessage, Usage  # noqa: E402

# Model calls per request (each tool round trip is one more); past it the request fails.
MAX_TURNS = 8

# Belt and braces: no trace processor (the default one batches spans for OpenAI's API).
set_tracing_disabled(True)
set_trace_processors([])


def _tool(spec: ToolSpec) -> FunctionTool:
    async def invoke(_: ToolContext[Any], arguments: str) -> str:
        try:
            parsed = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not JSON: {exc}"
        if not isinstance(parsed, dict):
            return "error: the arguments must be a JSON object"
        return await spec.call(parsed)

    return FunctionTool(
        name=spec.name,
        description=spec.description,
        params_json_schema=spec.parameters,
        on_invoke_tool=invoke,
        # Our schemas (and MCP servers') are plain JSON Schema: strict mode would rewrite them
        # (every property required, no extra properties) or refuse them.
        strict_json_schema=False,
    )


def _failure(exc: BaseException) -> BaseException:
    """Our 502/504 for a provider's error; the SDK's own run errors are 502s too."""
    found = provider_failure(exc)
    if found is not None:
        return found
    if isinstance(exc, MaxTurnsExceeded):
        return ProviderError(f"the agent did not finish within {MAX_TURNS} model calls")
    if isinstance(exc, AgentsException):
        return ProviderError(f"the agent run failed: {type(exc).__name__}: {exc}")
    return exc


class OpenAIAgentsAdapter:
    framework = "openai-agents"

    def __init__(
        self, config: AgentConfig, api_key: str | None, extra_tools: Sequence[ToolSpec] = ()
    ) -> None:
        settings: dict[str, Any] = {}
        if config.agent.framework_config_path:
            with open(config.agent.framework_config_path) as handle:
                settings = yaml.safe_load(handle) or {}
        tool_names = settings.get("tools", list(config.agent.tools))
        tools = [*builtin_tools(tool_names, list(config.agent.http_allowed_hosts)), *extra_tools]
        model = config.model
        self._agent: Agent[None] = Agent(
            name=config.name,
            instructions=settings.get("instructions") or system_prompt(config),
            tools=[_tool(t) for t in tools],
            model=OpenAIChatCompletionsModel(
                model=model.name, openai_client=openai_client(model, api_key)
            ),
            model_settings=ModelSettings(
                temperature=model.temperature,
                max_tokens=model.max_tokens,
                include_usage=True,  # token counts in streamed answers too
                # OpenAI itself keeps chat completions unless told not to; others ignore it.
                store=False if model.provider == "openai" else None,
            ),
        )
        self._run_config = RunConfig(tracing_disabled=True, workflow_name=config.name)

    @staticmethod
    def _input(messages: list[ChatMessage]) -> list[Any]:
        return [{"role": m.role, "content": m.content} for m in messages]

    async def invoke(self, messages: list[ChatMessage]) -> AgentReply:
        try:
            result = await Runner.run(
                self._agent,
                self._input(messages),
                max_turns=MAX_TURNS,
                run_config=self._run_config,
            )
        except RuntimeFailure:
            raise
        except Exception as exc:
            raise _failure(exc) from None
        output = result.final_output
        return AgentReply(
            output="" if output is None else str(output),
            usage=_usage(result.context_wrapper.usage),
        )

    async def stream(self, messages: list[ChatMessage], usage: Usage) -> AsyncIterator[str]:
        result: RunResultStreaming = Runner.run_streamed(
            self._agent,
            self._input(messages),
            max_turns=MAX_TURNS,
            run_config=self._run_config,
        )
        try:
            async for event in result.stream_events():
                # Text of the model's answers only; tool-call arguments arrive as other events.
                if event.type == "raw_response_event" and isinstance(
                    event.data, ResponseTextDeltaEvent
                ):
                    if event.data.delta:
                        yield event.data.delta
        except RuntimeFailure:
            raise
        except Exception as exc:
            raise _failure(exc) from None
        finally:
            # A client that hung up closes this generator: stop the run and its provider call.
            if not result.is_complete:
                result.cancel()
            found = _usage(result.context_wrapper.usage)
            usage.input_tokens += found.input_tokens
            usage.output_tokens += found.output_tokens


def _usage(usage: SDKUsage) -> Usage:
    return Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
