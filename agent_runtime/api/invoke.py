"""`POST /v1/invoke`: our own API. One message in, the answer out; `session_id` carries the
conversation (kept in the session store, so any replica can continue it)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ..adapters.base import ChatMessage
from ..errors import RuntimeFailure
from .common import ERRORS, SESSION_ID_PATTERN, State, check_input_length

router = APIRouter()


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The user's message.")
    session_id: str | None = Field(
        None,
        pattern=SESSION_ID_PATTERN,
        description="Continue this conversation; omit to start a new one.",
    )


class UsageBody(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class InvokeResponse(BaseModel):
    output: str
    session_id: str = Field(description="Send it back to continue the conversation.")
    usage: UsageBody


@router.post("/v1/invoke", response_model=InvokeResponse, responses=ERRORS, tags=["agent"])
async def invoke(body: InvokeRequest, state: State) -> InvokeResponse:
    """Send the agent a message; with session_id it remembers the conversation."""
    check_input_length(state, body.input)
    adapter = state.ready_adapter()
    session_id = body.session_id or uuid.uuid4().hex
    history = await state.sessions.load(session_id)
    question = ChatMessage(role="user", content=body.input)
    try:
        reply = await state.within_timeout(adapter.invoke([*history.messages, question]))
    except RuntimeFailure as failure:
        raise state.safe(failure) from None
    answer = ChatMessage(role="assistant", content=reply.output)
    # A turn of this session recorded meanwhile is kept: this one goes after it.
    await state.sessions.append(session_id, history, [question, answer])
    usage = reply.usage
    return InvokeResponse(
        output=reply.output,
        session_id=session_id,
        usage=UsageBody(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        ),
    )
