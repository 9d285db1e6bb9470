"""A deterministic OpenAI-compatible model server for the tests and the demo, on a real socket.

It stands in for the LLM provider (the one part no test may call for real) and answers like one:
- plain answers: "Echo: <last user message> (turn N)" where N counts the user messages sent, so a
  test can see whether history reached the model;
- a tool call when the last user message starts with "calculate ": the model asks for the
  `calculator` tool, then answers "The result is <tool output>." once the tool result comes back;
- a call of any tool when the last user message is "use <tool> <JSON arguments>" (arguments
  optional: {}): the model asks for <tool> with those arguments, then answers
  "The tool said: <tool output>." once the tool result comes back;
- CrewAI's prompts, where the user's input follows "Current Task:";
- model "slow-model": answers only after 30 s; streaming, it sends one word, then stalls
  (for timeouts and disconnects);
- model "unhurried-model": answers after 1.5 s (for graceful shutdown);
- model "broken-model": a 401 whose message repeats the API key it got (for secret scrubbing);
- provider faults, by model name: "failing-model" answers every request 500; "flaky-model" the
  first request of each conversation 500 (then it answers); "dropping-model" closes the first
  request's connection without a word; "ratelimited-model" answers the first request 429 with
  Retry-After: 1; "overloaded-model" answers every request so; "hanging-model" never answers;
  "cut-model" starts to answer (a few SSE chunks, or part of the JSON), then closes the
  connection half way. "The first request of a conversation" is per model and message list, so
  a client's retry of the same request is the second one. The same faults, with any model, for
  a request whose last user message holds the name in brackets (e.g. "hi [flaky-model]").
Streaming (`stream: true`) sends one SSE chunk per word, with usage at the end when asked.
A request's max_completion_tokens (or max_tokens) cuts the answer to that many words (a word is
a token here), finish_reason "length", as a provider does; the recorder keeps every request body.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

SLOW_SECONDS = 30.0
UNHURRIED_SECONDS = 1.5
HANG_SECONDS = 3600.0
RETRY_AFTER_SECONDS = 1
CUT_AFTER_WORDS = 3


@dataclass
class Recorder:
    """What the server saw, for assertions."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)
    cancelled_streams: int = 0
    completed_streams: int = 0
    # Faults: when each request of a faulty model arrived (monotonic), by its conversation.
    attempts: dict[str, list[float]] = field(default_factory=dict)
    dropped_connections: int = 0

    def attempts_of(self, model: str) -> int:
        """How many requests of `model` (a fault model's name) arrived, over all conversations."""
        return sum(len(times) for key, times in self.attempts.items() if key.startswith(model))


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) for m in messages)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    call = {
        "id": f"call_{uuid.uuid4().hex[:8]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def _tool_use(question: str) -> tuple[str, dict[str, Any]] | None:
    """(tool, arguments) of "use <tool> <JSON object>", or None when the question is not one."""
    words = question.split(" ", 2)
    if len(words) < 2 or words[0] != "use" or not words[1]:
        return None
    try:
        arguments = json.loads(words[2]) if len(words) == 3 and words[2].strip() else {}
    except json.JSONDecodeError:
        return None
    return (words[1], arguments) if isinstance(arguments, dict) else None


def _called_tool(messages: list[dict[str, Any]]) -> str:
    """The name of the tool the last assistant message called."""
    for message in reversed(messages):
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if calls:
            return str((calls[-1].get("function") or {}).get("name", ""))
    return ""


def answer_for(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message this server answers with (content or a tool call)."""
    users = [m for m in messages if m.get("role") == "user"]
    last = messages[-1]
    # CrewAI wraps the task (our user's input) in a prompt of its own.
    crewai = bool(users) and "Current Task:" in _text(users[-1])
    if last.get("role") == "tool":
        if _called_tool(messages) == "calculator":
            return {"role": "assistant", "content": f"The result is {_text(last)}."}
        return {"role": "assistant", "content": f"The tool said: {_text(last)}."}
    question = _text(users[-1]) if users else ""
    if crewai:
        question = question.split("Current Task:", 1)[1].split("\n", 1)[0].strip()
    if question.startswith("calculate "):
        expression = question.removeprefix("calculate ").strip()
        return _tool_call("calculator", {"expression": expression})
    used = _tool_use(question)
    if used:
        return _tool_call(*used)
    # CrewAI sees one user message per request; our adapter lists earlier turns in it.
    turn = 1 + _text(users[-1]).count("\nUser: ") if crewai else len(users)
    text = f"Echo: {question} (turn {turn})"
    return {"role": "assistant", "content": text}


def create_app(recorder: Recorder, latency: float = 0.0) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        if latency:  # a provider's think time (benchmarks)
            await asyncio.sleep(latency)
        recorder.requests.append(body)
        recorder.authorization.append(request.headers.get("authorization", ""))
        model = body.get("model", "")
        messages = body.get("messages", [])
        if "broken-model" in model:
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            error = {
                "message": f"Incorrect API key provided: {key}",
                "type": "invalid_request_error",
            }
            return JSONResponse({"error": error}, status_code=401)
        fault = await _fault(recorder, request, model, messages, body)
        if fault is not None:
            return fault
        if "slow-model" in model and not body.get("stream"):
            await asyncio.sleep(SLOW_SECONDS)
        if "unhurried-model" in model:
            await asyncio.sleep(UNHURRIED_SECONDS)
        message = answer_for(messages)
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        words = str(message.get("content") or "").split(" ")
        cut = isinstance(cap, int) and 0 < cap < len(words) and not message.get("tool_calls")
        if cut:
            message = {**message, "content": " ".join(words[:cap])}
        usage = {
            "prompt_tokens": _words(messages),
            "completion_tokens": len(str(message.get("content") or "").split()) or 1,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        created = int(time.time())
        if body.get("stream"):
            return StreamingResponse(
                _stream(recorder, model, message, usage, body, created),
                media_type="text/event-stream",
            )
        finish = "tool_calls" if message.get("tool_calls") else "length" if cut else "stop"
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


FAULT_MODELS = (
    "failing-model",
    "flaky-model",
    "dropping-model",
    "ratelimited-model",
    "overloaded-model",
    "hanging-model",
    "cut-model",
)


async def _fault(
    recorder: Recorder,
    request: Request,
    model: str,
    messages: list[dict[str, Any]],
    body: dict[str, Any],
) -> Response | None:
    """The faulty answer a fault model gives this request, or None to answer normally."""
    users = [m for m in messages if m.get("role") == "user"]
    asked = _text(users[-1]) if users else ""
    name = next((f for f in FAULT_MODELS if f in model or f"[{f}]" in asked), None)
    if name is None:
        return None
    times = recorder.attempts.setdefault(f"{name}:{json.dumps(messages)}", [])
    times.append(time.monotonic())
    first = len(times) == 1
    if name == "failing-model" or (name == "flaky-model" and first):
        error = {
            "message": "The server had an error processing your request.",
            "type": "server_error",
        }
        return JSONResponse({"error": error}, status_code=500)
    if name == "overloaded-model" or (name == "ratelimited-model" and first):
        error = {"message": "Rate limit reached; try again later.", "type": "rate_limit_error"}
        return JSONResponse(
            {"error": error},
            status_code=429,
            headers={"retry-after": str(RETRY_AFTER_SECONDS)},
        )
    if name == "hanging-model":
        await asyncio.sleep(HANG_SECONDS)
    if name == "dropping-model" and first:
        recorder.dropped_connections += 1
        return _Drop()
    if name == "cut-model":
        hang_up = _hang_up(request.scope)
        message = answer_for(messages)
        created = int(time.time())
        if body.get("stream"):
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            source = _stream(recorder, model, message, usage, body, created, cut=hang_up)
            return StreamingResponse(source, media_type="text/event-stream")
        return StreamingResponse(_cut_json(hang_up), media_type="application/json")
    return None


TRANSPORT = "model_server.transport"


def _with_transport(app: Starlette) -> Any:
    """Put the connection's transport in the scope (uvicorn's `send` is a method of the request's
    cycle, which holds it), so a fault can close the connection: ASGI has no way to."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        scope[TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        await app(scope, receive, send)

    return asgi


def _hang_up(scope: Any) -> Any:
    async def close() -> None:
        transport = scope.get(TRANSPORT)
        if transport is not None:
            transport.close()
        await asyncio.sleep(0.05)  # connection_lost runs: uvicorn writes nothing more

    return close


async def _cut_json(hang_up: Any) -> Any:
    yield '{"id": "chatcmpl-cut", "object": "chat.completion", "choices": [{"index": 0, '
    await hang_up()


class _Drop(Response):
    """Closes the connection without answering: no status line, no headers."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _hang_up(scope)()


async def _stream(
    recorder: Recorder,
    model: str,
    message: dict[str, Any],
    usage: dict[str, int],
    body: dict[str, Any],
    created: int,
    cut: Any = None,
) -> Any:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    try:
        yield event({"role": "assistant", "content": ""})
        if "slow-model" in model:  # starts to answer, then stalls
            yield event({"content": "Thinking..."})
            await asyncio.sleep(SLOW_SECONDS)
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            yield event({"tool_calls": [{"index": 0, **call}]})
            yield event({}, "tool_calls")
        else:
            for i, word in enumerate(str(message["content"]).split(" ")):
                if cut is not None and i == CUT_AFTER_WORDS:
                    await cut()  # half way: the connection closes, no [DONE]
                    return
                yield event({"content": word if i == 0 else f" {word}"})
                await asyncio.sleep(0.005)
            yield event({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
        recorder.completed_streams += 1
    except (asyncio.CancelledError, GeneratorExit):
        recorder.cancelled_streams += 1  # the client (our runtime) hung up
        raise


class ModelServer:
    """Runs the fake provider in a background thread; `base_url` ends in /v1."""

    def __init__(self, port: int = 0, latency_ms: float = 0, host: str = "127.0.0.1") -> None:
        """``host``: loopback for processes here; the real node's address for pods."""
        self.recorder = Recorder()
        self.host = host
        with socket.socket() as s:
            s.bind((host, port))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            _with_transport(create_app(self.recorder, latency_ms / 1000)),
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ModelServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


if __name__ == "__main__":  # `python -m localcluster.model_server [--latency-ms N]`
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0, help="think time per answer")
    args = parser.parse_args()
    server = ModelServer(port=args.port, latency_ms=args.latency_ms).start()
    print(f"model server on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
