"""agent.yaml `limits` against real runtime processes: a 429 with Retry-After on every model route
once a budget is spent, and service again in the next window; tokens per minute; requests in
flight; the cap on tokens per answer as the provider receives it; per-pod shares without a state
store; counters shared by two runtimes (and by two agents of one budget) through a real daprd."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from agent_runtime.config import AgentConfig
from agent_runtime.limits import Limiter, RateLimited, capped, quotas_of, share
from agent_runtime.metrics import Metrics
from agent_runtime.settings import RuntimeSettings
from localcluster.model_server import ModelServer
from localcluster.procs import free_port
from tests.dapr.sidecar import STATE_STORE, DaprSidecar, build_daprd

from .conftest import FRAMEWORKS, Runtime, RuntimeFactory, agent_config, metric

WINDOW_ENV = "AIAGENT_LIMIT_WINDOW_SECONDS"
# For tests that need no new window: long enough that they rarely wait for a fresh one.
LONG_WINDOW = 120


def fresh_window(seconds: int, needed: float) -> None:
    """Wait for the next window if fewer than `needed` seconds are left of this one, so what a
    test counts lands in one window (windows start at multiples of their length, on every
    process's clock alike)."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.1)


def limited(framework: str, model_server: ModelServer, **limits: Any) -> dict[str, Any]:
    config = agent_config(framework, model_server, limits=limits)
    config["name"] = f"limited-{uuid.uuid4().hex[:8]}"  # counters of its own in a shared store
    return config


# -- each route, called with the client people use for it -------------------------------------


def invoke(base_url: str) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/invoke", json={"input": "hello"}, timeout=30)


def _openai(base_url: str) -> openai.OpenAI:
    # No retries: the client would otherwise wait out Retry-After itself and try again.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def _status(call: Callable[[], object]) -> httpx.Response:
    """The HTTP response of an openai client call: its own on success, the error's otherwise."""
    try:
        call()
    except openai.APIStatusError as exc:
        return exc.response
    return httpx.Response(200)


def chat(base_url: str) -> httpx.Response:
    messages: Any = [{"role": "user", "content": "hello"}]
    client = _openai(base_url)

    def call() -> None:
        answer = client.chat.completions.create(model="agent", messages=messages)
        assert answer.choices[0].message.content == "Echo: hello (turn 1)"

    return _status(call)


def chat_stream(base_url: str) -> httpx.Response:
    messages: Any = [{"role": "user", "content": "hello"}]
    client = _openai(base_url)

    def call() -> None:
        stream = client.chat.completions.create(model="agent", messages=messages, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Echo: hello (turn 1)"

    return _status(call)


def responses(base_url: str) -> httpx.Response:
    client = _openai(base_url)

    def call() -> None:
        assert client.responses.create(model="agent", input="hello").output_text.startswith(
            "Echo: hello"
        )

    return _status(call)


def a2a(base_url: str) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {
            "message": {
                "messageId": uuid.uuid4().hex,
                "role": "ROLE_USER",
                "parts": [{"text": "hi"}],
            }
        },
    }
    response = httpx.post(f"{base_url}/a2a", json=body, headers={"A2A-Version": "1.0"}, timeout=30)
    if response.status_code == 200:
        assert response.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    return response


ROUTES = {
    "invoke": invoke,
    "chat": chat,
    "chat-stream": chat_stream,
    "responses": responses,
    "a2a": a2a,
}


def assert_limited(response: httpx.Response, limit: str, window: int) -> dict[str, Any]:
    """A 429 in the runtime's error shape, saying which limit, with a Retry-After within the
    window."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert limit in error["message"] and f"retry in {retry_after} s" in error["message"]
    assert error["request_id"] and "Traceback" not in response.text
    return error


def scrape(runtime: Runtime) -> str:
    return httpx.get(f"{runtime.base_url}/metrics").text


def rate_limited(runtime: Runtime, limit: str) -> float:
    return metric(scrape(runtime), "aiagent_rate_limited_total", limit=limit)


# -- the tests ----------------------------------------------------------------------------------


def test_every_model_route_answers_429_once_the_requests_are_spent_then_serves_again(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    window = 6
    config = limited("langchain", model_server, requestsPerMinute=len(ROUTES))
    runtime = runtime_factory(config, env={WINDOW_ENV: str(window)})
    fresh_window(window, needed=4)
    for name, route in ROUTES.items():
        assert route(runtime.base_url).status_code == 200, name
    calls = len(model_server.recorder.requests)
    for route in ROUTES.values():
        response = route(runtime.base_url)
        assert_limited(response, f"limit of {len(ROUTES)} requests per {window} s", window)
    assert len(model_server.recorder.requests) == calls, "a refused request reached the model"
    # Never on the operational routes.
    for path in ("/healthz", "/readyz", "/metrics", "/.well-known/agent-card.json"):
        assert httpx.get(f"{runtime.base_url}{path}").status_code == 200, path
    text = scrape(runtime)
    assert metric(text, "aiagent_rate_limited_total", limit="requests") == len(ROUTES)
    for path in ("/v1/invoke", "/v1/chat/completions", "/v1/responses", "/a2a"):
        assert metric(text, "aiagent_errors_total", route=path, type="rate_limited") >= 1, path
        assert metric(text, "aiagent_http_requests_total", route=path, status="429") >= 1, path

    time.sleep(int(response.headers["retry-after"]) + 0.2)  # the next window
    for name, route in ROUTES.items():
        assert route(runtime.base_url).status_code == 200, name


def test_tokens_per_minute_refuse_once_the_window_s_tokens_are_spent(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    window = LONG_WINDOW
    runtime = runtime_factory(
        limited("langchain", model_server, tokensPerMinute=5), env={WINDOW_ENV: str(window)}
    )
    fresh_window(window, needed=10)
    first = invoke(runtime.base_url)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] >= 5  # the one answer spent the budget
    calls = len(model_server.recorder.requests)
    assert_limited(chat(runtime.base_url), f"limit of 5 tokens per {window} s", window)
    assert_limited(invoke(runtime.base_url), "tokens", window)
    assert len(model_server.recorder.requests) == calls
    assert rate_limited(runtime, "tokens") == 2
    assert rate_limited(runtime, "requests") == 0


def test_concurrent_requests_are_limited_per_pod(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    # Two in flight for the agent, two pods: one each. unhurried-model holds a request 1.5 s.
    config = limited("langchain", model_server, concurrentRequests=2, divisor=2)
    config["model"]["name"] = "unhurried-model"
    runtime = runtime_factory(config)
    question = f"hold {uuid.uuid4().hex}"
    held: dict[str, int] = {}

    def hold() -> None:
        response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": question}, timeout=30)
        held["status"] = response.status_code

    thread = threading.Thread(target=hold)
    thread.start()
    deadline = time.monotonic() + 20
    while not any(question in str(r["messages"]) for r in model_server.recorder.requests):
        assert time.monotonic() < deadline, "the first request never reached the model"
        time.sleep(0.02)
    error = assert_limited(chat(runtime.base_url), "at most 1 requests at once", window=60)
    assert "this pod's share" in error["message"]
    thread.join(timeout=30)
    assert held["status"] == 200
    assert chat(runtime.base_url).status_code == 200  # the place is free again
    assert rate_limited(runtime, "concurrency") == 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_max_tokens_per_request_caps_what_the_provider_is_asked_for(
    runtime_factory: RuntimeFactory, model_server: ModelServer, framework: str
) -> None:
    config = limited(framework, model_server, maxTokensPerRequest=3)
    config["model"]["maxTokens"] = 500
    runtime = runtime_factory(config)
    question = f"cap {uuid.uuid4().hex} me please"
    # The client asks for far more; the request is served, capped, not refused.
    answer = _openai(runtime.base_url).chat.completions.create(
        model="agent", messages=[{"role": "user", "content": question}], max_tokens=5000
    )
    asked = [r for r in model_server.recorder.requests if question in str(r["messages"])]
    assert asked
    for body in asked:
        assert body.get("max_completion_tokens", body.get("max_tokens")) == 3
    # The fake provider answers at most that many words: "Echo: cap <id>".
    assert answer.choices[0].message.content == f"Echo: cap {question.split()[1]}"


def test_without_a_state_store_each_pod_spends_its_share(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    window = LONG_WINDOW
    # Two pods share 5 requests: 2 each (never more than the whole between them).
    config = limited("langchain", model_server, requestsPerMinute=5, divisor=2)
    pods = [runtime_factory(config, env={WINDOW_ENV: str(window)}) for _ in range(2)]
    fresh_window(window, needed=10)
    for pod in pods:
        assert [invoke(pod.base_url).status_code for _ in range(2)] == [200, 200]
        error = assert_limited(invoke(pod.base_url), "limit of 2 requests", window)
        assert "this pod's share" in error["message"]


def test_a_shared_budget_without_a_state_store_is_divided_too(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    window = LONG_WINDOW
    budget = {"name": "team-a/gpt", "requestsPerMinute": 7, "divisor": 3}
    runtime = runtime_factory(
        limited("langchain", model_server, requestsPerMinute=100, budget=budget),
        env={WINDOW_ENV: str(window)},
    )
    fresh_window(window, needed=10)
    assert [invoke(runtime.base_url).status_code for _ in range(2)] == [200, 200]
    error = assert_limited(invoke(runtime.base_url), "budget team-a/gpt's limit of 2", window)
    assert "this pod's share" in error["message"]
    assert rate_limited(runtime, "budget_requests") == 1


# -- across replicas, through a real Dapr state store -------------------------------------------


@pytest.fixture(scope="module")
def dapr() -> Iterator[DaprSidecar]:
    with DaprSidecar(build_daprd(), app_id="agent") as sidecar:
        yield sidecar


def with_store(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "dapr": {"enabled": True, "stateStore": STATE_STORE}}


def test_two_replicas_share_the_counters_in_the_state_store(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    window = LONG_WINDOW
    # divisor 2 would give each pod 1 of 3 when counting alone: the store makes it 3 in all.
    config = with_store(limited("langchain", model_server, requestsPerMinute=3, divisor=2))
    env = {**dapr.env(), WINDOW_ENV: str(window)}
    one, two = runtime_factory(config, env=env), runtime_factory(config, env=env)
    fresh_window(window, needed=10)
    statuses = [invoke(pod.base_url).status_code for pod in (one, two, one)]
    assert statuses == [200, 200, 200]
    for pod in (two, one):
        error = assert_limited(invoke(pod.base_url), "limit of 3 requests", window)
        assert "this pod's share" not in error["message"]
    # The window's record, in the store, named by the window, and set to expire.
    start = int(time.time() // window) * window
    key = f"{config['name']}__limits__{start}-{window}s"
    record = httpx.get(f"{dapr.url}/v1.0/state/{STATE_STORE}/{key}")
    assert record.status_code == 200, record.text
    assert record.json()["requests"] == 3
    assert record.headers["metadata.ttlexpiretime"]


def test_concurrent_admissions_on_two_replicas_never_overspend(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    window = LONG_WINDOW
    limit = 4
    config = with_store(limited("langchain", model_server, requestsPerMinute=limit))
    env = {**dapr.env(), WINDOW_ENV: str(window)}
    pods = [runtime_factory(config, env=env), runtime_factory(config, env=env)]
    fresh_window(window, needed=10)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [
                client.post(f"{pods[i % 2].base_url}/v1/invoke", json={"input": f"burst {i}"})
                for i in range(12)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(burst())
    # First-write-wins: every admission that landed counted; none beyond the limit got through.
    assert statuses.count(200) == limit, statuses
    assert statuses.count(429) == 12 - limit, statuses


def test_two_agents_share_a_budget_and_tokens_count_in_the_store(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    window = LONG_WINDOW
    budget = {"name": f"shared-{uuid.uuid4().hex[:6]}", "requestsPerMinute": 2, "divisor": 2}
    env = {**dapr.env(), WINDOW_ENV: str(window)}
    # Two different agents (own limits far away) on one store, one budget between them.
    first_config = with_store(
        limited("langchain", model_server, tokensPerMinute=100_000, budget=budget)
    )
    first = runtime_factory(first_config, env=env)
    second = runtime_factory(with_store(limited("langchain", model_server, budget=budget)), env=env)
    fresh_window(window, needed=10)
    spent = invoke(first.base_url)
    assert spent.status_code == 200
    assert invoke(second.base_url).status_code == 200
    for pod in (first, second):
        assert_limited(invoke(pod.base_url), f"budget {budget['name']}'s limit of 2", window)
    start = int(time.time() // window) * window
    agent_key = f"{first_config['name']}__limits__{start}-{window}s"
    record = httpx.get(f"{dapr.url}/v1.0/state/{STATE_STORE}/{agent_key}").json()
    assert record["tokens"] == spent.json()["usage"]["total_tokens"]
    assert record["requests"] == 1  # refused by the budget: not counted against the agent


def test_a_failing_state_store_falls_back_to_per_pod_counting(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    window = LONG_WINDOW
    config = with_store(limited("langchain", model_server, requestsPerMinute=4, divisor=2))
    # Nothing listens there. Chat completions keep no session, so only the limits need Dapr.
    env = {"DAPR_HTTP_PORT": str(free_port()), WINDOW_ENV: str(window)}
    runtime = runtime_factory(config, env=env)
    fresh_window(window, needed=10)
    assert [chat(runtime.base_url).status_code for _ in range(2)] == [200, 200]
    assert_limited(chat(runtime.base_url), "limit of 2 requests", window)
    assert_limited(chat(runtime.base_url), "limit of 2 requests", window)
    log = runtime.log()
    assert log.count("limit counters: the Dapr state store failed") == 1
    assert metric(scrape(runtime), "aiagent_limit_store_fallbacks_total") >= 4


# -- the pure parts -----------------------------------------------------------------------------


def test_share_is_never_more_than_the_whole_nor_nothing() -> None:
    assert share(5, 2) == 2
    assert share(6, 3) == 2
    assert share(1, 10) == 1
    assert share(7, 1) == 7


def test_capped_lowers_model_max_tokens_only() -> None:
    def config(model_max: int | None, **limits: Any) -> AgentConfig:
        model = {"name": "m", "maxTokens": model_max}
        raw = {"name": "a", "framework": "langchain", "model": model, "limits": limits}
        return AgentConfig.model_validate(raw)

    assert capped(config(100, maxTokensPerRequest=10)).model.max_tokens == 10
    assert capped(config(100, maxTokensPerRequest=1000)).model.max_tokens == 100
    assert capped(config(100)).model.max_tokens == 100
    assert capped(config(None, maxTokensPerRequest=7)).model.max_tokens == 7


def test_budget_keys_never_collide() -> None:
    def key(name: str) -> str:
        config = AgentConfig.model_validate(
            {
                "name": "a",
                "framework": "langchain",
                "model": {"name": "m"},
                "limits": {"budget": {"name": name, "requestsPerMinute": 1}},
            }
        )
        [quota] = quotas_of(config)
        return quota.key

    assert key("team-a.gpt") == "~budget__team-a.gpt"
    assert key("team-a/gpt") != key("team-a-gpt")
    assert "/" not in key("team-a/gpt")


def test_the_limiter_counts_fixed_windows_in_process() -> None:
    now = [1000.0]
    config = AgentConfig.model_validate(
        {
            "name": "a",
            "framework": "langchain",
            "model": {"name": "m"},
            "limits": {"requestsPerMinute": 2, "tokensPerMinute": 50},
        }
    )
    settings = RuntimeSettings(limit_window_seconds=60)
    limiter = Limiter(config, settings, Metrics(), clock=lambda: now[0])

    async def scenario() -> None:
        for _ in range(2):
            await limiter.admit()
            limiter.release()
        with pytest.raises(RateLimited) as refused:
            await limiter.admit()
        assert refused.value.limit == "requests"
        assert refused.value.retry_after == math.ceil(1020 - now[0])  # 1020: the window's end
        now[0] = 1020.0  # the next window
        await limiter.admit()
        await limiter.spend(50)
        limiter.release()
        with pytest.raises(RateLimited) as refused:
            await limiter.admit()
        assert refused.value.limit == "tokens"
        assert limiter.in_flight == 0

    asyncio.run(scenario())
