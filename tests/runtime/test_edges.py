"""Hard edges: limits, auth, provider failures and hangs, disconnects, secrets, shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from localcluster.model_server import ModelServer

from .conftest import API_KEY, Runtime, RuntimeFactory, agent_config


@pytest.fixture(scope="module")
def langchain_runtime(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Runtime:
    from .conftest import start_runtime

    runtime = start_runtime(
        agent_config("langchain", model_server),
        tmp_path_factory.mktemp("edges"),
        env={"AIAGENT_MAX_BODY_BYTES": "4096", "AIAGENT_MAX_INPUT_CHARS": "500"},
    )
    yield runtime  # type: ignore[misc]
    runtime.stop()


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, str] = response.json()["error"]
    assert error["type"] and error["message"]
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({}, 422, "input"),
        ({"input": ""}, 422, "input"),
        ({"input": "x" * 501}, 422, "limit is 500"),
        ({"input": "hi", "unexpected": 1}, 422, "unexpected"),
        ({"input": "hi", "session_id": "../../etc"}, 422, "session_id"),
        ({"input": "x" * 5000}, 413, "larger than 4096 bytes"),
    ],
)
def test_bad_invoke_requests(
    langchain_runtime: Runtime, body: dict[str, object], status: int, fragment: str
) -> None:
    response = httpx.post(f"{langchain_runtime.base_url}/v1/invoke", json=body, timeout=10)
    assert response.status_code == status
    assert fragment in error_of(response)["message"]


def test_malformed_json_and_chunked_oversize(langchain_runtime: Runtime) -> None:
    response = httpx.post(
        f"{langchain_runtime.base_url}/v1/invoke",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    error_of(response)

    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"x" * 1000

    response = httpx.post(f"{langchain_runtime.base_url}/v1/invoke", content=chunks())
    assert response.status_code == 413
    error_of(response)


def test_bad_chat_requests(langchain_runtime: Runtime) -> None:
    url = f"{langchain_runtime.base_url}/v1/chat/completions"
    assert httpx.post(url, json={"messages": []}).status_code == 422
    last_not_user = {
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    }
    response = httpx.post(url, json=last_not_user)
    assert response.status_code == 422 and "last message" in error_of(response)["message"]
    assert (
        httpx.post(url, json={"messages": [{"role": "wizard", "content": "a"}]}).status_code == 422
    )
    response = httpx.get(f"{langchain_runtime.base_url}/no/such/route")
    assert response.status_code == 404
    error_of(response)


@pytest.mark.parametrize("framework", ["langchain", "openai-agents"])
def test_provider_hang_gives_504_in_time(
    runtime_factory: RuntimeFactory, model_server: ModelServer, framework: str
) -> None:
    runtime = runtime_factory(
        agent_config(framework, model_server, model={"name": "slow-model", "timeoutSeconds": 2})
    )
    started = time.monotonic()
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": "hello"}, timeout=20)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert "timeoutSeconds" in error_of(response)["message"]
    assert elapsed < 10  # the provider would take 30 s
    stream = httpx.post(
        f"{runtime.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=20,
    )
    # The slow model sends its first (empty) chunk at once, then stalls: the stream is cut
    # with an error event rather than hanging.
    assert stream.status_code in (200, 504)
    if stream.status_code == 200:
        assert "provider_timeout" in stream.text and stream.text.rstrip().endswith("data: [DONE]")


def test_provider_error_is_502_without_the_key(
    broken_runtime: Runtime, model_server: ModelServer
) -> None:
    url = f"{broken_runtime.base_url}/v1/invoke"
    response = httpx.post(url, json={"input": "hello"}, timeout=30)
    assert response.status_code == 502
    message = error_of(response)["message"]
    assert "401" in message and "Incorrect API key" in message
    assert API_KEY not in response.text
    assert model_server.recorder.authorization[-1] == f"Bearer {API_KEY}"  # it was sent, and echoed
    assert API_KEY not in broken_runtime.log()  # and again, complete, when the fixture stops it


@pytest.mark.parametrize("framework", ["langchain", "openai-agents"])
def test_client_disconnect_cancels_the_upstream_call(
    runtime_factory: RuntimeFactory, model_server: ModelServer, framework: str
) -> None:
    runtime = runtime_factory(
        agent_config(framework, model_server, model={"name": "slow-model", "timeoutSeconds": 60})
    )
    before = model_server.recorder.cancelled_streams
    with httpx.stream(
        "POST",
        f"{runtime.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        next(response.iter_lines())  # the first chunk arrived; now hang up
    deadline = time.monotonic() + 10
    while model_server.recorder.cancelled_streams == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert model_server.recorder.cancelled_streams > before, "the provider request was left running"


def test_bearer_token_on_every_route_but_health(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    token = "s3cret-runtime-token"
    runtime = runtime_factory(
        agent_config("langchain", model_server), env={"AIAGENT_AUTH_TOKEN": token}
    )
    for path in ("/healthz", "/readyz"):
        assert httpx.get(runtime.base_url + path).status_code == 200
    for method, path in (
        ("POST", "/v1/invoke"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/metrics"),
        ("GET", "/.well-known/agent-card.json"),
    ):
        response = httpx.request(method, runtime.base_url + path, json={"input": "hi"})
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        error_of(response)
        wrong = httpx.request(
            method,
            runtime.base_url + path,
            json={"input": "hi"},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401
    ok = httpx.post(
        f"{runtime.base_url}/v1/invoke",
        json={"input": "hi"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert ok.status_code == 200
    runtime.stop()
    assert token not in runtime.log()


@pytest.mark.parametrize("framework", ["langchain", "openai-agents"])
def test_graceful_shutdown_finishes_in_flight_requests(
    runtime_factory: RuntimeFactory, model_server: ModelServer, framework: str
) -> None:
    runtime = runtime_factory(
        agent_config(framework, model_server, model={"name": "unhurried-model"})
    )
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        result["response"] = httpx.post(
            f"{runtime.base_url}/v1/invoke", json={"input": "finish me"}, timeout=30
        )

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)  # the request is now waiting on the model (1.5 s)
    code = runtime.stop(signal.SIGTERM)
    thread.join()
    assert result["response"].status_code == 200
    assert result["response"].json()["output"] == "Echo: finish me (turn 1)"
    # uvicorn re-raises the SIGTERM it caught once it has drained, so the process ends "by" it.
    assert code in (0, -signal.SIGTERM)


def test_logs_are_json_with_request_ids(langchain_runtime: Runtime) -> None:
    response = httpx.post(
        f"{langchain_runtime.base_url}/v1/invoke",
        json={"input": "log me"},
        headers={"X-Request-ID": "req-abc-123"},
        timeout=30,
    )
    assert response.headers["x-request-id"] == "req-abc-123"
    time.sleep(0.2)
    import json

    entries = [
        json.loads(line) for line in langchain_runtime.log().splitlines() if line.startswith("{")
    ]
    mine = [e for e in entries if e.get("request_id") == "req-abc-123"]
    assert mine and mine[-1]["status"] == 200 and mine[-1]["route"] == "/v1/invoke"
    assert all(API_KEY not in json.dumps(e) for e in entries)


def test_bad_config_exits_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "x", "framework": "langchain", "model": {"name": "m", "provider": "azure"}}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "agent_runtime", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.baseURL" in lines[0] and str(path) in lines[0]


@pytest.mark.parametrize("framework", ["crewai", "openai-agents"])
def test_unbuildable_agent_exits_non_zero(
    tmp_path: Path, model_server: ModelServer, framework: str
) -> None:
    # A framework config file that does not exist: the build fails at startup, loudly.
    config = agent_config(
        framework, model_server, agent={"frameworkConfigPath": str(tmp_path / "missing.yaml")}
    )
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "agent_runtime", "run", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**__import__("os").environ, "MODEL_API_KEY": API_KEY},
    )
    assert result.returncode == 1
    assert "cannot build the agent" in result.stderr and "missing.yaml" in result.stderr
    assert API_KEY not in result.stderr
