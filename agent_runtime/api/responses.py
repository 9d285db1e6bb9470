"""`POST /v1/responses`, `GET /v1/responses/{id}`: the agent behind the OpenAI Responses API;
`previous_response_id` conversations live in the session store, so any replica continues them."""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from starlette.responses import Response

from ..adapters.base import ChatMessage, Usage
from ..errors import RuntimeFailure
from ..logs import request_id
from ..sessions import History
from ..state import RuntimeState
from ..streaming import EventStreamResponse, StreamPump
from .chat import ROLES
from .common import ERRORS, ErrorBody, InvalidRequest, State, check_input_length, start_stream

logger = logging.getLogger("agent_runtime")

RESPONSE_ID = re.compile(r"resp_[0-9a-f]{40}")
# "~" cannot appear in a session_id of the other APIs, so none of them can change a response.
KEY_PREFIX = "response~"


class BadRequest(RuntimeFailure):
    status_code = 400
    error_type = "invalid_request"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        if code:
            self.error_type = code


class ResponseNotFound(BadRequest):
    status_code = 404
    error_type = "not_found"


class ResponsesRoute(APIRoute):
    """Answers every failure of these routes in OpenAI's error shape, request validation included
    (the app-wide handlers give the runtime's own shape)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_in_openai_shape(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                failure: RuntimeFailure = _invalid(exc)
            except RuntimeFailure as exc:
                failure = exc
            state: RuntimeState = request.app.state.runtime
            state.metrics.errors.labels(self.path, failure.error_type).inc()
            # OpenAI answers bad input with 400; the runtime's shared checks say 422.
            status = 400 if isinstance(failure, InvalidRequest) else failure.status_code
            error = {
                "message": state.redact(failure.message),
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": getattr(failure, "param", None),
                "code": failure.error_type,
                "request_id": request_id.get(),
            }
            return JSONResponse({"error": error}, status_code=status)

        return handle_in_openai_shape


def _invalid(exc: RequestValidationError) -> BadRequest:
    problems, params = [], []
    for error in exc.errors():
        param = "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"] if p != "body"
        ).lstrip(".")
        params.append(param)
        problems.append(f"{param or 'body'}: {error['msg']}")
    return BadRequest("; ".join(problems), param=params[0] if params else None)


router = APIRouter(tags=["openai"], route_class=ResponsesRoute)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # annotations, logprobs of earlier output

    type: Literal["input_text", "output_text"]
    text: str


def _as_parts(content: Any) -> Any:
    return [{"type": "input_text", "text": content}] if isinstance(content, str) else content


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # id, status of earlier output items

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Annotated[
        list[TextPart], BeforeValidator(_as_parts, json_schema_input_type=str | list[TextPart])
    ]

    @model_validator(mode="before")
    @classmethod
    def only_messages(cls, item: Any) -> Any:
        if isinstance(item, dict) and item.get("type", "message") != "message":
            raise ValueError(
                f"only message items are supported, not {item['type']!r}: the agent runs its "
                "own tools, and earlier output goes in as assistant messages"
            )
        return item

    def text(self) -> str:
        return "".join(part.text for part in self.content)


def _as_messages(value: Any) -> Any:
    return [{"role": "user", "content": value}] if isinstance(value, str) else value


class CreateResponseRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # tuning fields OpenAI clients send; ignored

    model: str | None = Field(None, description="Ignored: the agent's configured model answers.")
    input: Annotated[
        list[InputMessage],
        BeforeValidator(_as_messages, json_schema_input_type=str | list[InputMessage]),
        Field(min_length=1, description="The user's message, or a list of messages."),
    ]
    instructions: str | None = Field(None, description="A system message for this turn only.")
    previous_response_id: str | None = Field(None, description="Continue from this response.")
    store: bool = Field(True, description="Keep the response for a later previous_response_id.")
    stream: bool = False
    metadata: dict[str, str] | None = Field(None, description="Echoed back; not stored.")
    # Fields we refuse, declared so the refusal can name them.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    text: dict[str, Any] | None = None


class OpenAIErrorBody(ErrorBody):
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody


DOCUMENTED_ERRORS: dict[int | str, dict[str, Any]] = {
    **{code: {**doc, "model": OpenAIErrorResponse} for code, doc in ERRORS.items()},
    400: {"model": OpenAIErrorResponse, "description": "Invalid or unsupported request."},
    404: {"model": OpenAIErrorResponse, "description": "No stored response with this id."},
}


def refuse_unsupported(body: CreateResponseRequest) -> None:
    unsupported = {
        "tools": "client-defined tools are not supported; the agent runs its own tools",
        "background": "background responses are not supported",
        "conversation": "conversations are not supported; use previous_response_id",
        "prompt": "stored prompt templates are not supported",
    }
    for field, why in unsupported.items():
        if getattr(body, field):
            raise BadRequest(why, param=field, code="unsupported_parameter")
    if body.tool_choice not in (None, "auto", "none"):
        raise BadRequest(
            "tool_choice other than auto or none is not supported; the agent picks its own tools",
            param="tool_choice",
            code="unsupported_parameter",
        )
    text_format = (body.text or {}).get("format") or {"type": "text"}
    if text_format.get("type") != "text":
        raise BadRequest(
            "only plain text output is supported", param="text.format", code="unsupported_parameter"
        )
    if body.input[-1].role != "user":
        raise BadRequest("the last input message must come from the user", param="input")


@dataclass
class Turn:
    """One response being made: what the model is sent, and what is kept afterwards."""

    id: str
    created_at: int
    model: str
    history: History  # the conversation of previous_response_id, if any
    new_messages: list[ChatMessage]  # this turn's input (instructions not included)
    body: CreateResponseRequest

    @property
    def message_id(self) -> str:
        return f"msg_{self.id.removeprefix('resp_')}"

    def sent(self) -> list[ChatMessage]:
        messages = [*self.history.messages, *self.new_messages]
        if self.body.instructions:
            return [ChatMessage("system", self.body.instructions), *messages]
        return messages

    async def record(self, state: RuntimeState, answer: str) -> None:
        if self.body.store:
            # A new key, written once: the whole conversation, on top of nothing (the history's
            # version belongs to the previous response's key).
            answered = ChatMessage("assistant", answer)
            conversation = [*self.history.messages, *self.new_messages, answered]
            await state.sessions.append(KEY_PREFIX + self.id, History(), conversation)

    def message(self, text: str | None, status: str = "completed") -> dict[str, Any]:
        return _message(self.message_id, text, status)

    def response(
        self,
        status: str,
        text: str | None = None,
        usage: Usage | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        output = [] if text is None else [self.message(text)]
        completed_at = int(time.time()) if status == "completed" else None
        body = response_object(self.id, self.created_at, completed_at, self.model, output, usage)
        body.update(
            status=status,
            error={"code": "server_error", "message": error} if error else None,
            instructions=self.body.instructions,
            previous_response_id=self.body.previous_response_id,
            store=self.body.store,
            metadata=self.body.metadata or {},
        )
        return body


def _message(message_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": message_id,
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [_output_text(text)],
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(
    response_id: str,
    created_at: int,
    completed_at: int | None,
    model: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
) -> dict[str, Any]:
    """A completed Response as OpenAI's clients parse it (openai.types.responses.Response)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": completed_at,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "reasoning": None,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": None if usage is None else _usage(usage),
        "metadata": {},
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def new_response_id() -> tuple[str, int]:
    # The creation time leads the id, so a stored response (messages only) can still tell it.
    created_at = int(time.time())
    return f"resp_{created_at:08x}{uuid.uuid4().hex}", created_at


async def load_previous(state: RuntimeState, response_id: str | None) -> History:
    if response_id is None:
        return History()
    # Checked before it reaches the store: the id becomes part of a Dapr URL.
    history = History()
    if RESPONSE_ID.fullmatch(response_id):
        history = await state.sessions.load(KEY_PREFIX + response_id)
    if not history.messages:  # a stored response holds at least its question and answer
        raise BadRequest(
            f"Previous response with id '{response_id}' not found (never stored, stored with "
            "store: false, or no longer kept).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return history


@router.post(
    "/v1/responses",
    responses={**DOCUMENTED_ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def create_response(body: CreateResponseRequest, state: State) -> Any:
    """OpenAI Responses API; `stream: true` answers with its typed server-sent events.

    - Every stored response is a session (key `response~<id>`) holding the conversation up to
      and including it; `previous_response_id` continues from it and the answer is stored under
      a new id. `store: false` keeps nothing. The session store's bounds apply.
    - The agent's own instructions always apply; `instructions` add a system message at the start
      of this turn only: not stored, so not carried over by `previous_response_id` (as OpenAI).
    - `model` and tuning fields (temperature, max_output_tokens...) are ignored. Refused with 400
      `unsupported_parameter`: client `tools`, a forced `tool_choice`, `background`,
      `conversation`, `prompt`, a non-text `text.format`; non-text input items are a 400 too.
    - Errors in OpenAI's shape, `code` being the runtime's error type; an unknown
      `previous_response_id` is a 400 `previous_response_not_found`, as with OpenAI. A failure
      after streaming began ends the stream with `response.failed`.
    """
    refuse_unsupported(body)
    new_messages = [ChatMessage(ROLES[m.role], m.text()) for m in body.input]
    check_input_length(state, (body.instructions or "") + "".join(m.content for m in new_messages))
    adapter = state.ready_adapter()
    history = await load_previous(state, body.previous_response_id)
    response_id, created_at = new_response_id()
    turn = Turn(response_id, created_at, state.config.name, history, new_messages, body)
    if body.stream:
        usage = Usage()
        stream, first = await start_stream(state, adapter.stream(turn.sent(), usage))
        return EventStreamResponse(
            _events(state, turn, stream, first, usage),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        reply = await state.within_timeout(adapter.invoke(turn.sent()))
    except RuntimeFailure as failure:
        raise state.safe(failure) from None
    await turn.record(state, reply.output)
    return turn.response("completed", reply.output, reply.usage)


async def _events(
    state: RuntimeState, turn: Turn, stream: StreamPump, first: str, usage: Usage
) -> AsyncIterator[str]:
    numbers = itertools.count()

    def event(kind: str, **fields: Any) -> str:
        body = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n"

    where = {"item_id": turn.message_id, "output_index": 0, "content_index": 0}
    pieces: list[str] = []
    failure: str | None = None
    # A client disconnect cancels this generator; closing the pump in `finally` cancels the
    # upstream call to the provider.
    try:
        yield event("response.created", response=turn.response("in_progress"))
        yield event("response.in_progress", response=turn.response("in_progress"))
        yield event(
            "response.output_item.added", output_index=0, item=turn.message(None, "in_progress")
        )
        empty = _output_text("")
        yield event("response.content_part.added", part=empty, **where)
        piece = first
        while True:
            if piece:
                pieces.append(piece)
                yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
            try:
                piece = await state.within_timeout(stream.next())
            except StopAsyncIteration:
                break
            except RuntimeFailure as exc:
                failure = state.redact(exc.message)
                break
            except Exception:  # a broken connection would leave the client guessing
                logger.exception("unexpected error while streaming a response")
                failure = "internal error; the log has details"
                break
        text = "".join(pieces)
        if failure is None:
            try:
                await turn.record(state, text)  # before response.completed: its id must work
            except RuntimeFailure as exc:
                failure = state.redact(exc.message)
        if failure is not None:
            yield event("response.failed", response=turn.response("failed", error=failure))
            return
        yield event("response.output_text.done", text=text, logprobs=[], **where)
        yield event("response.content_part.done", part=_output_text(text), **where)
        yield event("response.output_item.done", output_index=0, item=turn.message(text))
        yield event("response.completed", response=turn.response("completed", text, usage))
    finally:
        await stream.close()


@router.get("/v1/responses/{response_id}", responses=DOCUMENTED_ERRORS)
async def get_response(response_id: str, state: State) -> Any:
    """A stored response: its answer (usage, instructions and metadata are not kept)."""
    history = History()
    if RESPONSE_ID.fullmatch(response_id):
        history = await state.sessions.load(KEY_PREFIX + response_id)
    answers = [m for m in history.messages if m.role == "assistant"]
    if not answers:
        raise ResponseNotFound(f"No response with id '{response_id}' is stored.", "response_id")
    created_at = int(response_id.removeprefix("resp_")[:8], 16)
    output = [_message(f"msg_{response_id.removeprefix('resp_')}", answers[-1].content)]
    return response_object(response_id, created_at, None, state.config.name, output, None)
