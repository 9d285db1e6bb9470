"""The OpenAI Responses API (`/v1/responses`) for every framework, through the official `openai`
client: plain and streamed (typed events), previous_response_id through the session store
(process memory, and Dapr shared by two replicas), instructions, failures and refusals."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from localcluster.model_server import ModelServer
from tests.dapr.sidecar import STATE_STORE, DaprSidecar, build_daprd

from .conftest import (
    API_KEY,
    Runtime,
    RuntimeFactory,
    agent_config,
    start_runtime,
)


def client_for(runtime: Runtime) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{runtime.base_url}/v1", api_key="unused", max_retries=0)


def sent_since(model_server: ModelServer, before: int) -> str:
    """Everything the model was sent since request number `before`, as one string."""
    return json.dumps(model_server.recorder.requests[before:])


def test_plain_response(runtime: Runtime) -> None:
    response = client_for(runtime).responses.create(model="anything", input="hello there")
    assert response.output_text == "Echo: hello there (turn 1)"
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed"
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.model == runtime_name(runtime)  # the request's model is ignored


def runtime_name(runtime: Runtime) -> str:
    return next(
        line.split(":", 1)[1].strip()
        for line in runtime.config_path.read_text().splitlines()
        if line.startswith("name:")
    )


EVENT_ORDER = [
    ResponseCreatedEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseContentPartAddedEvent,
    # ... one or more ResponseTextDeltaEvent ...
    ResponseTextDoneEvent,
    ResponseContentPartDoneEvent,
    ResponseOutputItemDoneEvent,
    ResponseCompletedEvent,
]


def test_streaming_typed_events(runtime: Runtime) -> None:
    stream = client_for(runtime).responses.create(
        model="anything", input="stream this please", stream=True
    )
    events = list(stream)
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    others = [e for e in events if not isinstance(e, ResponseTextDeltaEvent)]
    assert [type(e) for e in others] == EVENT_ORDER
    # The deltas sit between content_part.added and output_text.done.
    assert all(isinstance(e, ResponseTextDeltaEvent) for e in events[4:-4])
    assert len(deltas) > 1, "streamed in pieces, not one blob"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    assert text == "Echo: stream this please (turn 1)"
    done = others[4]
    assert isinstance(done, ResponseTextDoneEvent) and done.text == text
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == text
    assert completed.response.status == "completed"
    usage = completed.response.usage
    assert usage is not None and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    created = events[0]
    assert isinstance(created, ResponseCreatedEvent)
    assert created.response.id == completed.response.id
    assert created.response.status == "in_progress"
    assert {d.item_id for d in deltas} == {completed.response.output[0].id}


def test_stream_helper_accumulates_the_same_answer(runtime: Runtime) -> None:
    """`responses.stream()` rebuilds the response from the events, so their shapes must fit."""
    with client_for(runtime).responses.stream(model="anything", input="helper here") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Echo: helper here (turn 1)"


def test_raw_events_name_their_type(runtime: Runtime) -> None:
    with httpx.stream(
        "POST",
        f"{runtime.base_url}/v1/responses",
        json={"input": "raw", "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        blocks = response.read().decode().strip().split("\n\n")
    for block in blocks:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        assert json.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")
    assert blocks[-1].startswith("event: response.completed")


def test_previous_response_id_continues_the_conversation(runtime: Runtime) -> None:
    client = client_for(runtime)
    first = client.responses.create(model="m", input="one")
    second = client.responses.create(model="m", input="two", previous_response_id=first.id)
    assert second.output_text == "Echo: two (turn 2)"
    assert second.previous_response_id == first.id and second.id != first.id
    # A stored response never changes: branching from `first` again is turn 2 again.
    branch = client.responses.create(model="m", input="two again", previous_response_id=first.id)
    assert branch.output_text == "Echo: two again (turn 2)"
    # Streamed turns continue, and are stored, too.
    events = list(
        client.responses.create(
            model="m", input="three", previous_response_id=second.id, stream=True
        )
    )
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.output_text == "Echo: three (turn 3)"
    fourth = client.responses.create(
        model="m", input="four", previous_response_id=completed.response.id
    )
    assert fourth.output_text == "Echo: four (turn 4)"
    # Another conversation is not affected.
    assert client.responses.create(model="m", input="alone").output_text == "Echo: alone (turn 1)"


def test_instructions_reach_the_model_for_one_turn(
    runtime: Runtime, model_server: ModelServer
) -> None:
    client = client_for(runtime)
    marker = f"Answer like a pirate {uuid.uuid4().hex[:8]}"
    before = len(model_server.recorder.requests)
    first = client.responses.create(model="m", input="ahoy", instructions=marker)
    assert first.output_text == "Echo: ahoy (turn 1)"
    assert first.instructions == marker
    assert marker in sent_since(model_server, before)
    assert "You are brief." in sent_since(model_server, before)  # the agent's own still apply
    # As with OpenAI, instructions are not carried over by previous_response_id.
    before = len(model_server.recorder.requests)
    second = client.responses.create(model="m", input="again", previous_response_id=first.id)
    assert second.output_text == "Echo: again (turn 2)"
    assert marker not in sent_since(model_server, before)


def test_input_as_a_message_list(runtime: Runtime, model_server: ModelServer) -> None:
    marker = f"Developer note {uuid.uuid4().hex[:8]}"
    before = len(model_server.recorder.requests)
    response = client_for(runtime).responses.create(
        model="m",
        input=[
            {"role": "developer", "content": marker},
            {"role": "user", "content": "first question"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Echo: first question (turn 1)"}],
            },
            {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
        ],
    )
    assert response.output_text == "Echo: second question (turn 2)"
    sent = sent_since(model_server, before)
    assert marker in sent and "first question" in sent


def test_store_false_keeps_nothing(runtime: Runtime) -> None:
    client = client_for(runtime)
    unstored = client.responses.create(model="m", input="forget me", store=False)
    assert unstored.output_text == "Echo: forget me (turn 1)"
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="and?", previous_response_id=unstored.id)
    assert refused.value.status_code == 400
    assert refused.value.code == "previous_response_not_found"
    assert refused.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


@pytest.mark.parametrize("unknown", [f"resp_{'0' * 40}", "resp_nonsense", "../../etc/passwd"])
def test_unknown_previous_response_id(runtime: Runtime, unknown: str) -> None:
    response = httpx.post(
        f"{runtime.base_url}/v1/responses",
        json={"input": "hi", "previous_response_id": unknown},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "previous_response_not_found"
    assert error["param"] == "previous_response_id"
    assert unknown in error["message"]


def test_retrieve_a_stored_response(runtime: Runtime) -> None:
    client = client_for(runtime)
    created = client.responses.create(model="m", input="keep me")
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.status == "completed"
    assert fetched.output_text == "Echo: keep me (turn 1)"
    assert fetched.created_at == created.created_at
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(f"resp_{'f' * 40}")


def post(runtime: Runtime, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(
            f"{runtime.base_url}/v1/responses",
            content=body,
            headers={"content-type": "application/json"},
            timeout=30,
        )
    return httpx.post(f"{runtime.base_url}/v1/responses", json=body, timeout=30)


@pytest.mark.parametrize(
    ("body", "param", "code", "fragment"),
    [
        ({}, "input", "invalid_request", "Field required"),
        ({"input": []}, "input", "invalid_request", "at least 1"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
            "invalid_request",
            "input_text",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]},
            "input[0]",
            "invalid_request",
            "only message items are supported, not 'function_call_output'",
        ),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "invalid_request", ""),
        (
            {"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "input",
            "invalid_request",
            "last input message",
        ),
        (
            {"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {}}]},
            "tools",
            "unsupported_parameter",
            "own tools",
        ),
        (
            {"input": "hi", "tool_choice": {"type": "function", "name": "f"}},
            "tool_choice",
            "unsupported_parameter",
            "",
        ),
        ({"input": "hi", "background": True}, "background", "unsupported_parameter", ""),
        ({"input": "hi", "conversation": "conv_1"}, "conversation", "unsupported_parameter", ""),
        (
            {"input": "hi", "text": {"format": {"type": "json_object"}}},
            "text.format",
            "unsupported_parameter",
            "plain text",
        ),
        ({"input": "x" * 60}, None, "invalid_request", "limit is 50"),
        (b'{"input": "unterminated', None, "invalid_request", "JSON"),
    ],
)
def test_bad_requests_are_400_in_openai_shape(
    small_limit_runtime: Runtime, body: Any, param: str | None, code: str, fragment: str
) -> None:
    response = post(small_limit_runtime, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == code
    if param is not None:
        assert error["param"] == param, error
    assert fragment in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text


@pytest.fixture(scope="module")
def small_limit_runtime(
    model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    runtime = start_runtime(
        agent_config("langchain", model_server),
        tmp_path_factory.mktemp("responses-limits"),
        env={"AIAGENT_MAX_INPUT_CHARS": "50"},
    )
    yield runtime
    runtime.stop()


def test_ignored_fields_are_ignored(small_limit_runtime: Runtime) -> None:
    response = client_for(small_limit_runtime).responses.create(
        model="gpt-anything",
        input="tuned",
        temperature=0.1,
        top_p=0.5,
        max_output_tokens=5,
        metadata={"ticket": "42"},
        tool_choice="auto",
        user="someone",
        truncation="auto",
    )
    assert response.output_text == "Echo: tuned (turn 1)"
    assert response.metadata == {"ticket": "42"}


def test_provider_failure_is_502_without_the_key(
    broken_runtime: Runtime, model_server: ModelServer
) -> None:
    client = client_for(broken_runtime)
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as failed:
            client.responses.create(model="m", input="hello", stream=stream)
        # Streaming too: the first piece is awaited before the 200, so the status tells.
        assert failed.value.status_code == 502
        raw = failed.value.response.text
        assert API_KEY not in raw
        error = json.loads(raw)["error"]
        assert error["type"] == "server_error" and error["code"] == "provider_error"
        assert "Incorrect API key" in error["message"]
    assert model_server.recorder.authorization[-1] == f"Bearer {API_KEY}"  # sent, and echoed
    assert API_KEY not in broken_runtime.log()  # and again, complete, when the fixture stops it


def test_failure_mid_stream_ends_with_response_failed(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    runtime = runtime_factory(
        agent_config("langchain", model_server, model={"name": "slow-model", "timeoutSeconds": 2})
    )
    client = client_for(runtime)
    started = time.monotonic()
    # The slow model sends a word, then stalls: the answer has begun (200) when the time is up.
    events = list(client.responses.create(model="m", input="hi", stream=True))
    assert time.monotonic() - started < 15  # the provider would take 30 s
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent), [e.type for e in events]
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    # Either timeout may fire first: ours (model.timeoutSeconds) or the provider client's own.
    message = failed.response.error.message
    assert "timeoutSeconds" in message or "timed out" in message, message
    assert any(isinstance(e, ResponseTextDeltaEvent) for e in events)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # A failed response is not stored.
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="and?", previous_response_id=failed.response.id)


def test_client_disconnect_cancels_the_provider_call(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    runtime = runtime_factory(
        agent_config("langchain", model_server, model={"name": "slow-model", "timeoutSeconds": 60})
    )
    before = model_server.recorder.cancelled_streams
    stream = client_for(runtime).responses.create(model="m", input="hi", stream=True)
    first = next(iter(stream))
    assert isinstance(first, ResponseCreatedEvent)
    stream.close()  # hang up
    deadline = time.monotonic() + 10
    while model_server.recorder.cancelled_streams == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert model_server.recorder.cancelled_streams > before, "the provider request was left running"


def test_replicas_share_responses_through_dapr(
    runtime_factory: RuntimeFactory, model_server: ModelServer
) -> None:
    with DaprSidecar(build_daprd(), app_id="agent") as dapr:
        config = agent_config(
            "langchain", model_server, dapr={"enabled": True, "stateStore": STATE_STORE}
        )
        one, two = (runtime_factory(config, env=dapr.env()) for _ in range(2))
        first = client_for(one).responses.create(model="m", input="on replica one")
        second = client_for(two).responses.create(
            model="m", input="on replica two", previous_response_id=first.id
        )
        assert second.output_text == "Echo: on replica two (turn 2)"
        assert client_for(one).responses.retrieve(second.id).output_text == second.output_text
        # The conversation lives in the state store, under the agent's prefix and its own key.
        stored = httpx.get(
            f"{dapr.url}/v1.0/state/{STATE_STORE}/langchain-bot__response~{second.id}"
        ).json()
        assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
