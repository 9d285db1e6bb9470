"""The parts of the Dapr sidecar's HTTP API the runtime calls besides state: publishing."""

from __future__ import annotations

import json
from typing import Any

import httpx

from .errors import RuntimeFailure


class PublishError(RuntimeFailure):
    """The sidecar did not take a message for publishing."""

    status_code = 502
    error_type = "publish_error"


class DaprPublisher:
    """`POST /v1.0/publish/<pubsub>/<topic>`: Dapr wraps the JSON data in a CloudEvent."""

    def __init__(self, http_port: int, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}/v1.0/publish", timeout=timeout
        )

    async def publish(
        self, pubsub: str, topic: str, data: dict[str, Any], traceparent: str | None = None
    ) -> None:
        headers = {"content-type": "application/json"}
        if traceparent:  # the answer joins the question's trace
            headers["traceparent"] = traceparent
        try:
            response = await self._client.post(
                f"/{pubsub}/{topic}", content=json.dumps(data), headers=headers
            )
        except httpx.HTTPError as exc:
            raise PublishError(f"Dapr sidecar unreachable for publishing: {exc}") from None
        if response.status_code not in (200, 204):
            raise PublishError(
                f"Dapr refused to publish to {pubsub}/{topic}: "
                f"{response.status_code} {response.text[:200]}"
            )

    async def close(self) -> None:
        await self._client.aclose()
