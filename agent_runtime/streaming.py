"""Streaming answers: drive an adapter's stream in a task of its own, and send it as server-sent
events while watching for the client to hang up.

Two things make "client disconnects → the provider call stops" hold:
- the stream runs in its own task, because closing an async generator does not reach work a
  framework started underneath it (LangGraph runs the model call in a task of its own), while
  cancelling the driving task does;
- `EventStreamResponse` races each piece against `http.disconnect` itself, in plain asyncio.
  Starlette's StreamingResponse cancels through an anyio cancel scope whose level-triggered
  cancellation also interrupts the framework's cleanup, leaving the provider request running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

_END = object()


class StreamPump:
    def __init__(self, source: AsyncIterator[str]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._task = asyncio.create_task(self._drive(source))

    async def _drive(self, source: AsyncIterator[str]) -> None:
        try:
            async for piece in source:
                await self._queue.put(piece)
        except Exception as exc:  # handed to the reader, who maps it to a status
            await self._queue.put(exc)
        finally:
            await self._queue.put(_END)

    async def next(self) -> str:
        """The next piece; StopAsyncIteration at the end; the source's error if it failed."""
        item = await self._queue.get()
        if item is _END:
            await self._queue.put(_END)  # stay at the end for any later call
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return str(item)

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class EventStreamResponse(Response):
    """`text/event-stream` from an async iterator of ready-made `data: ...` events."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], headers: dict[str, str] | None = None) -> None:
        # No Content-Length: the body is open-ended.
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.lower().encode(), v.encode()) for k, v in (headers or {}).items()
        ]
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        hung_up = asyncio.create_task(_wait_for_disconnect(receive))
        events = aiter(self._events)
        try:
            while True:
                piece = asyncio.ensure_future(anext(events))
                await asyncio.wait({piece, hung_up}, return_when=asyncio.FIRST_COMPLETED)
                if not piece.done():  # the client left: stop, and stop the provider call
                    piece.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await piece
                    return
                try:
                    text = piece.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hung_up.cancel()
            await events.aclose()  # type: ignore[attr-defined]


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
