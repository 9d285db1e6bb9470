"""The runtime's HTTP API, one module per protocol; each exports a FastAPI `router`.

- `invoke`: `POST /v1/invoke`, our own simple API (input, session_id, usage).
- `chat`: `POST /v1/chat/completions`, the OpenAI chat completions API.
- `responses`: `POST /v1/responses`, the OpenAI Responses API.
- `a2a`: A2A over JSON-RPC (`POST /a2a`, 1.0 and 0.3) and the agent card; `a2a_executor`
  runs tasks on the adapter, `a2a_tasks` keeps them in the session store.
- `operations`: `/healthz`, `/readyz`, `/metrics`.
- `pubsub`: Dapr's programmatic subscription and message delivery.
- `common`: what they share (the runtime state dependency, error bodies, input checks).
"""

import os

# Before the a2a-sdk is imported: its tracing decorators open ~55 OpenTelemetry spans per A2A
# request. The runtime configures no OpenTelemetry SDK, so each is a no-op that still costs
# context switches (about 1 ms of CPU per request, measured with cProfile). A deployment that
# does export traces sets OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true (spec.env) to get them.
os.environ.setdefault("OTEL_INSTRUMENTATION_A2A_SDK_ENABLED", "false")
