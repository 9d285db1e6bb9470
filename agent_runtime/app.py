"""The FastAPI app factory: one agent, built once at startup, served over HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .adapters import AgentAdapter, build_adapter
from .api import a2a, chat, invoke, operations, pubsub, responses
from .config import AgentConfig, BuiltinTool
from .dapr import DaprPublisher
from .errors import Redactor, RuntimeFailure
from .limits import Limiter, capped
from .logs import request_id
from .metrics import MeteredAdapter, Metrics
from .middleware import RuntimeMiddleware
from .sessions import DaprSessionStore, InMemorySessionStore, SessionStore
from .settings import RuntimeSettings, api_key_for
from .state import RuntimeState
from .tools import ToolSpec
from .tools.mcp import McpStartupError, McpToolbox

logger = logging.getLogger("agent_runtime")

AdapterFactory = Callable[[AgentConfig, str | None, Sequence[ToolSpec]], AgentAdapter]


def session_store(
    config: AgentConfig, settings: RuntimeSettings, metrics: Metrics | None = None
) -> SessionStore:
    """Dapr's state store when a sidecar and a store are configured; process memory otherwise."""
    if settings.dapr_http_port and config.dapr.state_store:
        return DaprSessionStore(
            settings.dapr_http_port,
            config.dapr.state_store,
            settings.max_session_messages,
            config.name,
            on_conflict=metrics.session_conflicts.inc if metrics else None,
        )
    return InMemorySessionStore(settings.max_sessions, settings.max_session_messages)


def answers_pubsub(config: AgentConfig, settings: RuntimeSettings) -> bool:
    """Whether the agent takes work from a topic: a subscription is configured and a sidecar
    (DAPR_HTTP_PORT, set by Dapr) is there to deliver it."""
    if not (config.dapr.pubsub and config.dapr.subscribe):
        return False
    if not settings.dapr_http_port:
        logger.warning(
            "dapr.subscribe is set but no Dapr sidecar is present (DAPR_HTTP_PORT): "
            "not taking work from topic %s",
            config.dapr.subscribe.topic,
        )
        return False
    return True


def create_app(
    config: AgentConfig,
    settings: RuntimeSettings | None = None,
    *,
    adapter_factory: AdapterFactory = build_adapter,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """An app serving `config`'s agent. `on_fatal` is called if the agent cannot be built."""
    settings = settings or RuntimeSettings.from_environment()
    api_key = api_key_for(config.model)
    metrics = Metrics(config.name, settings.namespace)
    with_pubsub = answers_pubsub(config, settings)
    limiter = Limiter.for_agent(config, settings, metrics)
    state = RuntimeState(
        config=config,
        settings=settings,
        sessions=session_store(config, settings, metrics),
        redact=Redactor(settings.secrets(config)),
        metrics=metrics,
        publisher=DaprPublisher(settings.dapr_http_port) if with_pubsub else None,
        limiter=limiter,
    )

    # Built-in tool names stay the built-ins': an MCP tool may not take one.
    toolbox = McpToolbox(config.agent.mcp_servers, state.redact, get_args(BuiltinTool))

    def waiting_for_mcp(note: str) -> None:
        state.build_error = note or None  # /readyz says which server is not there yet, and why

    async def build() -> None:
        started = time.perf_counter()
        try:
            extra_tools: list[ToolSpec] = []
            if config.agent.mcp_servers:
                extra_tools = await toolbox.connect(settings.mcp_connect_seconds, waiting_for_mcp)
                state.build_error = None
            # Importing a framework takes seconds: keep the event loop (and /healthz) free.
            built = capped(config)  # limits.maxTokensPerRequest bounds model.maxTokens
            adapter = await asyncio.to_thread(adapter_factory, built, api_key, extra_tools)
            state.adapter = MeteredAdapter(adapter, metrics, built.model, limiter.spend)
        except Exception as exc:  # any failure to build is fatal, and must say why
            # An MCP server's error already says which and why; for others the type helps.
            why = str(exc) if isinstance(exc, McpStartupError) else f"{type(exc).__name__}: {exc}"
            state.build_error = state.redact(f"cannot build the agent: {why}")
            logger.error(state.build_error)
            if on_fatal:
                on_fatal(state.build_error)
            return
        finally:
            state.built.set()
        state.build_seconds = time.perf_counter() - started
        logger.info(
            "agent %s (%s, %s/%s) ready in %.2f s; sessions in %s; limits counted in %s%s%s",
            config.name,
            config.framework,
            config.model.provider,
            config.model.name,
            state.build_seconds,
            state.sessions.kind,
            limiter.counting,
            f"; answering {config.dapr.pubsub}/{config.dapr.subscribe.topic}"
            if with_pubsub and config.dapr.subscribe
            else "",
            f"; {len(extra_tools)} MCP tools" if config.agent.mcp_servers else "",
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(build())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # no MCP connect left half-done
        await toolbox.close()
        await state.sessions.close()
        await limiter.close()
        if state.publisher is not None:
            await state.publisher.close()

    app = FastAPI(
        title=f"{config.name} (aiagent runtime)",
        version=__version__,
        description=config.agent.description or "An AI agent served by the aiagent runtime.",
        lifespan=lifespan,
    )
    app.state.runtime = state
    for api in (invoke, chat, responses, a2a, operations):
        app.include_router(api.router)
    if with_pubsub:  # otherwise /dapr/subscribe is a 404, which Dapr reads as "no topics"
        app.include_router(pubsub.router)
    app.add_middleware(
        RuntimeMiddleware,
        metrics=state.metrics,
        max_body_bytes=settings.max_body_bytes,
        auth_token=settings.auth_token,
        app_api_token=settings.app_api_token,
        limiter=limiter,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    _install_error_handlers(app, state)
    return app


# FastAPI's 400 for a body it could not decode at all (malformed JSON is its 422).
BODY_PARSE_ERROR = "There was an error parsing the body"


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    body = {"error": {"type": error_type, "message": message, "request_id": request_id.get()}}
    return JSONResponse(status_code=status, content=body)


def _install_error_handlers(app: FastAPI, state: RuntimeState) -> None:
    def count(request: Request, error_type: str) -> None:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        state.metrics.errors.labels(route, error_type).inc()

    @app.exception_handler(RuntimeFailure)
    async def runtime_failure(request: Request, exc: RuntimeFailure) -> JSONResponse:
        count(request, exc.error_type)
        return _error(exc.status_code, exc.error_type, state.redact(exc.message))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"] if p != "body")
            problems.append(f"{where or 'body'}: {error['msg']}")
        count(request, "invalid_request")
        return _error(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # A body FastAPI cannot even decode (not UTF-8): invalid, as malformed JSON is.
            count(request, "invalid_request")
            return _error(422, "invalid_request", "body: not valid JSON (UTF-8)")
        response = _error(exc.status_code, "http_error", str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. a 405's Allow (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        count(request, "internal_error")
        return _error(500, "internal_error", "internal error; the log has details")
