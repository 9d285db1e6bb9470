"""Conversation memory through a real Dapr sidecar (daprd, built from Go modules): it survives a
runtime restart, is shared by runtimes on one store (replicas), and keeps every turn when turns
of one session run at the same time (first-write-wins saves with ETags); in-process memory is
lost on restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from localcluster.model_server import ModelServer
from tests.dapr.sidecar import STATE_STORE, DaprSidecar, build_daprd

from .conftest import RuntimeFactory, agent_config, metric


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
    # No pub/sub configured: no subscription (a 404 is what Dapr reads as "no topics").
    assert httpx.get(f"{first.base_url}/dapr/subscribe").status_code == 404
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


def test_replicas_on_one_store_continue_each_others_sessions(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    config = agent_config(
        "langchain", model_server, dapr={"enabled": True, "stateStore": STATE_STORE}
    )
    one = runtime_factory(config, env=dapr.env())
    two = runtime_factory(config, env=dapr.env())  # both running, like two replicas
    assert say(one.base_url, "first", "r-1") == "Echo: first (turn 1)"
    assert say(two.base_url, "second", "r-1") == "Echo: second (turn 2)"
    assert say(one.base_url, "third", "r-1") == "Echo: third (turn 3)"


def conflicts(base_url: str) -> float:
    return metric(httpx.get(f"{base_url}/metrics").text, "aiagent_session_conflicts_total")


def test_concurrent_turns_of_one_session_all_land(
    runtime_factory: RuntimeFactory, model_server: ModelServer, dapr: DaprSidecar
) -> None:
    # unhurried-model answers after 1.5 s, so each turn is read before any is saved.
    config = agent_config(
        "langchain",
        model_server,
        model={"name": "unhurried-model"},
        dapr={"enabled": True, "stateStore": STATE_STORE},
    )
    runtime = runtime_factory(config, env=dapr.env())
    questions = [f"concurrent {i}" for i in range(3)]
    outputs: dict[str, str] = {}

    def ask(question: str) -> None:
        outputs[question] = say(runtime.base_url, question, "c-1")

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    # Once the model has seen every question while the store still has nothing, every turn
    # was answered from the same (empty) history: all but the first save must conflict.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = {
            str(m.get("content"))
            for r in model_server.recorder.requests
            for m in r["messages"]
            if m.get("role") == "user"
        }
        if set(questions) <= seen:
            break
        time.sleep(0.02)
    key = f"{dapr.url}/v1.0/state/{STATE_STORE}/langchain-bot__c-1"
    read_before_any_save = httpx.get(key).status_code == 204
    for thread in threads:
        thread.join(timeout=60)

    assert outputs == {q: f"Echo: {q} (turn 1)" for q in questions}
    stored = httpx.get(key).json()
    assert len(stored) == 2 * len(questions), stored  # no turn lost
    for question_message, answer_message in zip(stored[::2], stored[1::2], strict=True):
        assert question_message["role"] == "user" and answer_message["role"] == "assistant"
        assert answer_message["content"] == f"Echo: {question_message['content']} (turn 1)"
    assert {m["content"] for m in stored[::2]} == set(questions)
    if read_before_any_save:
        assert conflicts(runtime.base_url) >= len(questions) - 1
    # The next turn sees the whole conversation.
    assert say(runtime.base_url, "after", "c-1") == f"Echo: after (turn {len(questions) + 1})"
