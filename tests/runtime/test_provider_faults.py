"""Provider faults: the model server answering 500s, 429s with Retry-After, hanging, dropping
the connection or cutting a stream half way. The runtime retries what is safe (one model call,
through the provider's SDK), answers 502/504 otherwise, ends a broken stream with an error event,
and keeps no failed turn in a session. LangChain and CrewAI, each a real uvicorn runtime."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from agent_runtime.providers import MAX_RETRIES
from localcluster.model_server import RETRY_AFTER_SECONDS, ModelServer

from .conftest import API_KEY, Runtime, agent_config, start_runtime

TIMEOUT_SECONDS = 4  # model.timeoutSeconds: long enough for the retries, short for the hangs


@pytest.fixture(scope="module", params=["langchain", "crewai"])
def faulty(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    """A runtime whose fake provider fails as each request's message asks ("hi [flaky-model]")."""
    config = agent_config(request.param, model_server, model={"timeoutSeconds": TIMEOUT_SECONDS})
    runtime = start_runtime(config, tmp_path_factory.mktemp(f"faults-{request.param}"))
    yield runtime
    runtime.stop()
    assert API_KEY not in runtime.log(), "the API key reached the runtime's log"


def attempts(model_server: ModelServer, fault: str, marker: str) -> list[float]:
    """When the provider got each request of the conversation whose last message has `marker`."""
    return [
        t
        for key, times in model_server.recorder.attempts.items()
        if key.startswith(f"{fault}:") and marker in key
        for t in times
    ]


def invoke(runtime: Runtime, text: str, session_id: str | None = None) -> httpx.Response:
    body = {"input": text, **({"session_id": session_id} if session_id else {})}
    return httpx.post(f"{runtime.base_url}/v1/invoke", json=body, timeout=30)


def error_type(response: httpx.Response) -> str:
    assert "Traceback" not in response.text and API_KEY not in response.text
    kind: str = response.json()["error"]["type"]
    return kind


@pytest.mark.parametrize("fault", ["flaky-model", "dropping-model"])
def test_a_500_or_a_dropped_connection_is_retried(
    faulty: Runtime, model_server: ModelServer, fault: str
) -> None:
    marker = uuid.uuid4().hex
    response = invoke(faulty, f"hello {marker} [{fault}]")
    assert response.status_code == 200, response.text
    assert marker in response.json()["output"]
    assert len(attempts(model_server, fault, marker)) == 2  # the failure, then the answer


def test_a_429_is_retried_after_its_retry_after(faulty: Runtime, model_server: ModelServer) -> None:
    marker = uuid.uuid4().hex
    response = invoke(faulty, f"hello {marker} [ratelimited-model]")
    assert response.status_code == 200, response.text
    first, second = attempts(model_server, "ratelimited-model", marker)
    assert second - first >= RETRY_AFTER_SECONDS * 0.9  # it waited as the provider asked


@pytest.mark.parametrize("fault", ["failing-model", "overloaded-model"])
def test_a_provider_that_keeps_failing_is_a_502_after_bounded_retries(
    faulty: Runtime, model_server: ModelServer, fault: str
) -> None:
    marker = uuid.uuid4().hex
    started = time.monotonic()
    response = invoke(faulty, f"hello {marker} [{fault}]")
    if response.status_code == 504:
        # CrewAI's executor tries a rate-limited call again beyond the SDK's retries (a 429
        # each second here): model.timeoutSeconds bounds it, and the answer is still clean.
        assert fault == "overloaded-model" and "crewai" in faulty.log_path.parent.name
        assert error_type(response) == "provider_timeout"
        assert time.monotonic() - started < TIMEOUT_SECONDS + 3
        return
    assert response.status_code == 502, response.text
    assert error_type(response) == "provider_error"
    assert len(attempts(model_server, fault, marker)) == 1 + MAX_RETRIES  # no more, no loop
    # Streaming, it fails before the first token: a status, not a stream.
    client = openai.OpenAI(base_url=f"{faulty.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": f"hi [{fault}]"}], stream=True
        )
    assert failed.value.status_code == 502


def test_a_hanging_provider_is_a_504_in_time(faulty: Runtime) -> None:
    started = time.monotonic()
    response = invoke(faulty, "hello [hanging-model]")
    assert response.status_code == 504, response.text
    assert error_type(response) == "provider_timeout"
    assert time.monotonic() - started < TIMEOUT_SECONDS + 3
    started = time.monotonic()
    stream = httpx.post(
        f"{faulty.base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi [hanging-model]"}], "stream": True},
        timeout=30,
    )
    assert stream.status_code == 504, stream.text
    assert time.monotonic() - started < TIMEOUT_SECONDS + 3


def test_a_stream_cut_half_way_ends_with_an_error_event(faulty: Runtime) -> None:
    question = "one two three four five six seven [cut-model]"
    body = {"messages": [{"role": "user", "content": question}], "stream": True}
    with httpx.stream(
        "POST", f"{faulty.base_url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        if response.status_code != 200:  # cut before a token reached us: a plain 502
            response.read()
            assert response.status_code == 502 and error_type(response) == "provider_error"
            return
        lines = list(response.iter_lines())
    events = [line.removeprefix("data: ") for line in lines if line.startswith("data:")]
    assert events[-1] == "[DONE]", events  # the end, never a hang
    last = json.loads(events[-2])
    assert last["error"]["type"] == "provider_error", last
    assert "Traceback" not in "".join(events) and API_KEY not in "".join(events)
    # The official client sees the same: an error, not a truncated answer taken for whole.
    client = openai.OpenAI(base_url=f"{faulty.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="agent", messages=[{"role": "user", "content": question}], stream=True
        ):
            pass


def test_a_failed_turn_leaves_the_session_as_it_was(faulty: Runtime) -> None:
    first = invoke(faulty, "first")
    assert first.status_code == 200, first.text
    session = first.json()["session_id"]
    for fault in ("failing-model", "cut-model", "hanging-model"):
        failed = invoke(faulty, f"second [{fault}]", session)
        assert failed.status_code in (502, 504), failed.text
    good = invoke(faulty, "third", session)
    assert good.status_code == 200, good.text
    # The model numbers the user's turns it is sent: the failed ones are not in the history.
    assert good.json()["output"] == "Echo: third (turn 2)"
    streamed = httpx.post(
        f"{faulty.base_url}/v1/invoke", json={"input": "fourth", "session_id": session}, timeout=30
    )
    assert streamed.json()["output"] == "Echo: fourth (turn 3)"
