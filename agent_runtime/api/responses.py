"""`POST /v1/responses`: the agent behind the OpenAI Responses API (not served yet)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["openai"])
