"""The cluster commands' pure parts (server-sent events, chat chunks, how each failure reads, the
status text) and their failures before any API server answers: a closed port, a TLS server
whose certificate the kubeconfig's CA did not sign (real sockets on loopback)."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_runtime import cli
from agent_runtime.cluster import Call, ClusterError, chat_deltas, describe, failure, sse_data
from localcluster.pki import Pki

CALL = Call("team-a", "support-bot", "https://127.0.0.1:6443", "create services/proxy")
GET = Call("team-a", "support-bot", "https://127.0.0.1:6443", "get aiagents")


def chunk(content: str | None = None, finish: str | None = None) -> str:
    delta = {} if content is None else {"content": content}
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"delta": delta, "finish_reason": finish}],
    }
    return json.dumps(body)


def test_sse_events_are_their_data_lines_joined() -> None:
    lines = [
        ": a comment",
        "event: message",
        "data: first",
        "",
        "data:second",  # no space after the colon
        "data:  third",  # only one space is the separator
        "",
        "",
        "id: 7",
        "data: [DONE]",  # a stream ending without its blank line
    ]
    assert list(sse_data(lines)) == ["first", "second\n third", "[DONE]"]


def test_chat_deltas_are_the_content_of_each_chunk_until_done() -> None:
    events = [
        json.dumps({"choices": [{"delta": {"role": "assistant", "content": "Echo:"}}]}),
        chunk(" hello"),
        chunk(),
        chunk(None, finish="stop"),
        json.dumps({"choices": [], "usage": {"total_tokens": 3}}),
        "[DONE]",
        chunk("after the end"),
    ]
    assert list(chat_deltas(events)) == ["Echo:", " hello"]


def test_an_error_event_after_the_start_fails_after_what_came() -> None:
    error = {"error": {"type": "provider_timeout", "message": "no answer within 30 s"}}
    pieces = chat_deltas([chunk("Thinking"), json.dumps(error), "[DONE]"])
    assert next(pieces) == "Thinking"
    with pytest.raises(ClusterError, match=r"failed while answering \(provider_timeout\): no an"):
        next(pieces)


def test_a_stream_cut_before_done_is_an_error() -> None:
    with pytest.raises(ClusterError, match="cut off before its end"):
        list(chat_deltas([chunk("half")]))


def status(code: int, reason: str, message: str, **details: str) -> str:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    return json.dumps({**body, "reason": reason, "message": message, "details": details})


@pytest.mark.parametrize(
    ("call", "code", "headers", "body", "line"),
    [
        (
            GET,
            404,
            {},
            status(
                404, "NotFound", 'aiagents.aiagents.dev "support-bot" not found', kind="aiagents"
            ),
            "no AIAgent 'support-bot' in namespace 'team-a'",
        ),
        (
            GET,
            404,
            {},
            status(404, "NotFound", "the server could not find the requested resource"),
            "the API server at https://127.0.0.1:6443 does not serve aiagents.dev/v1alpha1 "
            "AIAgents (is the operator's CRD installed?)",
        ),
        (
            CALL,
            404,
            {},
            status(404, "NotFound", 'services "support-bot" not found', kind="services"),
            "no agent 'support-bot' in namespace 'team-a' (it has no Service 'support-bot')",
        ),
        (
            CALL,
            503,
            {},
            status(503, "ServiceUnavailable", 'no endpoints available for service "support-bot"'),
            "agent 'support-bot' in namespace 'team-a' has no ready pods to answer "
            "(`aiagent status support-bot` says why)",
        ),
        (
            CALL,
            403,
            {},
            status(
                403,
                "Forbidden",
                'services "support-bot" is forbidden: User "system:serviceaccount:team-a:viewer" '
                'cannot create resource "services/proxy" in API group "" in the namespace "team-a"',
            ),
            "forbidden: user 'system:serviceaccount:team-a:viewer' may not create services/proxy "
            "in namespace 'team-a' (needed: 'create' on 'services/proxy')",
        ),
        (
            GET,
            403,
            {},
            status(403, "Forbidden", "forbidden"),
            "forbidden: you may not get aiagents in namespace 'team-a' "
            "(needed: 'get' on 'aiagents')",
        ),
        (
            GET,
            401,
            {},
            status(401, "Unauthorized", "Unauthorized"),
            "the API server at https://127.0.0.1:6443 does not accept these credentials "
            "(401 Unauthorized): log in again or check the kubeconfig's user",
        ),
        (
            CALL,
            429,
            {"retry-after": "12"},
            json.dumps({"error": {"type": "rate_limited", "message": "60 requests per minute"}}),
            "agent 'support-bot' is over its limits (429): 60 requests per minute; "
            "retry after 12 s",
        ),
        (
            CALL,
            502,
            {},
            json.dumps({"error": {"type": "provider_error", "message": "401 from the provider"}}),
            "agent 'support-bot': its model provider failed (502): 401 from the provider",
        ),
        (
            CALL,
            504,
            {},
            json.dumps({"error": {"type": "provider_timeout", "message": "no answer in 30 s"}}),
            "agent 'support-bot': its model provider did not answer in time (504): "
            "no answer in 30 s",
        ),
        (
            CALL,
            401,
            {},
            json.dumps({"error": {"type": "unauthorized", "message": "missing bearer token"}}),
            "agent 'support-bot' wants a bearer token (AIAGENT_AUTH_TOKEN is set on it), which "
            "the API server's proxy cannot pass on: reach it with kubectl port-forward instead",
        ),
        (CALL, 500, {}, "Internal Server Error", "agent 'support-bot' answered 500: Internal"),
    ],
    ids=[
        "no-aiagent",
        "no-crd",
        "no-service",
        "no-ready-pods",
        "no-proxy-permission",
        "no-get-permission",
        "bad-credentials",
        "over-limits",
        "provider-failed",
        "provider-timeout",
        "agent-auth",
        "not-json",
    ],
)
def test_each_failure_reads_as_one_line(
    call: Call, code: int, headers: dict[str, str], body: str, line: str
) -> None:
    message = str(failure(call, code, headers, body))
    assert message.startswith(line), message
    assert "\n" not in message


AGENT: dict[str, Any] = {
    "metadata": {"name": "support-bot", "namespace": "team-a", "generation": 4},
    "status": {
        "observedGeneration": 3,
        "phase": "Pending",
        "replicas": 0,
        "endpoint": "http://support-bot.team-a.svc.cluster.local",
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "SecretNotFound",
                "message": "Secret openai not found",
            },
            {"type": "DaprReady", "status": "True", "reason": "SidecarsReady"},
        ],
    },
}


def test_status_text_names_phase_replicas_endpoint_and_conditions() -> None:
    assert describe(AGENT) == [
        "support-bot in namespace team-a: Pending",
        "  (for generation 3; the spec is at generation 4)",
        "  ready:     0/0 replicas",
        "  endpoint:  http://support-bot.team-a.svc.cluster.local",
        "  TYPE       STATUS  REASON          MESSAGE",
        "  Ready      False   SecretNotFound  Secret openai not found",
        "  DaprReady  True    SidecarsReady",
    ]
    fresh = {"metadata": {"name": "new", "namespace": "team-a"}}
    assert describe(fresh) == [
        "new in namespace team-a: Unknown (no status yet: is the operator running?)"
    ]


# Failures before an API server answers, through the real command.


def write_kubeconfig(path: Path, server: str, ca: Path | None = None) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "here",
                "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": "t0k"}}],
            }
        )
    )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", [["status"], ["invoke", "--", "hi"], ["chat"]])
def test_a_closed_port_names_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    server = f"https://127.0.0.1:{free_port()}"
    config = write_kubeconfig(tmp_path / "config", server)
    name, rest = command[0], command[1:]
    code, out, err = run(capsys, name, "support-bot", "--kubeconfig", str(config), *rest)
    assert code == 1 and out == ""
    assert err.startswith(f"aiagent: cannot connect to the API server at {server}: "), err
    assert "Connection refused" in err and err.count("\n") == 1


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Pki]]:
    """A TLS listener with a certificate of its own CA; it never answers HTTP."""
    pki = Pki(tmp_path / "server-pki", apiserver_ips=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            connection, _ = listener.accept()
            with context.wrap_socket(connection, server_side=True):
                pass
        except (OSError, ssl.SSLError):
            pass  # the client refused our certificate: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", pki
    listener.close()
    thread.join(timeout=10)


def test_a_server_certificate_of_another_ca_is_a_tls_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tls_server: tuple[str, Pki]
) -> None:
    server, _ = tls_server
    other = Pki(tmp_path / "other-pki", apiserver_ips=("127.0.0.1",))
    config = write_kubeconfig(tmp_path / "config", server, ca=other.ca_cert)
    code, out, err = run(capsys, "status", "support-bot", "--kubeconfig", str(config))
    assert code == 1 and out == ""
    # Both CAs are named "ca": OpenSSL finds ours by name, and its signature does not match.
    assert err.startswith(f"aiagent: TLS with the API server at {server} failed: certificate "), err
    assert err.endswith("(check the cluster's certificate-authority in the kubeconfig)\n"), err


def test_a_bad_kubeconfig_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "status", "x", "--kubeconfig", str(tmp_path / "absent"), "--context", "prod"
    )
    assert code == 1
    assert err.startswith("aiagent: the kubeconfig names context 'prod' but has none"), err


def test_run_and_check_do_not_load_the_cluster_client() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, agent_runtime.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('httpx', 'aiagent_operator', "
        "'agent_runtime.cluster'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
