"""Every framework answers through every route, for the clients people actually use."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import yaml

from localcluster.model_server import ModelServer

from .conftest import API_KEY, FRAMEWORKS, Runtime, RuntimeFactory, agent_config, metric


def test_invoke(runtime: Runtime) -> None:
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "hello"}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == "Echo: hello (turn 1)"
    assert body["session_id"]
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert (
        body["usage"]["total_tokens"]
        == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    )
    assert response.headers["x-request-id"]


def test_tool_call_round_trips(runtime: Runtime, model_server: ModelServer) -> None:
    before = len(model_server.recorder.requests)
    response = httpx.post(
        f"{runtime.base_url}/v1/invoke", json={"input": "calculate (6*7)+0.5"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "The result is 42.5."
    # The model asked for the tool, and the tool's result went back to it.
    calls = model_server.recorder.requests[before:]
    assert len(calls) >= 2
    assert any(
        m.get("role") == "tool" and "42.5" in str(m.get("content")) for m in calls[-1]["messages"]
    )


def test_sessions_keep_history(runtime: Runtime) -> None:
    first = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "one"}, timeout=30).json()
    session = first["session_id"]
    second = httpx.post(
        f"{runtime.base_url}/v1/invoke", json={"input": "two", "session_id": session}, timeout=30
    ).json()
    assert second["output"] == "Echo: two (turn 2)"
    assert second["session_id"] == session
    other = httpx.post(
        f"{runtime.base_url}/v1/invoke",
        json={"input": "three", "session_id": "another"},
        timeout=30,
    )
    assert other.json()["output"] == "Echo: three (turn 1)"


def test_openai_client_plain(runtime: Runtime) -> None:
    client = openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)
    completion = client.chat.completions.create(
        model="anything", messages=[{"role": "user", "content": "hi there"}]
    )
    assert completion.choices[0].message.content == "Echo: hi there (turn 1)"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_openai_client_streaming(runtime: Runtime) -> None:
    client = openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(pieces) == "Echo: stream this please (turn 1)"
    assert finishes == ["stop"]
    assert usage is not None and usage.completion_tokens > 0


def test_raw_sse_ends_with_done(runtime: Runtime) -> None:
    with httpx.stream(
        "POST",
        f"{runtime.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "raw"}], "stream": True},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert len(lines) > 3  # streamed in pieces, not one blob


def test_health_readiness_and_openapi(runtime: Runtime) -> None:
    assert httpx.get(f"{runtime.base_url}/healthz").json() == {"status": "ok", "framework": None}
    ready = httpx.get(f"{runtime.base_url}/readyz").json()
    framework = yaml.safe_load(runtime.config_path.read_text())["framework"]
    assert framework in FRAMEWORKS
    assert ready["status"] == "ready" and ready["framework"] == framework
    schema = httpx.get(f"{runtime.base_url}/openapi.json").json()
    assert {
        "/v1/invoke",
        "/v1/chat/completions",
        "/.well-known/agent-card.json",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(schema["paths"])
    invoke = schema["paths"]["/v1/invoke"]["post"]
    assert {"200", "413", "422", "502", "504"} <= set(invoke["responses"])


def test_metrics_count_what_happened(runtime: Runtime) -> None:
    def scrape() -> str:
        return httpx.get(f"{runtime.base_url}/metrics").text

    before = scrape()
    httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "count me"}, timeout=30)
    httpx.post(f"{runtime.base_url}/v1/invoke", json={}, timeout=30)  # a 422
    after = scrape()
    requests = "aiagent_http_requests_total"
    ok = {"method": "POST", "route": "/v1/invoke", "status": "200"}
    bad = {**ok, "status": "422"}
    assert metric(after, requests, **ok) == metric(before, requests, **ok) + 1
    assert metric(after, requests, **bad) == metric(before, requests, **bad) + 1
    tokens_in = {"direction": "in", "model": "fake-model"}
    assert metric(after, "aiagent_llm_tokens_total", **tokens_in) > metric(
        before, "aiagent_llm_tokens_total", **tokens_in
    )
    duration = "aiagent_http_request_duration_seconds_bucket"
    assert metric(after, duration, le="120.0", route="/v1/invoke") >= 2
    assert "aiagent_http_requests_in_flight" in after
    assert metric(after, "aiagent_errors_total", route="/v1/invoke", type="invalid_request") >= 1
    assert API_KEY not in after


def test_framework_config_files(
    runtime_factory: RuntimeFactory, model_server: ModelServer, tmp_path: Path
) -> None:
    """A full framework config (what spec.agent.configMapRef mounts) replaces the inline agent."""
    crew = tmp_path / "crew.yaml"
    crew.write_text(
        yaml.safe_dump(
            {
                "agents": {
                    "researcher": {
                        "role": "Researcher",
                        "goal": "Find facts",
                        "backstory": "Curious.",
                    },
                    "writer": {"role": "Writer", "goal": "Write briefly", "backstory": "Concise."},
                },
                "tasks": {
                    "research": {
                        "description": "Research {input}",
                        "expected_output": "Facts",
                        "agent": "researcher",
                    },
                    "write": {
                        "description": "Summarize {input}",
                        "expected_output": "A summary",
                        "agent": "writer",
                    },
                },
            }
        )
    )
    before = len(model_server.recorder.requests)
    runtime = runtime_factory(
        agent_config("crewai", model_server, agent={"frameworkConfigPath": str(crew)})
    )
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "tides"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["output"].startswith("Echo: Summarize tides")  # the last task answers
    prompts = [str(r["messages"]) for r in model_server.recorder.requests[before:]]
    assert any("Research tides" in p for p in prompts) and any(
        "Summarize tides" in p for p in prompts
    )

    settings = tmp_path / "langchain.yaml"
    settings.write_text(
        yaml.safe_dump({"system_prompt": "You are the settings-file agent.", "tools": []})
    )
    runtime = runtime_factory(
        agent_config("langchain", model_server, agent={"frameworkConfigPath": str(settings)})
    )
    before = len(model_server.recorder.requests)
    assert (
        httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "hi"}, timeout=30).status_code
        == 200
    )
    sent = model_server.recorder.requests[before]
    assert sent["messages"][0] == {"role": "system", "content": "You are the settings-file agent."}
    assert "tools" not in sent  # the file's empty tool list replaced the inline calculator

    agents_settings = tmp_path / "openai-agents.yaml"
    agents_settings.write_text(
        yaml.safe_dump({"instructions": "You are the SDK settings-file agent.", "tools": []})
    )
    runtime = runtime_factory(
        agent_config(
            "openai-agents", model_server, agent={"frameworkConfigPath": str(agents_settings)}
        )
    )
    before = len(model_server.recorder.requests)
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "hi"}, timeout=30)
    assert response.status_code == 200, response.text
    sent = model_server.recorder.requests[before]
    assert sent["messages"][0] == {
        "role": "system",
        "content": "You are the SDK settings-file agent.",
    }
    assert "tools" not in sent
