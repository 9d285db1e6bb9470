"""Agents in a cluster, reached from outside with the user's kubeconfig: the AIAgent's status from
the API server, and the agent's HTTP API through the API server's Service proxy
(`/api/v1/namespaces/NS/services/NAME:http/proxy/...`), so no port-forward and no Ingress.

The proxy passes server-sent events through as they come (Go's reverse proxy flushes
`text/event-stream` at once), so answers stream. Every failure becomes a `ClusterError` of one
line that says what is wrong and, for permissions, which one is missing.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:  # the operator's loader: imported at run time only by `AgentCluster.connect`
    from aiagent_operator.credentials import Credentials

AIAGENTS = "/apis/aiagents.dev/v1alpha1"
SERVICE_PORT = "http"  # the name of the port of every agent's Service (render.render_service)
USER_AGENT = "aiagent-cli"


class ClusterError(Exception):
    """One line for stderr: what failed and what to do about it; `status` is the HTTP status
    (0: no answer at all)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Call:
    """What a request was for, so that its failure can be told in the user's terms."""

    namespace: str
    name: str
    server: str
    permission: str  # the RBAC verb and resource the request needs, e.g. "get aiagents"


class AgentCluster:
    """One API server, one namespace, the user's credentials."""

    def __init__(
        self,
        credentials: Credentials,
        namespace: str,
        *,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.namespace = namespace
        self.server = credentials.server.rstrip("/")
        verify: ssl.SSLContext | bool = True
        if self.server.startswith("https:"):
            verify = credentials.ssl_context()
        # The read timeout is between two pieces of an answer, not for the whole of it.
        self._http = httpx.Client(
            base_url=self.server,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=15.0),
            headers={"User-Agent": USER_AGENT},
            transport=transport,
        )

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str | None = None,
        timeout: float = 300.0,
    ) -> AgentCluster:
        """The kubeconfig's context (`context`, else the current one), exec plugins allowed;
        the namespace given, else the context's, else `default`."""
        from aiagent_operator.credentials import CredentialsError, from_kubeconfig

        try:
            credentials = from_kubeconfig(
                [p for p in kubeconfig.split(os.pathsep) if p] if kubeconfig else None,
                context=context,
                allow_exec=True,
            )
        except CredentialsError as exc:
            raise ClusterError(str(exc)) from None
        if not credentials.server:
            raise ClusterError(f"the kubeconfig's context {credentials.context!r} has no server")
        try:
            return cls(
                credentials, namespace or credentials.namespace or "default", timeout=timeout
            )
        except ssl.SSLError as exc:
            raise ClusterError(f"the kubeconfig's certificates do not load: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentCluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def agent(self, name: str) -> dict[str, Any]:
        """The AIAgent object (`get aiagents`)."""
        call = self._call(name, "get aiagents")
        path = f"{AIAGENTS}/namespaces/{quote(self.namespace)}/aiagents/{quote(name)}"
        response = self._send(call, "GET", path)
        body: dict[str, Any] = response.json()
        return body

    def chat_stream(self, name: str, messages: list[dict[str, str]]) -> Iterator[str]:
        """The answer to the conversation `messages`, piece by piece as the agent streams it
        (`POST /v1/chat/completions` with `stream: true`)."""
        call = self._call(name, "create services/proxy")
        body = {"messages": messages, "stream": True}
        with self._stream(call, "POST", self._proxy(name, "/v1/chat/completions"), body) as lines:
            yield from chat_deltas(sse_data(lines))

    def invoke(self, name: str, text: str, session_id: str | None = None) -> dict[str, Any]:
        """One turn of a session kept by the agent (`POST /v1/invoke`; it answers whole)."""
        call = self._call(name, "create services/proxy")
        body: dict[str, Any] = {"input": text}
        if session_id:
            body["session_id"] = session_id
        response = self._send(call, "POST", self._proxy(name, "/v1/invoke"), body)
        answer: dict[str, Any] = response.json()
        return answer

    def _call(self, name: str, permission: str) -> Call:
        return Call(self.namespace, name, self.server, permission)

    def _proxy(self, name: str, path: str) -> str:
        service = f"{quote(name)}:{SERVICE_PORT}"
        return f"/api/v1/namespaces/{quote(self.namespace)}/services/{service}/proxy{path}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if token := self.credentials.bearer_token():
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _send(self, call: Call, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise unreachable(call, exc) from None
        if response.status_code >= 400:
            raise failure(call, response.status_code, response.headers, response.text)
        return response

    def _stream(self, call: Call, method: str, path: str, body: Any) -> _Lines:
        headers = {**self._headers(), "Accept": "text/event-stream"}
        request = self._http.build_request(method, path, json=body, headers=headers)
        return _Lines(self._http, request, call)


class _Lines:
    """The lines of a streamed response, as they arrive; failures become `ClusterError`s."""

    def __init__(self, http: httpx.Client, request: httpx.Request, call: Call) -> None:
        self._http, self._request, self._call = http, request, call
        self._response: httpx.Response | None = None

    def __enter__(self) -> Iterator[str]:
        try:
            self._response = self._http.send(self._request, stream=True)
        except httpx.HTTPError as exc:
            raise unreachable(self._call, exc) from None
        response = self._response
        if response.status_code >= 400:
            text = response.read().decode(errors="replace")
            response.close()
            raise failure(self._call, response.status_code, response.headers, text)
        return self._lines(response)

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        try:
            yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise unreachable(self._call, exc, midway=True) from None

    def __exit__(self, *_: object) -> None:
        if self._response is not None:
            self._response.close()


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event (its `data:` lines joined), as each event ends."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
        # "event:", "id:", "retry:" and ":" comments say nothing the chat stream needs.
    if data:  # a stream cut after its last data line
        yield "\n".join(data)


def chat_deltas(events: Iterable[str]) -> Iterator[str]:
    """The text of OpenAI chat completion chunks, until `[DONE]`; an error event (the runtime's
    way to fail once the answer has begun) raises."""
    for data in events:
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ClusterError(f"the agent sent an event that is not JSON: {data[:200]}") from None
        if not isinstance(chunk, dict):
            raise ClusterError(f"the agent sent an unexpected event: {data[:200]}")
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            kind, message = error.get("type", "error"), error.get("message", str(chunk["error"]))
            raise ClusterError(f"the agent failed while answering ({kind}): {message}")
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                yield str(content)
    raise ClusterError("the answer was cut off before its end")


def unreachable(call: Call, exc: httpx.HTTPError, midway: bool = False) -> ClusterError:
    """A transport failure: no connection, TLS, a timeout."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return ClusterError(
            f"TLS with the API server at {call.server} failed: {cause.verify_message} "
            "(check the cluster's certificate-authority in the kubeconfig)"
        )
    if isinstance(cause, ssl.SSLError):
        return ClusterError(f"TLS with the API server at {call.server} failed: {cause.reason}")
    if isinstance(exc, httpx.TimeoutException):
        if midway:
            return ClusterError(
                f"agent {call.name!r} stopped answering (nothing for {_read_timeout(exc)} s)"
            )
        return ClusterError(f"the API server at {call.server} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        return ClusterError(f"cannot connect to the API server at {call.server}: {_reason(exc)}")
    if midway:
        return ClusterError(f"the answer of agent {call.name!r} was cut off: {_reason(exc)}")
    return ClusterError(f"the API server at {call.server} failed: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", text)


def _read_timeout(exc: httpx.TimeoutException) -> str:
    try:
        timeout = exc.request.extensions.get("timeout", {}).get("read")
    except RuntimeError:  # no request attached
        timeout = None
    return f"{timeout:g}" if isinstance(timeout, int | float) else "a while"


def failure(call: Call, status: int, headers: Any, text: str) -> ClusterError:
    """An HTTP error, from the API server itself (a `Status` object) or from the agent (the
    runtime's `{"error": {...}}`), in the user's terms."""
    error = _failure(call, status, headers, text)
    error.status = status
    return error


def _failure(call: Call, status: int, headers: Any, text: str) -> ClusterError:
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    where = f"namespace {call.namespace!r}"
    if body.get("kind") == "Status":
        return _api_server_failure(call, status, body, where)
    error = body.get("error") if isinstance(body.get("error"), dict) else None
    message = str(error.get("message", "")) if error else text.strip()[:300]
    agent = f"agent {call.name!r}"
    if status == 429:
        retry = headers.get("retry-after")
        after = f"; retry after {retry} s" if retry else ""
        return ClusterError(f"{agent} is over its limits (429): {message}{after}")
    if status == 502:
        return ClusterError(f"{agent}: its model provider failed (502): {message}")
    if status == 504:
        return ClusterError(f"{agent}: its model provider did not answer in time (504): {message}")
    if status == 401:
        return ClusterError(
            f"{agent} wants a bearer token (AIAGENT_AUTH_TOKEN is set on it), which the API "
            "server's proxy cannot pass on: reach it with kubectl port-forward instead"
        )
    if status == 503:
        return ClusterError(f"{agent} is not ready (503): {message}")
    return ClusterError(f"{agent} answered {status}: {message or 'no detail'}")


def _api_server_failure(call: Call, status: int, body: dict[str, Any], where: str) -> ClusterError:
    message = str(body.get("message") or body.get("reason") or status)
    kind = (body.get("details") or {}).get("kind")
    server = f"the API server at {call.server}"
    if status == 401:
        return ClusterError(
            f"{server} does not accept these credentials (401 Unauthorized): "
            "log in again or check the kubeconfig's user"
        )
    if status == 403:
        verb, resource = call.permission.split(" ", 1)
        who = re.search(r'User "([^"]+)"', message)
        user = f"user {who.group(1)!r}" if who else "you"
        return ClusterError(
            f"forbidden: {user} may not {verb} {resource} in {where} "
            f"(needed: {verb!r} on {resource!r})"
        )
    if status == 404:
        if kind == "aiagents":
            return ClusterError(f"no AIAgent {call.name!r} in {where}")
        if kind == "services":
            return ClusterError(
                f"no agent {call.name!r} in {where} (it has no Service {call.name!r})"
            )
        if call.permission == "get aiagents":
            return ClusterError(
                f"{server} does not serve aiagents.dev/v1alpha1 AIAgents "
                "(is the operator's CRD installed?)"
            )
        return ClusterError(f"not found: {message}")
    if status == 503 and "no endpoints available" in message:
        return ClusterError(
            f"agent {call.name!r} in {where} has no ready pods to answer "
            f"(`aiagent status {call.name}` says why)"
        )
    if status in (502, 503) and "error trying to reach service" in message:
        return ClusterError(f"the API server cannot reach agent {call.name!r}'s pods: {message}")
    return ClusterError(f"{server} answered {status}: {message}")


def is_ready(agent: dict[str, Any]) -> bool:
    return bool((agent.get("status") or {}).get("phase") == "Ready")


def describe(agent: dict[str, Any]) -> list[str]:
    """`aiagent status`: the phase, the replicas, the endpoint and every condition."""
    meta, status = agent.get("metadata") or {}, agent.get("status") or {}
    phase = status.get("phase") or "Unknown (no status yet: is the operator running?)"
    lines = [f"{meta.get('name')} in namespace {meta.get('namespace')}: {phase}"]
    observed, generation = status.get("observedGeneration"), meta.get("generation")
    if observed is not None and generation is not None and observed != generation:
        lines.append(f"  (for generation {observed}; the spec is at generation {generation})")
    if status:
        ready, replicas = status.get("readyReplicas") or 0, status.get("replicas") or 0
        lines.append(f"  ready:     {ready}/{replicas} replicas")
        lines.append(f"  endpoint:  {status.get('endpoint') or '-'}")
    conditions = status.get("conditions") or []
    if conditions:
        rows = [
            (c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
            for c in conditions
        ]
        table = [("TYPE", "STATUS", "REASON", "MESSAGE"), *rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(3)]
        for row in table:
            cells = [str(cell).ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            lines.append("  " + "  ".join([*cells, str(row[3])]).rstrip())
    return lines
