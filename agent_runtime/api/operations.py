"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from .common import ErrorResponse, State

router = APIRouter(tags=["operations"])


class HealthResponse(BaseModel):
    status: str
    framework: str | None = None


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """Liveness: the process serves HTTP."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def readyz(state: State) -> Any:
    """Readiness: the agent is built and can take requests."""
    if state.adapter is None:
        message = state.build_error or "the agent is still being built"
        return JSONResponse(
            status_code=503, content={"error": {"type": "not_ready", "message": message}}
        )
    return HealthResponse(status="ready", framework=state.config.framework)


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
