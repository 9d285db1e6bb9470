"""Prometheus metrics of one runtime, in a registry of its own (so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "aiagent_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aiagent_http_request_duration_seconds",
            "Time from request to the end of the response, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "aiagent_http_requests_in_flight",
            "Requests being served right now.",
            registry=self.registry,
        )
        self.errors = Counter(
            "aiagent_errors",
            "Requests that failed, by route and error type.",
            ["route", "type"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "aiagent_llm_tokens",
            "Tokens exchanged with the model provider, by model and direction (in/out).",
            ["model", "direction"],
            registry=self.registry,
        )

        self.pubsub_messages = Counter(
            "aiagent_pubsub_messages",
            "Pub/sub messages delivered by Dapr, by topic and the outcome the runtime answered: "
            "success (answer published), drop (bad input: dead-lettered, never retried), "
            "retry (a failure after the runtime's own attempts: Dapr retries or dead-letters).",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.session_conflicts = Counter(
            "aiagent_session_conflicts",
            "Session saves refused because another turn of the session was saved first "
            "(each one is merged and saved again).",
            registry=self.registry,
        )

    def count_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        if input_tokens:
            self.tokens.labels(model, "in").inc(input_tokens)
        if output_tokens:
            self.tokens.labels(model, "out").inc(output_tokens)
