"""`POST /v1/chat/completions`: the agent behind the OpenAI chat completions API.

Clients send the whole conversation each time (as with OpenAI), so nothing is remembered here.
With `stream: true` the answer comes as server-sent events ending with `data: [DONE]`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..adapters.base import ChatMessage, Role, Usage
from ..errors import RuntimeFailure
from ..logs import request_id
from ..state import RuntimeState
from ..streaming import EventStreamResponse, StreamPump
from .common import ERRORS, InvalidRequest, State, check_input_length, start_stream

router = APIRouter()
logger = logging.getLogger("agent_runtime")


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="Ignored: the agent's configured model answers.")
    messages: list[ChatCompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: dict[str, str]
    finish_reason: str = "stop"


class ChatCompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: ChatCompletionUsage


ROLES: dict[str, Role] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",  # OpenAI's newer name for system instructions
}


def to_messages(request: ChatCompletionRequest) -> list[ChatMessage]:
    messages = []
    for message in request.messages:
        if message.role in ("tool", "function"):
            continue  # the agent runs its own tools; client-side tool results do not apply
        messages.append(ChatMessage(role=ROLES[message.role], content=message.text()))
    if not messages or messages[-1].role != "user":
        raise InvalidRequest("the last message must come from the user")
    return messages


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    tags=["openai"],
)
async def chat_completions(body: ChatCompletionRequest, state: State) -> Any:
    """OpenAI-compatible chat completions; `stream: true` answers with server-sent events."""
    messages = to_messages(body)
    check_input_length(state, "".join(m.content for m in messages))
    adapter = state.ready_adapter()
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = state.config.name
    if body.stream:
        usage = Usage()
        stream, first = await start_stream(state, adapter.stream(messages, usage))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(state, stream, first, usage, completion_id, created, model, include_usage)
        return EventStreamResponse(
            events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
    try:
        reply = await state.within_timeout(adapter.invoke(messages))
    except RuntimeFailure as failure:
        raise state.safe(failure) from None
    return ChatCompletionResponse(
        id=completion_id,
        created=created,
        model=model,
        choices=[ChatCompletionChoice(message={"role": "assistant", "content": reply.output})],
        usage=_usage(reply.usage),
    )


def _error_event(error_type: str, message: str) -> str:
    """The last event of a stream that failed after it began (as OpenAI's: an `error` object),
    followed by the usual end, so a client never waits on a stream that will say no more."""
    body = {"error": {"type": error_type, "message": message, "request_id": request_id.get()}}
    return f"data: {json.dumps(body)}\n\n"


def _usage(usage: Usage) -> ChatCompletionUsage:
    return ChatCompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.total_tokens,
    )


async def _events(
    state: RuntimeState,
    stream: StreamPump,
    first: str,
    usage: Usage,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    # A client disconnect cancels this generator; closing the pump in `finally` cancels the
    # upstream call to the provider.
    try:
        yield chunk({"role": "assistant", "content": first})
        failed: str | None = None
        while True:
            try:
                piece = await state.within_timeout(stream.next())
            except StopAsyncIteration:
                break
            except RuntimeFailure as failure:
                failed = _error_event(failure.error_type, state.redact(failure.message))
                break
            except Exception:  # a stream cut without a word would leave the client guessing
                logger.exception("unexpected error while streaming a chat completion")
                failed = _error_event("internal_error", "internal error; the log has details")
                break
            if piece:
                yield chunk({"content": piece})
        if failed is not None:  # no finish_reason: the answer did not finish
            yield failed
            yield "data: [DONE]\n\n"
            return
        yield chunk({}, finish="stop")
        if include_usage:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(usage).model_dump(),
            }
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        await stream.close()
