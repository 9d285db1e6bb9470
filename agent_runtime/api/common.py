"""What every protocol module shares: the runtime state dependency, the error body, input checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from ..errors import RuntimeFailure
from ..state import RuntimeState
from ..streaming import StreamPump

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class ErrorBody(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. invalid_request, provider_timeout.")
    message: str = Field(description="What went wrong, for a person.")
    request_id: str | None = Field(None, description="Quote it when reporting a problem.")


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "Missing or wrong bearer token (when AIAGENT_AUTH_TOKEN is set).",
        409: "Other turns of the session kept changing it; this turn was not recorded.",
        413: "Request body too large.",
        422: "Invalid request.",
        429: "Over one of the agent's limits (agent.yaml `limits`); nothing reached the model. "
        "Retry-After says in how many seconds to try again.",
        502: "The model provider (or the Dapr state store) failed.",
        503: "The agent is not built yet.",
        504: "The model provider did not answer in time.",
    }.items()
}


def runtime_state(request: Request) -> RuntimeState:
    state: RuntimeState = request.app.state.runtime
    return state


State = Annotated[RuntimeState, Depends(runtime_state)]


class InvalidRequest(RuntimeFailure):
    status_code = 422
    error_type = "invalid_request"


def check_input_length(state: RuntimeState, text: str) -> None:
    limit = state.settings.max_input_chars
    if len(text) > limit:
        raise InvalidRequest(f"input is {len(text)} characters long; the limit is {limit}")


async def start_stream(state: RuntimeState, source: AsyncIterator[str]) -> tuple[StreamPump, str]:
    """Drive `source` and wait for its first piece before the route answers 200, so a failing
    provider still gets a proper 502/504 status instead of an error buried in the stream."""
    stream = StreamPump(source)
    try:
        first = await state.within_timeout(stream.next())
    except StopAsyncIteration:
        first = ""
    except RuntimeFailure as failure:
        await stream.close()
        raise state.safe(failure) from None
    except BaseException:
        await stream.close()
        raise
    return stream, first
