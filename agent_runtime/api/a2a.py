"""A2A: JSON-RPC at `POST /a2a` (A2A 1.0, and 0.3 for older clients, by the A2A-Version header)
and the agent card at `/.well-known/agent-card.json` (and 0.3's `/.well-known/agent.json`).

The a2a-sdk's own JSON-RPC dispatcher and request handler serve the protocol; this module mounts
them as a FastAPI route, so the runtime's middleware (auth, body limit, metrics, request id) and
error handlers apply. The agent is our adapter (`a2a_executor`); tasks live in the session store
(`a2a_tasks`), so with Dapr state any replica answers GetTask; a contextId is a session id.
"""

from __future__ import annotations

import json
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..state import RuntimeState
from .a2a_executor import ROUTE, AgentRequestHandler
from .a2a_tasks import SessionTaskStore
from .common import ERRORS, State

router = APIRouter(tags=["a2a"])

CARD_PATHS = {
    "/.well-known/agent-card.json": "agent_card",
    "/.well-known/agent.json": "agent_card_v0_3",
}
# JSON-RPC and A2A error codes, named for the error metrics.
ERROR_TYPES = {
    -32700: "parse_error",
    -32600: "invalid_request",
    -32601: "method_not_found",
    -32602: "invalid_params",
    -32603: "internal_error",
    -32001: "task_not_found",
    -32002: "task_not_cancelable",
    -32003: "push_notification_not_supported",
    -32004: "unsupported_operation",
    -32005: "content_type_not_supported",
    -32006: "invalid_agent_response",
    -32009: "version_not_supported",
}
JSONRPC_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["jsonrpc", "method"],
                "properties": {
                    "jsonrpc": {"const": "2.0"},
                    "id": {"type": ["string", "integer", "null"]},
                    "method": {
                        "type": "string",
                        "description": "1.0 (header A2A-Version: 1.0): SendMessage, "
                        "SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask; "
                        "0.3 (no header): message/send, message/stream, tasks/get, "
                        "tasks/cancel, tasks/resubscribe.",
                    },
                    "params": {"type": "object"},
                },
            }
        }
    },
}


def agent_card(state: RuntimeState, base_url: str) -> AgentCard:
    """Who this agent is and how to reach it: JSON-RPC at `/a2a`, in A2A 1.0 and 0.3."""
    config = state.config
    description = config.agent.description or config.agent.goal or f"{config.name} agent"
    url = f"{base_url.rstrip('/')}{ROUTE}"
    card = AgentCard(
        name=config.name,
        description=description,
        version=__version__,
        supported_interfaces=[
            AgentInterface(
                url=url, protocol_binding=TransportProtocol.JSONRPC, protocol_version=version
            )
            for version in (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id=config.name,
                name=config.agent.role or config.name,
                description=description,
                tags=[config.framework, *config.agent.tools],
            )
        ],
    )
    if state.settings.auth_token:  # every route but the probes wants the bearer token
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
        )
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


def _dispatcher(app: FastAPI, state: RuntimeState) -> JsonRpcDispatcher:
    """The SDK's dispatcher for this app, made on first use (the app factory is not ours)."""
    dispatcher: JsonRpcDispatcher | None = getattr(app.state, "a2a_dispatcher", None)
    if dispatcher is None:
        # The handler reads only the card's capabilities; the served card names the real URL.
        handler = AgentRequestHandler(
            state, SessionTaskStore(state.sessions, state.redact), agent_card(state, "")
        )
        dispatcher = JsonRpcDispatcher(handler, enable_v0_3_compat=True)
        app.state.a2a_dispatcher = dispatcher
    return dispatcher


@router.post(
    ROUTE,
    summary="A2A JSON-RPC (1.0 and 0.3)",
    responses={
        **{code: ERRORS[code] for code in (401, 413, 429, 503)},
        200: {"content": {"application/json": {}, "text/event-stream": {}}},
    },
    openapi_extra={"requestBody": JSONRPC_BODY},
)
async def a2a_jsonrpc(request: Request, state: State) -> Response:
    """A2A over JSON-RPC 2.0; the streaming methods answer with server-sent events."""
    state.ready_adapter()  # 503 while the agent is being built, as on every other route
    try:
        (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        # JSON is UTF-8: the SDK would call this an internal error (-32603) and log a stack
        # trace for a client's mistake; it is a parse error.
        error = {"code": -32700, "message": "Parse error: the body is not UTF-8"}
        state.metrics.errors.labels(ROUTE, ERROR_TYPES[-32700]).inc()
        return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error})
    response = await _dispatcher(request.app, state).handle_requests(request)
    if isinstance(response, JSONResponse) and b'"error"' in response.body:
        return _checked_error(response, state)
    return response


def _checked_error(response: JSONResponse, state: RuntimeState) -> Response:
    """A JSON-RPC error, counted in the metrics and with any secret scrubbed from its message:
    the SDK puts an unexpected exception's text there."""
    body = json.loads(bytes(response.body))
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return response
    code = error.get("code")
    error_type = ERROR_TYPES.get(code, "a2a_error") if isinstance(code, int) else "a2a_error"
    state.metrics.errors.labels(ROUTE, error_type).inc()
    if isinstance(error.get("message"), str):
        error["message"] = state.redact(error["message"])
    return JSONResponse(body, status_code=response.status_code)


async def _card(request: Request, state: State) -> dict[str, Any]:
    """The A2A agent card (1.0 fields, and 0.3's url/preferredTransport for older clients)."""
    return agent_card_to_dict(agent_card(state, str(request.base_url)))


for _path, _name in CARD_PATHS.items():  # A2A 1.0's path, and 0.3's
    router.add_api_route(_path, _card, methods=["GET"], name=_name)
