"""MCP tools end to end: a real MCP server (the official SDK's FastMCP, streamable HTTP), the
runtime as a process with the agent.yaml and env the operator renders, and the fake model calling
the server's tools by name."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from mcp.server.fastmcp import Context, FastMCP
from openai import OpenAI
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_runtime.errors import Redactor
from agent_runtime.mcp_config import McpServer
from agent_runtime.tools.mcp import McpStartupError, McpToolbox
from aiagent_operator import api, render
from aiagent_operator.settings import OperatorSettings
from localcluster.model_server import ModelServer
from localcluster.procs import free_port

from .conftest import API_KEY, FRAMEWORKS, POLL, Runtime, start_runtime

TOKEN = f"mcp-token-{uuid.uuid4().hex}"  # the Secret's value; it must never show anywhere
ALLOWED = ["record", "explode", "slow", "echo_token"]
TIMEOUT_SECONDS = 2


class ProbeServer:
    """An MCP server that records what reached it; every request must carry the bearer token."""

    def __init__(self) -> None:
        self.ran: dict[str, str] = {}  # note -> the receipt the tool answered with
        self.forbidden_runs = 0
        self.requests: list[tuple[str, str, str]] = []  # method, authorization, x-tenant
        mcp = FastMCP("probe", log_level="WARNING")

        @mcp.tool()
        def record(note: str) -> str:
            """Record a note and return a receipt for it."""
            self.ran[note] = f"receipt-{uuid.uuid4().hex}"
            return self.ran[note]

        @mcp.tool()
        def explode(reason: str) -> str:
            """Always fails."""
            raise ValueError(f"boom: {reason}")

        @mcp.tool()
        async def slow(seconds: float) -> str:
            """Answers after `seconds`."""
            await asyncio.sleep(seconds)
            return "finally"

        @mcp.tool()
        def echo_token(ctx: Context) -> str:  # type: ignore[type-arg]
            """Repeats the credential it was called with (a careless server)."""
            request = ctx.request_context.request
            assert request is not None
            return str(request.headers["authorization"]).removeprefix("Bearer ")

        @mcp.tool()
        def forbidden() -> str:
            """Not on the agent's allow-list."""
            self.forbidden_runs += 1
            return "should never run"

        @mcp.tool()
        def get() -> str:
            """A name that, prefixed with `http`, is a built-in tool's."""
            return "got"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            self._gate(mcp.streamable_http_app()),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def _gate(self, app: ASGIApp) -> ASGIApp:
        async def gate(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                auth = headers.get("authorization", "")
                self.requests.append((scope["method"], auth, headers.get("x-tenant", "")))
                if auth != f"Bearer {TOKEN}":
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await app(scope, receive, send)

        return gate

    def start(self) -> ProbeServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def probe() -> Iterator[ProbeServer]:
    server = ProbeServer().start()
    yield server
    server.stop()


def rendered(framework: str, model_server: ModelServer, url: str) -> tuple[dict[str, Any], str]:
    """agent.yaml and the header's variable name exactly as the operator renders them from an
    AIAgent whose MCP header comes from a Secret."""
    spec = {
        "framework": framework,
        "model": {
            "provider": "openai-compatible",
            "name": "fake-model",
            "baseURL": model_server.base_url,
            "timeoutSeconds": 20,
        },
        "agent": {
            "instructions": "You are brief.",
            "tools": ["calculator"],
            "mcpServers": [
                {
                    "name": "probe",
                    "url": url,
                    "tools": ALLOWED,
                    "timeoutSeconds": TIMEOUT_SECONDS,
                    "headers": [
                        {
                            "name": "Authorization",
                            "valueFrom": {"secretKeyRef": {"name": "probe-mcp", "key": "auth"}},
                        },
                        {"name": "X-Tenant", "value": "team-a"},
                    ],
                }
            ],
        },
        "dapr": {"enabled": False},
    }
    body = {"metadata": {"name": f"{framework}-mcp", "namespace": "t", "uid": "u"}, "spec": spec}
    children = render.render_children(api.AIAgent.from_body(body), OperatorSettings())
    configmap, deployment = children[0], children[1]
    agent_yaml = configmap["data"][render.CONFIG_FILE]
    assert "probe-mcp" not in agent_yaml and TOKEN not in agent_yaml
    (variable,) = [
        e["name"]
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if e.get("valueFrom", {}).get("secretKeyRef") == {"name": "probe-mcp", "key": "auth"}
    ]
    return yaml.safe_load(agent_yaml), variable


@pytest.fixture(scope="module", params=FRAMEWORKS)
def agent(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    probe: ProbeServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    config, variable = rendered(request.param, model_server, probe.url)
    # What the kubelet does with the Deployment's secretKeyRef.
    env = {variable: f"Bearer {TOKEN}"}
    runtime = start_runtime(config, tmp_path_factory.mktemp(request.param), env)
    yield runtime
    runtime.stop()


def invoke(runtime: Runtime, text: str) -> httpx.Response:
    response = httpx.post(f"{runtime.base_url}/v1/invoke", json={"input": text}, timeout=60)
    assert TOKEN not in response.text
    return response


def test_the_tool_runs_and_its_output_reaches_the_answer(
    agent: Runtime, probe: ProbeServer
) -> None:
    note = uuid.uuid4().hex
    response = invoke(agent, f'use probe_record {{"note": "{note}"}}')
    assert response.status_code == 200, response.text
    assert note in probe.ran, "the MCP server never ran the tool"
    assert response.json()["output"] == f"The tool said: {probe.ran[note]}."


def test_openai_client_gets_the_tool_output_too(agent: Runtime, probe: ProbeServer) -> None:
    note = uuid.uuid4().hex
    client = OpenAI(base_url=f"{agent.base_url}/v1", api_key="unused", timeout=60)
    completion = client.chat.completions.create(
        model="agent",
        messages=[{"role": "user", "content": f'use probe_record {{"note": "{note}"}}'}],
    )
    assert completion.choices[0].message.content == f"The tool said: {probe.ran[note]}."


def test_a_raising_tool_is_a_tool_error_not_a_500(agent: Runtime) -> None:
    reason = uuid.uuid4().hex
    response = invoke(agent, f'use probe_explode {{"reason": "{reason}"}}')
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert output.startswith("The tool said: error: ") and f"boom: {reason}" in output


def test_a_slow_tool_times_out_as_a_tool_error(agent: Runtime, probe: ProbeServer) -> None:
    started = time.monotonic()
    response = invoke(agent, 'use probe_slow {"seconds": 8}')
    assert response.status_code == 200, response.text
    assert f"did not answer within {TIMEOUT_SECONDS} s" in response.json()["output"]
    assert time.monotonic() - started < 7
    # The session survives a timed-out call.
    note = uuid.uuid4().hex
    assert invoke(agent, f'use probe_record {{"note": "{note}"}}').status_code == 200
    assert note in probe.ran


def test_only_allowed_tools_are_offered_to_the_model(
    agent: Runtime, model_server: ModelServer, probe: ProbeServer
) -> None:
    invoke(agent, "hello")
    offered = [
        {t["function"]["name"] for t in body.get("tools") or []}
        for body in model_server.recorder.requests
        if any(t["function"]["name"] == "probe_record" for t in body.get("tools") or [])
    ]
    assert offered, "no request offered the MCP tools"
    for names in offered:
        assert {"calculator", *(f"probe_{t}" for t in ALLOWED)} <= names
        assert "probe_forbidden" not in names and "forbidden" not in names
    # Even a model that asks for it by name does not reach it. (LangChain and CrewAI tell the
    # model the tool does not exist; the OpenAI Agents SDK ends the run: a 502, the model's fault.)
    response = invoke(agent, "use probe_forbidden {}")
    assert response.status_code in (200, 502), response.text
    assert probe.forbidden_runs == 0


def test_the_secret_header_arrives_and_is_never_shown(agent: Runtime, probe: ProbeServer) -> None:
    assert probe.requests, "the MCP server saw no request"
    assert all(auth == f"Bearer {TOKEN}" for _, auth, _ in probe.requests)
    assert all(tenant == "team-a" for _, _, tenant in probe.requests)
    # A server that echoes the credential: the model (and the client) see it scrubbed.
    response = invoke(agent, "use probe_echo_token {}")
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "The tool said: [redacted]."
    assert TOKEN not in agent.config_path.read_text()


def test_shutdown_closes_the_session_and_nothing_leaked(
    agent: Runtime, probe: ProbeServer, model_server: ModelServer
) -> None:
    """Last in the module for each framework: it stops the runtime."""
    deletes_before = sum(1 for method, _, _ in probe.requests if method == "DELETE")
    # uvicorn re-raises the SIGTERM it caught once it has drained.
    assert agent.stop() in (0, -signal.SIGTERM)
    assert sum(1 for method, _, _ in probe.requests if method == "DELETE") > deletes_before
    log = agent.log()
    assert TOKEN not in log and "MCP server probe: 4 of its" in log
    assert all(TOKEN not in json.dumps(body) for body in model_server.recorder.requests)


def spawn(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> Runtime:
    """The runtime as a process, not waiting for it to be ready (it will not be)."""
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "runtime.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "run", str(config_path), "--port", str(port)],
        env={**os.environ, "MODEL_API_KEY": API_KEY, "HOME": str(tmp_path), **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Runtime(process, f"http://127.0.0.1:{port}", log_path, config_path)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_unreachable_server_fails_readiness_then_the_process(
    framework: str, model_server: ModelServer, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    config, variable = rendered(framework, model_server, url)
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")  # the kubelet creates it empty
    runtime = spawn(
        config,
        tmp_path,
        {
            variable: f"Bearer {TOKEN}",
            "AIAGENT_MCP_CONNECT_SECONDS": "6",
            "AIAGENT_TERMINATION_LOG": str(termination_log),
        },
    )
    try:
        readiness: list[str] = []
        deadline = time.monotonic() + 30
        while runtime.process.poll() is None and time.monotonic() < deadline:
            try:
                ready = POLL.get(f"{runtime.base_url}/readyz")
                assert POLL.get(f"{runtime.base_url}/healthz").status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            assert ready.status_code == 503
            readiness.append(ready.json()["error"]["message"])
            time.sleep(0.2)
        assert runtime.process.wait(timeout=30) == 1, runtime.log()
    finally:
        runtime.stop(signal.SIGKILL)
    # While it retried, /readyz said which server is missing and why.
    waiting = f"waiting for MCP server 'probe' at {url}: ConnectError"
    assert any(waiting in m for m in readiness), f"{readiness}\n{runtime.log()}"
    reason = f"MCP server 'probe' at {url} is unreachable: ConnectError"
    assert reason in termination_log.read_text()  # what the pod's status (and AIAgent) shows
    log = runtime.log()
    assert reason in log and TOKEN not in log and TOKEN not in " ".join(readiness)


# In-process: the toolbox on this test's own event loop, against the same real server.


def probe_server(probe: ProbeServer, **changes: Any) -> McpServer:
    os.environ["TEST_MCP_PROBE_AUTH"] = f"Bearer {TOKEN}"
    fields: dict[str, Any] = {
        "name": "probe",
        "url": probe.url,
        "headers": [{"name": "Authorization", "valueFromEnv": "TEST_MCP_PROBE_AUTH"}],
        "timeoutSeconds": TIMEOUT_SECONDS,
        **changes,
    }
    return McpServer.model_validate(fields)


def test_call_blocking_refuses_the_loop_thread_and_works_from_a_worker(
    probe: ProbeServer,
) -> None:
    async def scenario() -> None:
        toolbox = McpToolbox([probe_server(probe, tools=["record"])], Redactor([]))
        (tool,) = await toolbox.connect(patience=0)
        try:
            assert tool.name == "probe_record"
            # On the loop that holds the session, blocking would deadlock: it refuses at once.
            with pytest.raises(RuntimeError, match="event loop thread"):
                tool.call_blocking({"note": "on-the-loop"})
            assert "on-the-loop" not in probe.ran
            receipt = await asyncio.to_thread(tool.call_blocking, {"note": "from-a-worker"})
            assert receipt == probe.ran["from-a-worker"]
        finally:
            await toolbox.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_startup_errors_name_the_server_and_the_problem(probe: ProbeServer) -> None:
    async def error_of(server: McpServer, reserved: tuple[str, ...] = ()) -> str:
        toolbox = McpToolbox([server], Redactor([TOKEN]), reserved)
        with pytest.raises(McpStartupError) as caught:
            await toolbox.connect(patience=0)
        return str(caught.value)

    async def scenario() -> None:
        missing = await error_of(probe_server(probe, tools=["record", "no_such_tool"]))
        assert "MCP server 'probe'" in missing and "has no tool no_such_tool" in missing
        clash = await error_of(probe_server(probe, name="http", tools=["get"]), ("http_get",))
        assert "two tools would be offered to the model as http_get" in clash
        refused = await error_of(probe_server(probe, headers=[]))
        assert "MCP server 'probe'" in refused and "401" in refused
        os.environ.pop("TEST_MCP_UNSET", None)
        unset = probe_server(
            probe, headers=[{"name": "Authorization", "valueFromEnv": "TEST_MCP_UNSET"}]
        )
        assert "TEST_MCP_UNSET, which is not set" in await error_of(unset)

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
