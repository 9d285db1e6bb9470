"""CrewAI: an Agent (role, goal, backstory) built at startup and one Task per request.

A full crew from a CrewAI-style YAML (`agent.frameworkConfigPath`, from `spec.agent.configMapRef`)
takes the place of the inline agent: its `agents` and `tasks`, with `{input}` and `{history}` in
task descriptions filled from the request.
"""

from __future__ import annotations

import os

# Before crewai is imported: no telemetry or tracing calls home from a pod with no egress.
for _name, _value in (
    ("CREWAI_DISABLE_TELEMETRY", "true"),
    ("CREWAI_DISABLE_TRACKING", "true"),
    ("CREWAI_TRACING_ENABLED", "false"),
    ("OTEL_SDK_DISABLED", "true"),
):
    os.environ.setdefault(_name, _value)

from collections.abc import AsyncIterator, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from crewai import Agent, Crew, Process, Task  # noqa: E402
from crewai.tools import BaseTool  # noqa: E402
from crewai.types.streaming import StreamChunkType  # noqa: E402
from pydantic import BaseModel, Field, create_model  # noqa: E402

from ..config import AgentConfig  # noqa: E402
from ..providers import crewai_llm, provider_failure  # noqa: E402
from ..tools import ToolSpec, builtin_tools  # noqa: E402
from .base import AgentReply, ChatMessage, Usage  # noqa: E402

EXPECTED_OUTPUT = "A direct, complete answer to the user's message."


_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def _arguments_model(spec: ToolSpec) -> type[BaseModel]:
    """CrewAI wants a pydantic model of the arguments: one field per top-level property of the
    tool's JSON Schema (nested schemas stay plain lists and dicts)."""
    properties: dict[str, Any] = spec.parameters.get("properties") or {}
    required = set(spec.parameters.get("required") or [])
    fields: dict[str, Any] = {}
    for name, schema in properties.items():
        kind = _JSON_TYPES.get(str(schema.get("type")), Any)
        description = schema.get("description")
        if name in required:
            fields[name] = (kind, Field(description=description))
        else:
            fields[name] = (kind | None, Field(None, description=description))
    model: type[BaseModel] = create_model(f"{spec.name}_arguments", **fields)
    return model


def _tool(spec: ToolSpec) -> BaseTool:
    class AgentTool(BaseTool):
        name: str = spec.name
        description: str = spec.description
        args_schema: type[BaseModel] = _arguments_model(spec)

        def _run(self, **kwargs: Any) -> str:
            return spec.call_blocking(_given(kwargs))

        async def _arun(self, **kwargs: Any) -> str:
            return await spec.call(_given(kwargs))

    return AgentTool()


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments the model gave: optional fields it left out stay out."""
    return {k: v for k, v in arguments.items() if v is not None}


def _history(messages: list[ChatMessage]) -> str:
    lines = [
        f"{'User' if m.role == 'user' else 'Assistant'}: {m.content}"
        for m in messages
        if m.role in ("user", "assistant")
    ]
    return "\n".join(lines)


class CrewAIAdapter:
    framework = "crewai"

    def __init__(
        self, config: AgentConfig, api_key: str | None, extra_tools: Sequence[ToolSpec] = ()
    ) -> None:
        self._llm = crewai_llm(config.model, api_key)
        tools = builtin_tools(list(config.agent.tools), list(config.agent.http_allowed_hosts))
        self._tools = [_tool(t) for t in [*tools, *extra_tools]]
        self._config = config
        self._crew_spec: dict[str, Any] | None = None
        if config.agent.framework_config_path:
            with open(config.agent.framework_config_path) as handle:
                self._crew_spec = yaml.safe_load(handle) or {}
        self._crew(ChatMessage("user", "warm-up"), [])  # fail at startup, not on the first call

    def _agent(self, spec: dict[str, Any] | None = None) -> Agent:
        agent = self._config.agent
        spec = spec or {}
        return Agent(
            role=spec.get("role") or agent.role or self._config.name,
            goal=spec.get("goal") or agent.goal or "Answer the user's message well.",
            backstory=spec.get("backstory") or agent.instructions or "You are a helpful assistant.",
            llm=self._llm,
            tools=self._tools,
            allow_delegation=False,
            verbose=False,
            max_iter=8,
            # CrewAI would run the whole task again on an error (tools too, side effects and
            # all); the provider's SDK already retries the one model call that failed.
            max_retry_limit=0,
        )

    def _crew(
        self, question: ChatMessage, history: list[ChatMessage], stream: bool = False
    ) -> Crew:
        """A fresh crew per request: CrewAI agents keep per-run state, so none is shared."""
        context = _history(history)
        if self._crew_spec:
            agents = {
                name: self._agent(spec)
                for name, spec in (self._crew_spec.get("agents") or {}).items()
            }
            tasks = [
                Task(
                    description=str(spec["description"]).format(
                        input=question.content, history=context
                    ),
                    expected_output=str(spec.get("expected_output", EXPECTED_OUTPUT)),
                    agent=agents.get(spec.get("agent", "")) or next(iter(agents.values())),
                )
                for spec in (self._crew_spec.get("tasks") or {}).values()
            ]
            crew_agents = list(agents.values())
        else:
            description = question.content
            # System messages (a request's instructions) would be lost in a CrewAI task: say them.
            notes = [m.content for m in history if m.role == "system"]
            if notes:
                description += "\n\nInstructions for this answer:\n" + "\n".join(notes)
            if context:
                description += f"\n\nThe conversation so far:\n{context}"
            crew_agents = [self._agent()]
            tasks = [
                Task(description=description, expected_output=EXPECTED_OUTPUT, agent=crew_agents[0])
            ]
        return Crew(
            agents=crew_agents,
            tasks=tasks,
            process=Process.sequential,
            verbose=False,
            stream=stream,
        )

    async def invoke(self, messages: list[ChatMessage]) -> AgentReply:
        crew = self._crew(messages[-1], messages[:-1])
        try:
            output: Any = await crew.akickoff()
        except Exception as exc:
            raise (provider_failure(exc) or exc) from None
        return AgentReply(output=str(output.raw), usage=_usage(crew))

    async def stream(self, messages: list[ChatMessage], usage: Usage) -> AsyncIterator[str]:
        crew = self._crew(messages[-1], messages[:-1], stream=True)
        try:
            streaming: Any = await crew.akickoff()
            async for chunk in streaming:
                if getattr(chunk, "chunk_type", StreamChunkType.TEXT) != StreamChunkType.TEXT:
                    continue  # a tool call's arguments, not the answer
                text = getattr(chunk, "content", None)
                if text:
                    yield str(text)
        except Exception as exc:
            raise (provider_failure(exc) or exc) from None
        found = _usage(crew)
        usage.input_tokens += found.input_tokens
        usage.output_tokens += found.output_tokens


def _usage(crew: Crew) -> Usage:
    metrics = crew.usage_metrics
    if metrics is None:
        return Usage()
    return Usage(input_tokens=metrics.prompt_tokens, output_tokens=metrics.completion_tokens)
