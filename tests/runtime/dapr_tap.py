"""A small app between daprd and the runtime, for the pub/sub tests, on real sockets.

daprd serves one app, and its in-memory pub/sub reaches only that app, so whatever watches the
reply and dead-letter topics must be the app daprd delivers to. The tap is that app:

- `GET /dapr/subscribe` answers the runtime's own subscriptions (fetched from the runtime)
  plus one per watched topic, routed to the tap;
- messages of a watched topic are recorded (`received[topic]`, the CloudEvents) and answered
  SUCCESS;
- everything else (the runtime's message route above all) is forwarded to the runtime
  unchanged, headers and status included, and each delivery to the runtime is recorded
  (`deliveries`: the CloudEvent and what the runtime answered), so a test can count how many
  times Dapr delivered a message and what it was told.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localcluster.procs import free_port

TAPPED = "/tap"
# Headers that describe one hop, not the message.
_HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding"}


@dataclass(frozen=True)
class Delivery:
    event: dict[str, Any]  # the CloudEvent daprd delivered
    status_code: int  # the runtime's HTTP status
    answer: dict[str, Any]  # the runtime's JSON answer ({"status": "SUCCESS" | "DROP" | "RETRY"})

    @property
    def status(self) -> str:
        return str(self.answer.get("status", ""))


class DaprTap:
    def __init__(self, pubsub: str, watch: list[str], target: str = "") -> None:
        self.pubsub = pubsub
        self.port = free_port()
        self.target = target  # the runtime's base URL; set before daprd asks for subscriptions
        self.received: dict[str, list[dict[str, Any]]] = {topic: [] for topic in watch}
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> DaprTap:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Dapr tap did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    # -- what the tests read ------------------------------------------------------------------

    def events(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received[topic])

    def deliveries_of(self, match: Callable[[dict[str, Any]], bool]) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if match(d.event)]

    def wait_for(
        self, topic: str, match: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """The first CloudEvent received on `topic` that `match`es, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(topic):
                if match(event):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"nothing matching arrived on {topic}; got {self.events(topic)}")

    # -- the app ------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        client = httpx.AsyncClient(timeout=120)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            yield
            await client.aclose()

        def passed_on(request: Request) -> dict[str, str]:
            return {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}

        async def subscribe(request: Request) -> Response:
            runtime = await client.get(f"{self.target}/dapr/subscribe", headers=passed_on(request))
            ours = runtime.json() if runtime.status_code == 200 else []
            watched = [
                {"pubsubname": self.pubsub, "topic": topic, "route": f"{TAPPED}/{topic}"}
                for topic in self.received
            ]
            return JSONResponse([*ours, *watched])

        async def tapped(request: Request) -> Response:
            topic = request.path_params["topic"]
            event = json.loads(await request.body())
            with self._lock:
                self.received[topic].append(event)
            return JSONResponse({"status": "SUCCESS"})

        async def forward(request: Request) -> Response:
            body = await request.body()
            response = await client.request(
                request.method,
                f"{self.target}{request.url.path}",
                params=request.query_params,
                content=body,
                headers=passed_on(request),
            )
            if request.method == "POST":
                try:
                    event, answer = json.loads(body), response.json()
                except ValueError:
                    event, answer = {}, {}
                with self._lock:
                    self.deliveries.append(Delivery(event, response.status_code, answer))
            return Response(
                response.content,
                status_code=response.status_code,
                media_type=response.headers.get("content-type"),
            )

        return Starlette(
            routes=[
                Route("/dapr/subscribe", subscribe, methods=["GET"]),
                Route(f"{TAPPED}/{{topic:path}}", tapped, methods=["POST"]),
                Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE"]),
            ],
            lifespan=lifespan,
        )
