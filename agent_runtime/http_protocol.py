"""uvicorn's HTTP/1.1 protocol with a deadline and a size cap on each request's head.

uvicorn times out only an idle keep-alive connection: a client that opens a connection and
sends nothing, or sends its headers a byte at a time (slow-loris), holds a connection and a
file descriptor for ever, and its headers (httptools keeps every one) grow without bound. Here
the request line and headers must arrive within a deadline of the connection or of the
request's first byte, and stay under a size, or the connection gets a 408 (431) and is closed.
The body has its own deadline, kept by the middleware (it reads the body).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.server import ServerState

# As nginx's large_client_header_buffers (4 x 8k), with room to spare.
MAX_HEAD_BYTES = 64 * 1024


def _refusal(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": {"type": reason.lower().replace(" ", "_"), "message": message}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


def protocol_with_head_deadline(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's protocol class (httptools when installed, else h11) with the head deadline."""

    class HeadDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        def __init__(
            self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kw: Any
        ) -> None:
            super().__init__(config, server_state, app_state, **kw)
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            before = self.cycle
            # No request being served: these bytes begin the next one (a body's bytes arrive
            # while its request is served, and are the middleware's to time).
            if self._head_timer is None and (before is None or before.response_complete):
                self._arm()
            super().data_received(data)
            if self.cycle is not before:  # a request's head is complete: it is being served
                self._disarm()
            elif self._head_timer is not None:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._refuse(
                        _refusal(
                            431,
                            "Request Header Fields Too Large",
                            f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
                        )
                    )

        def _arm(self) -> None:
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            message = f"the request's headers did not arrive within {header_timeout:g} s"
            self._refuse(_refusal(408, "Request Timeout", message))

        def _refuse(self, answer: bytes) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            # An answer only if no earlier response is still being written on the connection.
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(answer)
            self.transport.close()

    return HeadDeadlineProtocol
