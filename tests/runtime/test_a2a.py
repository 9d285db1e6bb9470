"""A2A against a real runtime process, with the a2a-sdk as the client: 1.0 over JSON-RPC (send,
stream, get, list, cancel, contexts), 0.3 through the SDK's compat client, the card at both
well-known paths, protocol errors, and tasks shared by two runtimes through a real Dapr store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.card_resolver import parse_agent_card
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
)

from localcluster.model_server import ModelServer

from .conftest import API_KEY, FRAMEWORKS, Runtime, agent_config, metric, start_runtime

T = TypeVar("T")
CARD_PATHS = ["/.well-known/agent-card.json", "/.well-known/agent.json"]


def run(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(call())


def message(text: str, context_id: str = "", **parts: Any) -> SendMessageRequest:
    content = [Part(**parts)] if parts else [Part(text=text)]
    return SendMessageRequest(
        message=Message(
            message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=content, context_id=context_id
        )
    )


def text_of(parts: Any) -> str:
    return "".join(part.text for part in parts)


@asynccontextmanager
async def a2a_client(
    base_url: str, *, streaming: bool = False, legacy: bool = False
) -> AsyncIterator[Client]:
    """A client made the SDK's way, from the card the runtime serves. `legacy`: from the card as
    an A2A 0.3 client reads it (url, preferredTransport, protocolVersion only)."""
    async with httpx.AsyncClient(timeout=60) as http:
        if legacy:
            raw = (await http.get(f"{base_url}/.well-known/agent.json")).json()
            raw.pop("supportedInterfaces")
            card = parse_agent_card(raw)
        else:
            card = await A2ACardResolver(http, base_url).get_agent_card()
        factory = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http))
        async with factory.create(card) as client:
            yield client


async def send(client: Client, request: SendMessageRequest) -> list[StreamResponse]:
    return [event async for event in client.send_message(request)]


async def ask(base_url: str, text: str, context_id: str = "", legacy: bool = False) -> Task:
    async with a2a_client(base_url, legacy=legacy) as client:
        [response] = await send(client, message(text, context_id))
    assert response.HasField("task"), response
    return response.task


def streamed_text(events: list[StreamResponse]) -> str:
    return "".join(
        text_of(e.artifact_update.artifact.parts) for e in events if e.HasField("artifact_update")
    )


@pytest.fixture(scope="module", params=FRAMEWORKS)
def slow_runtime(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    """A runtime whose model starts to stream an answer, then stalls (for cancelling)."""
    config = agent_config(request.param, model_server, model={"name": "slow-model"})
    started = start_runtime(config, tmp_path_factory.mktemp(f"slow-{request.param}"))
    yield started
    started.stop()


@pytest.mark.parametrize("path", CARD_PATHS)
def test_card_tells_the_truth(runtime: Runtime, path: str) -> None:
    async def check() -> AgentCard:
        async with httpx.AsyncClient(timeout=30) as http:
            card = await A2ACardResolver(
                http, runtime.base_url, agent_card_path=path
            ).get_agent_card()
            # Every interface the card lists answers A2A, in the version it names.
            for interface in card.supported_interfaces:
                only = AgentCard()
                only.CopyFrom(card)
                del only.supported_interfaces[:]
                only.supported_interfaces.append(interface)
                factory = ClientFactory(ClientConfig(httpx_client=http))
                async with factory.create(only) as client:
                    with pytest.raises(TaskNotFoundError):
                        await client.get_task(GetTaskRequest(id="no-such-task"))
            return card

    card = run(check)
    assert card.name.endswith("-bot")
    assert card.description == "Answers questions in tests."
    assert card.version
    assert card.capabilities.streaming is True
    assert card.capabilities.push_notifications is False
    assert [s.id for s in card.skills]
    assert {(i.url, i.protocol_binding, i.protocol_version) for i in card.supported_interfaces} == {
        (f"{runtime.base_url}/a2a", "JSONRPC", "1.0"),
        (f"{runtime.base_url}/a2a", "JSONRPC", "0.3"),
    }
    # What a 0.3 client reads: the card's own url, transport and version.
    raw = httpx.get(f"{runtime.base_url}{path}").json()
    assert (raw["url"], raw["preferredTransport"], raw["protocolVersion"]) == (
        f"{runtime.base_url}/a2a",
        "JSONRPC",
        "0.3",
    )


def test_send(runtime: Runtime) -> None:
    task = run(lambda: ask(runtime.base_url, "hello a2a"))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert text_of(task.status.message.parts) == "Echo: hello a2a (turn 1)"
    assert task.status.message.role == Role.ROLE_AGENT
    assert [text_of(a.parts) for a in task.artifacts] == ["Echo: hello a2a (turn 1)"]
    assert task.context_id


def test_stream(runtime: Runtime, model_server: ModelServer) -> None:
    async def stream() -> list[StreamResponse]:
        async with a2a_client(runtime.base_url, streaming=True) as client:
            return await send(client, message("stream these words"))

    before = len(model_server.recorder.requests)
    events = run(stream)
    assert model_server.recorder.requests[before:][-1]["stream"] is True
    pieces = [e for e in events if e.HasField("artifact_update")]
    assert len([p for p in pieces if text_of(p.artifact_update.artifact.parts)]) >= 3
    assert streamed_text(events) == "Echo: stream these words (turn 1)"
    final = events[-1]
    assert final.status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert text_of(final.status_update.status.message.parts) == streamed_text(events)


def test_get_and_list(runtime: Runtime) -> None:
    async def check() -> tuple[Task, Task, list[str], list[str]]:
        sent = await ask(runtime.base_url, "keep this task")
        async with a2a_client(runtime.base_url) as client:
            got = await client.get_task(GetTaskRequest(id=sent.id))
            in_context = await client.list_tasks(ListTasksRequest(context_id=sent.context_id))
            everything = await client.list_tasks(ListTasksRequest())
        return sent, got, [t.id for t in in_context.tasks], [t.id for t in everything.tasks]

    sent, got, in_context, everything = run(check)
    assert got.id == sent.id and got.context_id == sent.context_id
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    assert [(m.role, text_of(m.parts)) for m in got.history] == [(Role.ROLE_USER, "keep this task")]
    assert text_of(got.artifacts[0].parts) == "Echo: keep this task (turn 1)"
    assert in_context == [sent.id]
    assert sent.id in everything


def test_context_id_continues_the_conversation(runtime: Runtime) -> None:
    first = run(lambda: ask(runtime.base_url, "first"))
    second = run(lambda: ask(runtime.base_url, "second", first.context_id))
    assert second.context_id == first.context_id and second.id != first.id
    assert text_of(second.status.message.parts) == "Echo: second (turn 2)"
    other = run(lambda: ask(runtime.base_url, "elsewhere"))
    assert text_of(other.status.message.parts) == "Echo: elsewhere (turn 1)"


def test_unknown_task_and_finished_task(runtime: Runtime) -> None:
    async def check() -> None:
        done = await ask(runtime.base_url, "finish me")
        async with a2a_client(runtime.base_url) as client:
            with pytest.raises(TaskNotFoundError):
                await client.get_task(GetTaskRequest(id=str(uuid.uuid4())))
            with pytest.raises(TaskNotFoundError):
                await client.cancel_task(CancelTaskRequest(id=str(uuid.uuid4())))
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(CancelTaskRequest(id=done.id))
            with pytest.raises(ContentTypeNotSupportedError):
                await send(client, message("", raw=b"\x89PNG", media_type="image/png"))

    run(check)


def test_cancel_stops_a_running_stream(slow_runtime: Runtime, model_server: ModelServer) -> None:
    async def check() -> tuple[list[StreamResponse], Task, Task, float]:
        events: list[StreamResponse] = []
        working = asyncio.Event()

        async def stream() -> None:
            async with a2a_client(slow_runtime.base_url, streaming=True) as client:
                async for event in client.send_message(message("take your time")):
                    events.append(event)
                    if event.HasField("artifact_update"):
                        working.set()  # the model said its first word, then stalled

        streaming = asyncio.create_task(stream())
        await asyncio.wait_for(working.wait(), 20)
        task_id = events[0].task.id
        started = time.monotonic()
        async with a2a_client(slow_runtime.base_url) as client:
            cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
            await asyncio.wait_for(streaming, 10)  # the stream ends too
            got = await client.get_task(GetTaskRequest(id=task_id))
        return events, cancelled, got, time.monotonic() - started

    stopped_before = model_server.recorder.cancelled_streams
    events, cancelled, got, seconds = run(check)
    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert got.status.state == TaskState.TASK_STATE_CANCELED
    assert streamed_text(events) == "Thinking..."
    assert seconds < 8  # not the provider timeout (10 s) ending it
    # The provider call itself was stopped: the model server saw the runtime hang up.
    deadline = time.monotonic() + 10
    while model_server.recorder.cancelled_streams == stopped_before:
        assert time.monotonic() < deadline, "the provider stream was not stopped"
        time.sleep(0.05)


def test_a2a_0_3_client(runtime: Runtime) -> None:
    async def check() -> tuple[Task, list[StreamResponse], Task]:
        sent = await ask(runtime.base_url, "old protocol", legacy=True)
        async with a2a_client(runtime.base_url, streaming=True, legacy=True) as client:
            events = await send(client, message("old stream", sent.context_id))
            got = await client.get_task(GetTaskRequest(id=sent.id))
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(CancelTaskRequest(id=sent.id))
            with pytest.raises(TaskNotFoundError):
                await client.get_task(GetTaskRequest(id="no-such-task"))
        return sent, events, got

    sent, events, got = run(check)
    assert sent.status.state == TaskState.TASK_STATE_COMPLETED
    assert text_of(sent.status.message.parts) == "Echo: old protocol (turn 1)"
    assert streamed_text(events) == "Echo: old stream (turn 2)"
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert got.id == sent.id and text_of(got.history[0].parts) == "old protocol"


def rpc(runtime: Runtime, body: Any, version: str | None = "1.0") -> dict[str, Any]:
    headers = {"A2A-Version": version} if version else {}
    if isinstance(body, bytes):
        response = httpx.post(f"{runtime.base_url}/a2a", content=body, headers=headers)
    else:
        response = httpx.post(f"{runtime.base_url}/a2a", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_protocol_errors_are_json_rpc_errors(runtime: Runtime) -> None:
    # Shapes the SDK client never sends, so plain HTTP; each answer is a JSON-RPC error.
    send_message = {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}

    def code(body: Any, version: str | None = "1.0") -> int:
        answer = rpc(runtime, body, version)
        assert answer["error"]["message"], answer
        assert "Traceback" not in str(answer)
        return int(answer["error"]["code"])

    def call(method: str, params: Any) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}

    assert code(b"{not json") == -32700
    assert code({"id": 1, "method": "SendMessage"}) == -32600  # no "jsonrpc": "2.0"
    assert code(call("NoSuchMethod", {})) == -32601
    assert code(call("GetTask", {"id": 7, "historyLength": "many"})) == -32602
    assert code(call("SendMessage", send_message), version=None) == -32009  # 1.0 needs its header
    assert code(call("message/send", {"message": {}}), version=None) == -32600
    long = {"message": {**send_message["message"], "parts": [{"text": "x" * 40_000}]}}
    assert code(call("SendMessage", long)) == -32602
    bad_context = {"message": {**send_message["message"], "contextId": "no spaces/slashes"}}
    assert code(call("SendMessage", bad_context)) == -32602
    assert code(call("CreateTaskPushNotificationConfig", {"taskId": "t", "url": "http://x"})) in (
        -32003,
        -32004,
    )
    ok = rpc(runtime, call("SendMessage", send_message))
    assert ok["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    # The runtime's own HTTP rules still hold on this route.
    assert httpx.get(f"{runtime.base_url}/a2a").status_code == 405
    metrics = httpx.get(f"{runtime.base_url}/metrics").text
    assert metric(metrics, "aiagent_errors_total", route="/a2a", type="method_not_found") >= 1
    ok = {"method": "POST", "route": "/a2a", "status": "200"}
    assert metric(metrics, "aiagent_http_requests_total", **ok) >= 1


def test_provider_failure_is_a_failed_task_without_the_key(broken_runtime: Runtime) -> None:
    async def check() -> tuple[Task, list[StreamResponse]]:
        task = await ask(broken_runtime.base_url, "hello")
        async with a2a_client(broken_runtime.base_url, streaming=True) as client:
            events = await send(client, message("hello again"))
        return task, events

    task, events = run(check)
    assert task.status.state == TaskState.TASK_STATE_FAILED
    reason = text_of(task.status.message.parts)
    assert reason.startswith("provider_error: ") and API_KEY not in reason
    final = events[-1].status_update.status
    assert final.state == TaskState.TASK_STATE_FAILED
    assert API_KEY not in str(events) and API_KEY not in broken_runtime.log()
    assert "Traceback" not in reason


def test_tasks_are_shared_through_the_dapr_store(
    runtime_factory: Callable[..., Runtime], model_server: ModelServer
) -> None:
    from tests.dapr.sidecar import STATE_STORE, DaprSidecar, build_daprd

    with DaprSidecar(build_daprd(), app_id="agent") as dapr:
        config = agent_config(
            "langchain", model_server, dapr={"enabled": True, "stateStore": STATE_STORE}
        )
        one = runtime_factory(config, env=dapr.env())
        two = runtime_factory(config, env=dapr.env())  # a second replica on the same store

        async def check() -> tuple[Task, Task, list[str], Task]:
            sent = await ask(one.base_url, "remember this task")
            async with a2a_client(two.base_url) as client:
                got = await client.get_task(GetTaskRequest(id=sent.id))
                listed = await client.list_tasks(ListTasksRequest(context_id=sent.context_id))
            later = await ask(two.base_url, "and this", sent.context_id)
            return sent, got, [t.id for t in listed.tasks], later

        sent, got, listed, later = run(check)
        assert got.id == sent.id and got.status.state == TaskState.TASK_STATE_COMPLETED
        assert text_of(got.history[0].parts) == "remember this task"
        assert text_of(got.status.message.parts) == "Echo: remember this task (turn 1)"
        assert listed == [sent.id]
        assert text_of(later.status.message.parts) == "Echo: and this (turn 2)"
        # The task is in the state store itself, under the agent's record keys.
        stored = httpx.get(
            f"{dapr.url}/v1.0/state/{STATE_STORE}/langchain-bot__record__a2a-task-{sent.id}"
        )
        assert stored.json()["id"] == sent.id


@pytest.mark.parametrize(("setting", "traced"), [(None, False), ("true", True)])
def test_the_sdks_tracing_is_off_unless_asked_for(setting: str | None, traced: bool) -> None:
    # The runtime exports no traces, so the SDK's per-call spans are pure cost unless a
    # deployment turns them on (and configures OpenTelemetry itself).
    env = {k: v for k, v in os.environ.items() if k != "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"}
    if setting is not None:
        env["OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"] = setting
    probe = "import agent_runtime.app, a2a.utils.telemetry as t; print(t.otel_enabled)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(traced)
