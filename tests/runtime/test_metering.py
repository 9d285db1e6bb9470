"""Metering on /metrics of a real runtime: tokens in and out, requests, errors and time per agent
and namespace, in the OpenTelemetry GenAI names (gen_ai_client_token_usage,
gen_ai_client_operation_duration_seconds) beside the runtime's own aiagent_* metrics."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from agent_runtime.metrics import LIMIT_KINDS, METRIC_NAMES, Metrics
from localcluster.model_server import ModelServer

from .conftest import RuntimeFactory, agent_config, metric

NAMESPACE = "team-a"


def model_labels(agent: str) -> dict[str, str]:
    return {
        "agent": agent,
        "namespace": NAMESPACE,
        "gen_ai_operation_name": "invoke_agent",
        "gen_ai_provider_name": "openai-compatible",
        "gen_ai_request_model": "fake-model",
    }


def test_the_metric_names_are_listed_in_one_place() -> None:
    assert {family.name for family in Metrics().registry.collect()} == set(METRIC_NAMES)


def test_model_calls_are_metered_by_agent_and_namespace(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    config = agent_config("langchain", model_server, name="metered-bot")
    runtime = runtime_factory(config, env={"AIAGENT_NAMESPACE": NAMESPACE})
    invoked = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "meter me"}, timeout=30)
    assert invoked.status_code == 200
    client = openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "and me, streamed"}]
    chunks = list(
        client.chat.completions.create(
            model="agent",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = next(chunk.usage for chunk in chunks if chunk.usage)
    tokens_in = invoked.json()["usage"]["input_tokens"] + streamed.prompt_tokens
    tokens_out = invoked.json()["usage"]["output_tokens"] + streamed.completion_tokens

    text = httpx.get(f"{runtime.base_url}/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["gen_ai_client_token_usage"].type == "histogram"
    assert families["gen_ai_client_operation_duration_seconds"].type == "histogram"
    for family in families.values():  # every series says whose it is
        for sample in family.samples:
            assert sample.labels["agent"] == "metered-bot", sample
            assert sample.labels["namespace"] == NAMESPACE, sample

    labels = model_labels("metered-bot")
    usage = "gen_ai_client_token_usage"
    assert metric(text, f"{usage}_count", gen_ai_token_type="input", **labels) == 2
    assert metric(text, f"{usage}_sum", gen_ai_token_type="input", **labels) == tokens_in
    assert metric(text, f"{usage}_sum", gen_ai_token_type="output", **labels) == tokens_out
    duration = "gen_ai_client_operation_duration_seconds"
    assert metric(text, f"{duration}_count", error_type="", **labels) == 2
    assert metric(text, f"{duration}_sum", error_type="", **labels) > 0
    assert metric(text, "aiagent_llm_tokens_total", direction="in") == tokens_in
    assert metric(text, "aiagent_llm_tokens_total", direction="out") == tokens_out
    ok = {"route": "/v1/invoke", "method": "POST", "status": "200"}
    assert metric(text, "aiagent_http_requests_total", **ok) == 1
    # Every kind of refusal is exported from the start, at zero, for rate() and dashboards.
    refused = {
        sample.labels["limit"]: sample.value
        for sample in families["aiagent_rate_limited"].samples
        if sample.name == "aiagent_rate_limited_total"
    }
    assert refused == dict.fromkeys(LIMIT_KINDS, 0.0)


def test_a_failed_model_call_is_metered_as_an_error(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    config = agent_config(
        "langchain", model_server, name="failing-bot", model={"name": "broken-model"}
    )
    runtime = runtime_factory(config, env={"AIAGENT_NAMESPACE": NAMESPACE})
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "hi"}, timeout=30)
    assert response.status_code == 502
    text = httpx.get(f"{runtime.base_url}/metrics").text
    labels = {**model_labels("failing-bot"), "gen_ai_request_model": "broken-model"}
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert metric(text, duration, error_type="provider_error", **labels) == 1
    assert metric(text, duration, error_type="", **labels) == 0
    # No usage reported, none recorded (the conventions: never a guess).
    assert metric(text, "gen_ai_client_token_usage_count", **labels) == 0
    errors = {"agent": "failing-bot", "namespace": NAMESPACE, "type": "provider_error"}
    assert metric(text, "aiagent_errors_total", route="/v1/invoke", **errors) == 1
