"""A2A: the agent card at `/.well-known/agent-card.json`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .. import __version__
from .common import State

router = APIRouter(tags=["a2a"])


@router.get("/.well-known/agent-card.json")
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
