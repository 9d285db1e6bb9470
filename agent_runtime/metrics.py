"""Prometheus metrics of one runtime, in a registry of its own (so tests can run several apps),
and the metering of every model call.

Every series carries `agent` (agent.yaml's name) and `namespace` (AIAGENT_NAMESPACE, from the
downward API; empty outside a cluster), so one Prometheus query can sum or split by agent.
The model's usage follows the OpenTelemetry GenAI semantic conventions in Prometheus form:
`gen_ai.client.token.usage` is `gen_ai_client_token_usage`, `gen_ai.client.operation.duration`
is `gen_ai_client_operation_duration_seconds`, attribute dots become underscores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .adapters.base import AgentAdapter, AgentReply, ChatMessage, Usage
from .config import ModelConfig
from .errors import RuntimeFailure

# Every metric the runtime exports, by the name its family has in the registry (Prometheus adds
# `_total` to a counter's samples and `_bucket`/`_sum`/`_count` to a histogram's).
HTTP_REQUESTS = "aiagent_http_requests"
HTTP_DURATION = "aiagent_http_request_duration_seconds"
HTTP_IN_FLIGHT = "aiagent_http_requests_in_flight"
ERRORS = "aiagent_errors"
LLM_TOKENS = "aiagent_llm_tokens"
PUBSUB_MESSAGES = "aiagent_pubsub_messages"
SESSION_CONFLICTS = "aiagent_session_conflicts"
RATE_LIMITED = "aiagent_rate_limited"
LIMIT_STORE_FALLBACKS = "aiagent_limit_store_fallbacks"
GEN_AI_TOKEN_USAGE = "gen_ai_client_token_usage"
GEN_AI_DURATION = "gen_ai_client_operation_duration_seconds"
METRIC_NAMES = (
    HTTP_REQUESTS,
    HTTP_DURATION,
    HTTP_IN_FLIGHT,
    ERRORS,
    LLM_TOKENS,
    PUBSUB_MESSAGES,
    SESSION_CONFLICTS,
    RATE_LIMITED,
    LIMIT_STORE_FALLBACKS,
    GEN_AI_TOKEN_USAGE,
    GEN_AI_DURATION,
)
SCOPE_LABELS = ("agent", "namespace")
# The values `limit` of aiagent_rate_limited takes.
LIMIT_KINDS = ("requests", "tokens", "concurrency", "budget_requests", "budget_tokens")

# One agent invocation may call the model several times (tool calls): usage and time are the
# invocation's, so the operation is the semantic conventions' `invoke_agent`, not `chat`.
GEN_AI_OPERATION = "invoke_agent"
# gen_ai.provider.name: the conventions' well-known value where there is one.
GEN_AI_PROVIDERS = {"azure": "azure.ai.openai"}
# The conventions' recommended bucket boundaries.
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16 ... 67108864
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02 ... 81.92

M = TypeVar("M", Counter, Gauge, Histogram)


class Scoped(Generic[M]):
    """A metric whose `agent` and `namespace` labels are filled in: `labels()` takes the rest."""

    def __init__(self, metric: M, agent: str, namespace: str) -> None:
        self._metric: M = metric
        self._scope = (agent, namespace)

    def labels(self, *values: str) -> M:
        child: M = self._metric.labels(*self._scope, *values)
        return child


class Metrics:
    def __init__(self, agent: str = "", namespace: str = "") -> None:
        self.registry = CollectorRegistry()
        self.agent, self.namespace = agent, namespace

        def scoped(metric: M) -> Scoped[M]:
            return Scoped(metric, agent, namespace)

        def labels(*names: str) -> list[str]:
            return [*SCOPE_LABELS, *names]

        self.requests = scoped(
            Counter(
                HTTP_REQUESTS,
                "HTTP requests by route, method and status code.",
                labels("route", "method", "status"),
                registry=self.registry,
            )
        )
        self.latency = scoped(
            Histogram(
                HTTP_DURATION,
                "Time from request to the end of the response, by route.",
                labels("route"),
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                registry=self.registry,
            )
        )
        self.in_flight = scoped(
            Gauge(
                HTTP_IN_FLIGHT,
                "Requests being served right now.",
                labels(),
                registry=self.registry,
            )
        ).labels()
        self.errors = scoped(
            Counter(
                ERRORS,
                "Requests that failed, by route and error type (rate_limited: refused by a "
                "limit, see aiagent_rate_limited).",
                labels("route", "type"),
                registry=self.registry,
            )
        )
        self.tokens = scoped(
            Counter(
                LLM_TOKENS,
                "Tokens exchanged with the model provider, by model and direction (in/out).",
                labels("model", "direction"),
                registry=self.registry,
            )
        )
        self.pubsub_messages = scoped(
            Counter(
                PUBSUB_MESSAGES,
                "Pub/sub messages delivered by Dapr, by topic and the outcome the runtime "
                "answered: success (answer published), drop (bad input: dead-lettered, never "
                "retried), retry (a failure after the runtime's own attempts, or over a limit: "
                "Dapr retries or dead-letters).",
                labels("topic", "outcome"),
                registry=self.registry,
            )
        )
        self.session_conflicts = scoped(
            Counter(
                SESSION_CONFLICTS,
                "Session saves refused because another turn of the session was saved first "
                "(each one is merged and saved again).",
                labels(),
                registry=self.registry,
            )
        ).labels()
        self.rate_limited = scoped(
            Counter(
                RATE_LIMITED,
                "Requests (and pub/sub deliveries) refused before reaching the model, by the "
                "limit they met: requests, tokens, concurrency, budget_requests, budget_tokens.",
                labels("limit"),
                registry=self.registry,
            )
        )
        self.limit_store_fallbacks = scoped(
            Counter(
                LIMIT_STORE_FALLBACKS,
                "Limit counters kept in this pod alone because the Dapr state store failed.",
                labels(),
                registry=self.registry,
            )
        ).labels()
        self.token_usage = scoped(
            Histogram(
                GEN_AI_TOKEN_USAGE,
                "Tokens used per model operation (OpenTelemetry gen_ai.client.token.usage), "
                "by gen_ai_token_type: input or output.",
                labels(
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "gen_ai_token_type",
                ),
                buckets=TOKEN_BUCKETS,
                registry=self.registry,
            )
        )
        self.operation_duration = scoped(
            Histogram(
                GEN_AI_DURATION,
                "Time of each model operation (OpenTelemetry gen_ai.client.operation.duration); "
                "error_type is empty for a success.",
                labels(
                    "gen_ai_operation_name",
                    "gen_ai_provider_name",
                    "gen_ai_request_model",
                    "error_type",
                ),
                buckets=DURATION_BUCKETS,
                registry=self.registry,
            )
        )
        for kind in LIMIT_KINDS:  # at zero from the start, so a rate() has a first sample
            self.rate_limited.labels(kind)

    def model_call(
        self, model: ModelConfig, usage: Usage, seconds: float, error_type: str = ""
    ) -> None:
        """Meter one agent invocation: its tokens (as the provider reported them) and time."""
        provider = GEN_AI_PROVIDERS.get(model.provider, model.provider)
        common = (GEN_AI_OPERATION, provider, model.name)
        self.operation_duration.labels(*common, error_type).observe(seconds)
        if error_type and not usage.total_tokens:
            return  # nothing reported: no usage to record (the conventions say not to guess)
        self.token_usage.labels(*common, "input").observe(usage.input_tokens)
        self.token_usage.labels(*common, "output").observe(usage.output_tokens)
        if usage.input_tokens:
            self.tokens.labels(model.name, "in").inc(usage.input_tokens)
        if usage.output_tokens:
            self.tokens.labels(model.name, "out").inc(usage.output_tokens)


def error_type_of(exc: BaseException) -> str:
    if isinstance(exc, RuntimeFailure):
        return exc.error_type
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return type(exc).__name__


class MeteredAdapter:
    """The agent with every call metered and its tokens spent on the limits (`spend`, awaited
    before the answer is handed on, so the next request already sees them)."""

    def __init__(
        self,
        inner: AgentAdapter,
        metrics: Metrics,
        model: ModelConfig,
        spend: Callable[[int], Awaitable[None]],
    ) -> None:
        self.framework = inner.framework
        self._inner = inner
        self._metrics = metrics
        self._model = model
        self._spend = spend

    async def invoke(self, messages: list[ChatMessage]) -> AgentReply:
        started = time.perf_counter()
        try:
            reply = await self._inner.invoke(messages)
        except BaseException as exc:
            self._metrics.model_call(
                self._model, Usage(), time.perf_counter() - started, error_type_of(exc)
            )
            raise
        self._metrics.model_call(self._model, reply.usage, time.perf_counter() - started)
        await self._spend(reply.usage.total_tokens)
        return reply

    async def stream(self, messages: list[ChatMessage], usage: Usage) -> AsyncIterator[str]:
        started = time.perf_counter()
        try:
            async for piece in self._inner.stream(messages, usage):
                yield piece
        except BaseException as exc:
            # A stream cut short (an error, the client gone) still spent what was reported.
            self._metrics.model_call(
                self._model, usage, time.perf_counter() - started, error_type_of(exc)
            )
            raise
        self._metrics.model_call(self._model, usage, time.perf_counter() - started)
        await self._spend(usage.total_tokens)
