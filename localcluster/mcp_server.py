"""A local MCP server (the official SDK's FastMCP over streamable HTTP) where pods reach it: on the
node's address, wanting a bearer token, with the tools examples/mcp-agent.yaml allows. The demo
and the real-node tests point that example at it, as the model server stands in for a provider."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import uvicorn
from mcp.server.fastmcp import FastMCP
from starlette.types import ASGIApp, Receive, Scope, Send

from .kubectl import Kubectl
from .procs import free_port


class IssueTracker:
    """Tools `search_issues` and `get_issue`; `found` records every search that ran."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.token = f"mcp-node-{uuid.uuid4().hex}"  # goes in a Secret; must show nowhere else
        self.found: dict[str, str] = {}  # query -> the issue it answered (unguessable)
        self.unauthorized = 0
        # Given the node's address, FastMCP's DNS-rebinding guard (loopback only) stays off.
        mcp = FastMCP("issues", host=host, log_level="WARNING")

        @mcp.tool()
        def search_issues(query: str) -> str:
            """Search the issues; returns the best match."""
            self.found[query] = f"issue-{uuid.uuid4().hex[:12]}"
            return self.found[query]

        @mcp.tool()
        def get_issue(number: int) -> str:
            """One issue by number."""
            return f"issue {number}: the login page is slow"

        self.port = free_port(host)
        config = uvicorn.Config(
            self._gate(mcp.streamable_http_app()), host=host, port=self.port, log_level="warning"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    def _gate(self, app: ASGIApp) -> ASGIApp:
        async def gate(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                if headers.get("authorization") != f"Bearer {self.token}":
                    self.unauthorized += 1
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await app(scope, receive, send)

        return gate

    def start(self) -> IssueTracker:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the MCP server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def point_mcp_servers_at(
    manifest: dict[str, Any], server: IssueTracker, kubectl: Kubectl, namespace: str
) -> None:
    """Aim the manifest's MCP servers at ``server`` and create (or update) the Secrets their
    headers name, holding the server's token, as a user would before applying it."""
    for entry in manifest["spec"]["agent"].get("mcpServers") or []:
        entry["url"] = server.url
        for header in entry.get("headers") or []:
            ref = (header.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                kubectl.apply_secret(ref["name"], ref["key"], f"Bearer {server.token}", namespace)
