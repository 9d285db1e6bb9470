"""The agent's own routes: invoke, the A2A card, health, readiness and metrics."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .adapters.base import ChatMessage
from .errors import RuntimeFailure
from .schemas import ErrorResponse, HealthResponse, InvokeRequest, InvokeResponse, UsageBody
from .state import RuntimeState

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "Missing or wrong bearer token (when AIAGENT_AUTH_TOKEN is set).",
        409: "Other turns of the session kept changing it; this turn was not recorded.",
        413: "Request body too large.",
        422: "Invalid request.",
        502: "The model provider (or the Dapr state store) failed.",
        503: "The agent is not built yet.",
        504: "The model provider did not answer in time.",
    }.items()
}


def runtime_state(request: Request) -> RuntimeState:
    state: RuntimeState = request.app.state.runtime
    return state


State = Annotated[RuntimeState, Depends(runtime_state)]
router = APIRouter()


class InvalidRequest(RuntimeFailure):
    status_code = 422
    error_type = "invalid_request"


def check_input_length(state: RuntimeState, text: str) -> None:
    limit = state.settings.max_input_chars
    if len(text) > limit:
        raise InvalidRequest(f"input is {len(text)} characters long; the limit is {limit}")


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
    state.metrics.count_tokens(state.config.model.name, usage.input_tokens, usage.output_tokens)
    return InvokeResponse(
        output=reply.output,
        session_id=session_id,
        usage=UsageBody(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
        ),
    )


@router.get("/.well-known/agent-card.json", tags=["a2a"])
async def agent_card(request: Request, state: State) -> dict[str, Any]:
    """The A2A agent card: who this agent is and how to reach it."""
    config = state.config
    description = config.agent.description or config.agent.goal or f"{config.name} agent"
    url = str(request.base_url).rstrip("/")
    skills = [
        {
            "id": config.name,
            "name": config.agent.role or config.name,
            "description": description,
            "tags": [config.framework, *config.agent.tools],
            "examples": [],
        }
    ]
    return {
        "protocolVersion": "0.3.0",
        "name": config.name,
        "description": description,
        "url": url,
        "preferredTransport": "JSONRPC",
        "version": __version__,
        "capabilities": {"streaming": True, "pushNotifications": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": skills,
        "additionalInterfaces": [
            {"url": f"{url}/v1/chat/completions", "transport": "HTTP+JSON"},
        ],
    }


@router.get("/healthz", response_model=HealthResponse, tags=["operations"])
async def healthz() -> HealthResponse:
    """Liveness: the process serves HTTP."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: {"model": ErrorResponse}},
    tags=["operations"],
)
async def readyz(state: State) -> Any:
    """Readiness: the agent is built and can take requests."""
    if state.adapter is None:
        message = state.build_error or "the agent is still being built"
        return JSONResponse(
            status_code=503, content={"error": {"type": "not_ready", "message": message}}
        )
    return HealthResponse(status="ready", framework=state.config.framework)


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
