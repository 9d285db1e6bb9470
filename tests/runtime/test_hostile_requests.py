"""Hostile requests: schemathesis against the runtime's own OpenAPI, and slow or oversized clients
on raw sockets. Each against a real uvicorn runtime, for LangChain and CrewAI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.model_server import ModelServer

from .conftest import API_KEY, Runtime, agent_config, start_runtime

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_BODY = 64 * 1024
# Bounded and reproducible: the same examples on every run.
MAX_EXAMPLES = 20
SEED = 20261206
# Checks that say nothing here: the schema cannot say that a chat must end with a user message
# or that a Responses request may not bring tools of its own (both refused, as documented, so
# "valid data rejected"); JSON-RPC answers its errors with a 200 and pydantic's lax mode takes
# 0 for false ("invalid data accepted"); not_a_server_error gives way to ours, which allows the
# documented 502/503/504 (tests/runtime/schemathesis_hooks.py).
EXCLUDED_CHECKS = "positive_data_acceptance,negative_data_rejection,not_a_server_error"


@pytest.fixture(scope="module", params=["langchain", "crewai"])
def hostile_runtime(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    runtime = start_runtime(
        agent_config(request.param, model_server),
        tmp_path_factory.mktemp(f"hostile-{request.param}"),
        env={
            "AIAGENT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "AIAGENT_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "AIAGENT_MAX_BODY_BYTES": str(MAX_BODY),
        },
    )
    yield runtime
    runtime.stop()
    assert API_KEY not in runtime.log(), "the API key reached the runtime's log"


def test_schemathesis_finds_nothing(hostile_runtime: Runtime) -> None:
    """Every operation of /openapi.json, its coverage and fuzzing phases: answers as documented
    (status, content type, schema, headers), no undocumented 5xx, no stack trace, no secret."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{hostile_runtime.base_url}/openapi.json",
            "--checks=all",
            f"--exclude-checks={EXCLUDED_CHECKS}",
            f"--max-examples={MAX_EXAMPLES}",
            f"--seed={SEED}",
            "--generation-deterministic",
            "--workers=1",
            "--request-timeout=20",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.runtime.schemathesis_hooks",
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert " passed" in result.stdout and "10 selected" in result.stdout, result.stdout
    assert API_KEY not in hostile_runtime.log()
    # Every stack trace in the log is an error nobody handled (a 500 waiting to happen).
    assert "Traceback" not in hostile_runtime.log(), hostile_runtime.log()[-5000:]


def connect(runtime: Runtime) -> socket.socket:
    host, port = runtime.base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answer_and_close(sock: socket.socket, within: float) -> bytes:
    """What the server says until it closes the connection, which it must do within `within`."""
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the connection was still open after {within} s: {received!r}"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def drip(sock: socket.socket, data: bytes, every: float) -> float:
    """Send `data` a byte at a time; seconds until the server cut us off (inf if it never did)."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started
        time.sleep(every)
    return float("inf")


def test_a_silent_connection_is_closed(hostile_runtime: Runtime) -> None:
    with connect(hostile_runtime) as sock:
        started = time.monotonic()
        answer = answer_and_close(sock, within=HEADER_TIMEOUT + 4)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9


def test_headers_sent_byte_by_byte_are_cut_off(hostile_runtime: Runtime) -> None:
    head = b"POST /v1/invoke HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(hostile_runtime) as sock:
        # 0.05 s a byte: the head would take 12 s; the deadline is HEADER_TIMEOUT.
        cut_after = drip(sock, head, every=0.05)
        assert cut_after < HEADER_TIMEOUT + 4
        answer = answer_and_close(sock, within=2)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_body_sent_byte_by_byte_is_cut_off(hostile_runtime: Runtime) -> None:
    body = b'{"input": "' + b"a" * 200 + b'"}'
    head = (
        b"POST /v1/invoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with connect(hostile_runtime) as sock:
        sock.sendall(head)
        cut_after = drip(sock, body, every=0.05)
        assert cut_after < BODY_TIMEOUT + 4
        answer = answer_and_close(sock, within=2)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"request_timeout" in answer and b"connection: close" in answer.lower()


def test_a_huge_content_length_is_refused_unread(hostile_runtime: Runtime) -> None:
    head = (
        b"POST /v1/invoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 1000000000000\r\n\r\n"
    )
    with connect(hostile_runtime) as sock:
        sock.sendall(head + b"a" * 1024)
        answer = answer_and_close(sock, within=5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert b"request_too_large" in answer


def test_a_chunked_body_over_the_limit_is_refused_while_sent(hostile_runtime: Runtime) -> None:
    head = (
        b"POST /v1/invoke HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"a" * 16 * 1024)
    sent = 0
    with connect(hostile_runtime) as sock:
        sock.sendall(head)
        sock.settimeout(0.01)
        answer = b""
        while sent < 100 * MAX_BODY:  # an endless upload, as far as the server knows
            try:
                sock.sendall(chunk)
                sent += 16 * 1024
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break
        answer += answer_and_close(sock, within=5)
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    # The server stopped reading soon after the limit (socket buffers hold a few chunks more).
    assert sent < 100 * MAX_BODY


def test_an_oversized_head_is_refused(hostile_runtime: Runtime) -> None:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + b"x-big: " + b"a" * (100 * 1024)
    with connect(hostile_runtime) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = answer_and_close(sock, within=5)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer
