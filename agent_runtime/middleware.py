"""One ASGI middleware for what every request needs: id, body limit and deadline, auth, limits,
metrics, a log line.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses flow through untouched and a client
disconnect still reaches the route, which cancels the upstream model call.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .limits import Limiter, RateLimited
from .logs import request_id
from .metrics import Metrics

logger = logging.getLogger("agent_runtime.access")

# Reachable without the bearer token: the kubelet's probes carry no credentials.
UNAUTHENTICATED_PATHS = {"/healthz", "/readyz"}
# Called by the Dapr sidecar, which authenticates with its app API token (APP_API_TOKEN, sent
# as the dapr-api-token header), never with a bearer token.
DAPR_PATH_PREFIX = "/dapr/"
# The routes that call the model, admitted by the limits (POST only): refused with a 429 before
# any of the route's work, and holding their place until the response (a stream too) ends.
# Pub/sub deliveries are admitted by their route, which answers Dapr in its own terms.
LIMITED_PATHS = {"/v1/invoke", "/v1/chat/completions", "/v1/responses", "/a2a"}


def error_body(status: int, error_type: str, message: str) -> bytes:
    body = {"error": {"type": error_type, "message": message, "request_id": request_id.get()}}
    return json.dumps(body).encode()


class RuntimeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        auth_token: str,
        app_api_token: str = "",
        limiter: Limiter | None = None,
        body_timeout_seconds: float = 30,
    ) -> None:
        self.app = app
        self.body_timeout_seconds = body_timeout_seconds
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.auth_token = auth_token.encode()
        self.app_api_token = app_api_token.encode()
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")[:128] or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            rejection = self._reject(scope, headers)
            if rejection:
                await self._respond(send_with_id, *rejection)
                return
            try:
                async with asyncio.timeout(self.body_timeout_seconds):
                    body = await self._read_body(receive)
            except TimeoutError:  # a slow-loris upload: refuse it, and close the connection
                await self._respond(
                    send_with_id,
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.body_timeout_seconds:g} s",
                )
                return
            if body is None:
                await self._respond(
                    send_with_id,
                    413,
                    "request_too_large",
                    f"request body is larger than {self.max_body_bytes} bytes",
                )
                return
            limited = scope["method"] == "POST" and scope["path"] in LIMITED_PATHS
            limiter = self.limiter if limited else None
            if limiter is not None:
                try:
                    await limiter.admit()
                except RateLimited as refusal:
                    self.metrics.errors.labels(scope["path"], refusal.error_type).inc()
                    await self._respond(
                        send_with_id,
                        refusal.status_code,
                        refusal.error_type,
                        refusal.message,
                        [(b"retry-after", str(refusal.retry_after).encode())],
                    )
                    return
            try:
                await self.app(scope, _replay(body, receive), send_with_id)
            finally:
                if limiter is not None:
                    limiter.release()
        finally:
            self.metrics.in_flight.dec()
            route = _route_template(scope)
            if route == "unmatched" and scope["path"] in LIMITED_PATHS:
                route = scope["path"]  # refused before routing: still the route it asked for
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if scope["path"] not in UNAUTHENTICATED_PATHS:  # probes every few seconds: no log
                logger.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status["code"],
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status["code"],
                        "duration_ms": round(elapsed * 1000, 1),
                    },
                )
            request_id.reset(token)

    def _reject(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        path = scope["path"]
        if self.app_api_token and path.startswith(DAPR_PATH_PREFIX):
            sidecar = headers.get("dapr-api-token", "").encode()
            if not (hmac.compare_digest(sidecar, self.app_api_token) or self._bearer_ok(headers)):
                return 401, "unauthorized", "missing or wrong dapr-api-token"
        elif self.auth_token and path not in UNAUTHENTICATED_PATHS:
            if not self._bearer_ok(headers):
                return 401, "unauthorized", "missing or wrong bearer token"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return (
                413,
                "request_too_large",
                f"request body is larger than {self.max_body_bytes} bytes",
            )
        return None

    def _bearer_ok(self, headers: dict[str, str]) -> bool:
        if not self.auth_token:
            return False
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.auth_token
        )

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (chunked uploads included)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        error_type: str,
        message: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [(b"content-type", b"application/json"), *(extra_headers or [])]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if status in (408, 413):
            # The body was not read (whole): what is left of it must not be taken for the next
            # request on this connection, so the server closes it after this answer.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": error_body(status, error_type, message)})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the app the buffered body, then passes through (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _route_template(scope: Scope) -> str:
    # The matched route's template keeps label cardinality bounded (no raw paths).
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
