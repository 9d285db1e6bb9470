"""Conversation memory through a real Dapr sidecar (daprd, built from Go modules) survives a
runtime restart; in-process memory does not."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from localcluster.model_server import ModelServer
from tests.dapr.sidecar import STATE_STORE, DaprSidecar, build_daprd

from .conftest import RuntimeFactory, agent_config


@pytest.fixture(scope="module")
def dapr() -> Iterator[DaprSidecar]:
    with DaprSidecar(build_daprd(), app_id="agent") as sidecar:
        yield sidecar


def say(base_url: str, text: str, session: str) -> str:
    response = httpx.post(
        f"{base_url}/v1/invoke", json={"input": text, "session_id": session}, timeout=30
    )
    assert response.status_code == 200, response.text
    output: str = response.json()["output"]
    return output


def test_sessions_survive_a_restart_with_dapr(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    config = agent_config(
        "langchain", model_server, dapr={"enabled": True, "stateStore": STATE_STORE}
    )
    first = runtime_factory(config, env=dapr.env())
    assert say(first.base_url, "remember me", "s-1") == "Echo: remember me (turn 1)"
    assert "sessions in dapr" in first.log()
    first.stop()

    second = runtime_factory(config, env=dapr.env())
    assert say(second.base_url, "still there?", "s-1") == "Echo: still there? (turn 2)"
    # The history really lives in the state store, under the agent's own key prefix.
    stored = httpx.get(f"{dapr.url}/v1.0/state/{STATE_STORE}/langchain-bot__s-1").json()
    assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]


def test_in_process_memory_is_lost_on_restart(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    config = agent_config("langchain", model_server)
    first = runtime_factory(config)
    say(first.base_url, "remember me", "s-2")
    assert say(first.base_url, "and again", "s-2") == "Echo: and again (turn 2)"
    first.stop()
    second = runtime_factory(config)
    assert say(second.base_url, "hello?", "s-2") == "Echo: hello? (turn 1)"


def test_dapr_outage_is_a_502_not_a_hang(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    from localcluster.procs import free_port

    config = agent_config(
        "langchain", model_server, dapr={"enabled": True, "stateStore": STATE_STORE}
    )
    runtime = runtime_factory(config, env={"DAPR_HTTP_PORT": str(free_port())})  # nothing listens
    response = httpx.post(
        f"{runtime.base_url}/v1/invoke", json={"input": "hi", "session_id": "x"}, timeout=30
    )
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "session_store_error"
