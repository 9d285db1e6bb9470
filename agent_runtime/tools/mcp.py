"""Tools from MCP servers over streamable HTTP: one session per server for the life of the
process, each allowed tool offered to the model as a ToolSpec named `<server>_<tool>`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..errors import Redactor
from ..mcp_config import McpServer
from .base import ToolSpec

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

logger = logging.getLogger("agent_runtime.mcp")

MAX_RESULT_CHARS = 64 * 1024  # what one tool answer may add to the model's context
MAX_TOOL_NAME = 64  # OpenAI's limit on function names
MAX_RETRY_DELAY = 5.0
# Connecting (initialize, list the tools) may take longer than a short per-call timeout allows
# on a busy node; startup retries meanwhile anyway.
MIN_CONNECT_SECONDS = 10


class McpStartupError(Exception):
    """An MCP server the agent cannot start without: unreachable, refusing, or lacking a tool.
    The message names the server and says why, and holds no secret."""


def tool_name(server: str, tool: str) -> str:
    """The name the model sees: `<server>_<tool>`, in the characters and length function names
    may have (a long name keeps a digest of the whole, so two never meet)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}_{tool}")
    if len(name) > MAX_TOOL_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_TOOL_NAME - 9]}_{digest}"
    return name


def display_url(url: str) -> str:
    """The URL without user info or query, which may hold credentials: safe for messages."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def headers_of(server: McpServer) -> dict[str, str]:
    """The server's headers, secret ones read from their environment variables."""
    headers: dict[str, str] = {}
    for header in server.headers:
        if header.value is not None:
            headers[header.name] = header.value
            continue
        value = os.environ.get(header.value_from_env or "", "")
        if not value:
            raise McpStartupError(
                f"MCP server {server.name!r}: header {header.name} comes from the environment "
                f"variable {header.value_from_env}, which is not set"
            )
        headers[header.name] = value
    return headers


def _reason(exc: BaseException) -> str:
    """One line on why a connection or a call failed (the innermost error of a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    error = getattr(exc, "error", None)  # mcp.McpError carries the JSON-RPC error
    message = getattr(error, "message", None) or str(exc) or "no detail"
    return f"{type(exc).__name__}: {message}"[:300]


def result_text(result: CallToolResult) -> str:
    """A tool result as the text the model reads; an error result starts with "error: "."""
    parts: list[str] = []
    for item in result.content:
        if item.type == "text":
            parts.append(item.text)
        elif item.type == "resource":
            parts.append(getattr(item.resource, "text", None) or f"[resource {item.resource.uri}]")
        elif item.type == "resource_link":
            parts.append(f"[resource {item.uri}]")
        else:  # images and audio: the adapters pass text only
            parts.append(f"[{item.type} content, {item.mimeType}]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent))
    text = "\n".join(parts)[:MAX_RESULT_CHARS]
    return f"error: {text or 'the tool failed'}" if result.isError else text


class _Connection:
    """One server's session, held open by a task of its own: the SDK's transport lives in anyio
    task groups, which the same task must enter and leave."""

    def __init__(self, server: McpServer, headers: dict[str, str]) -> None:
        self.server = server
        self.headers = headers
        self.session: ClientSession | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reopen = asyncio.Lock()

    async def open(self) -> list[Tool]:
        """Connect, initialize and list the tools, within the server's timeout (or 10 s)."""
        opened: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(opened), name=f"mcp-{self.server.name}")
        seconds = max(self.server.timeout_seconds, MIN_CONNECT_SECONDS)
        try:
            async with asyncio.timeout(seconds):
                return await opened
        except TimeoutError:
            await self.close()
            raise TimeoutError(f"no answer within {seconds} s") from None
        except BaseException:
            await self.close()
            raise

    async def _hold(self, opened: asyncio.Future[list[Tool]]) -> None:
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        seconds = self.server.timeout_seconds
        # The read timeout also bounds the server's idle event stream: keep it long.
        timeout = httpx.Timeout(seconds, read=max(300.0, seconds + 5.0))
        try:
            async with (
                httpx.AsyncClient(headers=self.headers, timeout=timeout) as http,
                streamable_http_client(self.server.url, http_client=http) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                tools = await _all_tools(session)
                self.session = session
                if not opened.done():
                    opened.set_result(tools)
                await self._stop.wait()
        except Exception as exc:  # the SDK raises groups of errors from its task groups
            if not opened.done():
                opened.set_exception(exc)
            else:
                logger.warning(
                    "MCP server %s: the session ended: %s", self.server.name, _reason(exc)
                )
        finally:
            self.session = None

    async def live_session(self) -> ClientSession:
        """The session, opened anew if it ended (the server restarted, or a call broke it)."""
        if self.session is None:
            async with self._reopen:
                if self.session is None:
                    await self.close()
                    await self.open()
                    logger.info("MCP server %s: reconnected", self.server.name)
        assert self.session is not None  # open() returned, so _hold set it
        return self.session

    async def close(self) -> None:
        """End the session (the SDK tells the server so) and wait for its task."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(task)
        except (TimeoutError, Exception):
            task.cancel()
        self.session = None


async def _all_tools(session: ClientSession) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.nextCursor
        if not cursor:
            return tools


class McpToolbox:
    """The agent's MCP servers: connected at startup, closed at shutdown."""

    def __init__(
        self, servers: Sequence[McpServer], redact: Redactor, reserved_names: Sequence[str] = ()
    ) -> None:
        self._servers = list(servers)
        self._redact = redact
        self._reserved = set(reserved_names)  # the built-in tools' names
        self._connections: list[_Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    async def connect(
        self, patience: float, on_wait: Callable[[str], None] = lambda _: None
    ) -> list[ToolSpec]:
        """Every allowed tool of every server. A server that cannot be reached is tried again
        for `patience` seconds (`on_wait` hears why it is not there yet); then, or at once for
        a server that lacks an allow-listed tool, McpStartupError."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connections = [_Connection(s, headers_of(s)) for s in self._servers]
        # The SDK takes a while to import: not on the event loop, which serves /readyz meanwhile.
        await asyncio.to_thread(importlib.import_module, "mcp.client.streamable_http")
        deadline = time.monotonic() + patience
        waiting: dict[str, str] = {}

        def wait_note(server: str, note: str | None) -> None:
            if note is None:
                waiting.pop(server, None)
            else:
                waiting[server] = note
            on_wait(self._redact("; ".join(waiting.values())))

        try:
            async with asyncio.TaskGroup() as group:
                found = [
                    group.create_task(self._tools_of(c, deadline, wait_note))
                    for c in self._connections
                ]
        except BaseExceptionGroup as failures:
            await self.close()
            first = failures.exceptions[0]
            raise McpStartupError(self._redact(str(first))) from None
        specs = [spec for task in found for spec in task.result()]
        self._refuse_clashes(specs)
        return specs

    async def _tools_of(
        self,
        connection: _Connection,
        deadline: float,
        wait_note: Callable[[str, str | None], None],
    ) -> list[ToolSpec]:
        server = connection.server
        where = f"MCP server {server.name!r} at {display_url(server.url)}"
        delay = 0.5
        while True:
            try:
                tools = await connection.open()
                break
            except Exception as exc:
                reason = _reason(exc)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise McpStartupError(f"{where} is unreachable: {reason}") from None
                note = f"waiting for {where}: {reason} (trying {left:.0f} s more)"
                logger.warning(self._redact(note))
                wait_note(server.name, note)
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, MAX_RETRY_DELAY)
        wait_note(server.name, None)
        offered = {tool.name: tool for tool in tools}
        missing = [name for name in server.tools if name not in offered]
        if missing:
            raise McpStartupError(
                f"{where} has no tool {', '.join(missing)} (listed in tools); it offers: "
                f"{', '.join(sorted(offered)) or 'no tools'}"
            )
        allowed = [offered[name] for name in server.tools] if server.tools else tools
        logger.info(
            "MCP server %s: %d of its %d tools offered to the model",
            server.name,
            len(allowed),
            len(tools),
        )
        return [self._spec(connection, tool) for tool in allowed]

    def _refuse_clashes(self, specs: list[ToolSpec]) -> None:
        seen = set(self._reserved)
        for spec in specs:
            if spec.name in seen:
                raise McpStartupError(
                    f"two tools would be offered to the model as {spec.name}: rename an MCP "
                    "server (its name prefixes its tools) or leave one tool out of its tools list"
                )
            seen.add(spec.name)

    def _spec(self, connection: _Connection, tool: Tool) -> ToolSpec:
        server = connection.server
        seconds = server.timeout_seconds
        label = f"tool {tool.name} of MCP server {server.name}"

        async def on_loop(arguments: dict[str, Any]) -> str:
            try:
                session = await connection.live_session()
                async with asyncio.timeout(seconds):
                    result = await session.call_tool(tool.name, arguments)
            except TimeoutError:
                return f"error: {label} did not answer within {seconds} s (timeoutSeconds)"
            except Exception as exc:
                # A broken session (the server restarted, say) is opened anew on the next call.
                await connection.close()
                logger.warning("%s failed: %s", label, self._redact(_reason(exc)))
                return self._redact(f"error: {label} failed: {_reason(exc)}")
            return self._redact(result_text(result))

        async def call(arguments: dict[str, Any]) -> str:
            if asyncio.get_running_loop() is self._loop:
                return await on_loop(arguments)
            # Another thread's loop: the session belongs to the loop that opened it.
            loop = self._owner_loop()
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(on_loop(arguments), loop)
            )

        def call_blocking(arguments: dict[str, Any]) -> str:
            if threading.get_ident() == self._loop_thread:
                # Blocking here would stop the very loop the call needs: a deadlock.
                raise RuntimeError(
                    f"{label}: call_blocking was called on the event loop thread; a framework "
                    "must use call() there, or run the tool in a worker thread"
                )
            future = asyncio.run_coroutine_threadsafe(on_loop(arguments), self._owner_loop())
            try:
                return future.result(timeout=seconds + 10)
            except concurrent.futures.TimeoutError:
                future.cancel()
                return f"error: {label} did not answer within {seconds} s (timeoutSeconds)"

        parameters = dict(tool.inputSchema or {})
        parameters.setdefault("type", "object")
        parameters.setdefault("properties", {})
        description = tool.description or tool.title or f"The {label}."
        return ToolSpec(
            tool_name(server.name, tool.name), description, parameters, call, call_blocking
        )

    def _owner_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the MCP servers are not connected")
        return self._loop

    async def close(self) -> None:
        """End every session; safe to call at any point, and more than once."""
        await asyncio.gather(*(c.close() for c in self._connections), return_exceptions=True)
