"""The operator's own Prometheus metrics, in a registry of its own, and the server for them.

Handlers report through small functions (`reconciling`, `error`, `watch_queue`, `watch_agents`);
every API call is counted where it is made: `kube.Kube.request` (the operator's client) and
`instrument_kopf` (Kopf's). The server is a thread of its own, so `/metrics` and `/readyz` answer
even while Kopf's event loop is busy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from concurrent.futures import Executor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

PREFIX = "aiagent_operator"
OUTCOMES = ("ok", "retry", "refused", "error")
# Phases an AIAgent reports (api.AIAgentStatus), and "Unknown" before its first status.
PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed", "Unknown")

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    f"{PREFIX}_reconciles",
    "Reconciles of an AIAgent by outcome: ok, retry (waiting for something, retried later), "
    "refused (the API server refused a child: not retried), error (failed unexpectedly).",
    ["outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Time one reconcile of an AIAgent took, whatever its outcome.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ERRORS = Counter(
    f"{PREFIX}_errors",
    "Failures by reason: the exception's class (and the API server's status code for KubeError).",
    ["reason"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests",
    "Requests to the Kubernetes API server by client (operator: its own calls, kopf: watches, "
    "listings, Kopf's patches and events), verb, resource and response code.",
    ["client", "verb", "resource", "code"],
    registry=REGISTRY,
)
DRIFT_RESTORES = Counter(
    f"{PREFIX}_drift_restores",
    "Children restored after someone else changed or deleted them, by kind. A child fought over "
    "(restored again and again) is restored with back-off: see the operator's WARNING naming "
    "who changes it.",
    ["kind"],
    registry=REGISTRY,
)


class _Watched(Collector):
    """Gauges read when scraped, from what the operator holds anyway (no bookkeeping of its own).
    Read from the server's thread while Kopf's loop changes them: a view that changed meanwhile
    is read again, and a scrape never fails for it."""

    def __init__(self) -> None:
        self.executor: Executor | None = None
        self.reports_due: Sized | None = None
        self.agents: Mapping[Any, Iterable[Any]] | None = None
        self.ready: Callable[[], bool] | None = None

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Work waiting: handlers (sync handler calls waiting for a thread of the pool) and "
            "status_reports (AIAgents whose Deployment's status is about to be reported).",
            labels=["queue"],
        )
        queue.add_metric(["handlers"], _executor_backlog(self.executor))
        queue.add_metric(["status_reports"], len(self.reports_due or ()))
        yield queue
        agents = GaugeMetricFamily(
            f"{PREFIX}_aiagents",
            "AIAgents by status.phase, as the operator sees them (none while it stands by).",
            labels=["phase"],
        )
        if self.agents is not None:
            for phase, count in _count_phases(self.agents).items():
                agents.add_metric([phase], count)
        yield agents
        ready = GaugeMetricFamily(
            f"{PREFIX}_ready",
            "1 while the operator can act (or stands by in its peering), 0 while it cannot.",
        )
        ready.add_metric([], 1 if self.ready is None or self.ready() else 0)
        yield ready


_watched = _Watched()
REGISTRY.register(_watched)


def _executor_backlog(executor: Executor | None) -> int:
    work_queue = getattr(executor, "_work_queue", None)  # a ThreadPoolExecutor's own queue
    return work_queue.qsize() if work_queue is not None else 0


def _count_phases(agents: Mapping[Any, Iterable[Any]]) -> dict[str, int]:
    counts = dict.fromkeys(PHASES, 0)
    for _ in range(5):
        try:
            stores = list(agents.values())
            for store in stores:
                for agent in list(store):
                    phase = getattr(getattr(agent, "status", None), "phase", None)
                    key = str(getattr(phase, "value", phase) or "Unknown")
                    counts[key] = counts.get(key, 0) + 1
            return counts
        except RuntimeError:  # changed while read ("dictionary changed size during iteration")
            counts = dict.fromkeys(PHASES, 0)
    return counts


# -- what the handlers call


@contextlib.contextmanager
def reconciling() -> Iterator[None]:
    """Around one reconcile: counts it by outcome and times it. The outcome comes from how the
    block ends: normally (ok), `kopf.TemporaryError` or a wait of reconcile's (retry),
    `kopf.PermanentError` or `reconcile.ChildRefused` (refused), any other exception (error);
    every outcome but ok also counts an error by reason."""
    started = time.monotonic()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except BaseException as exc:
        outcome = outcome_of(exc)
        error(reason_of(exc))
        raise
    finally:
        RECONCILES.labels(outcome).inc()
        RECONCILE_DURATION.observe(time.monotonic() - started)


def reconciled(outcome: str, seconds: float) -> None:
    """One reconcile done, for a caller that classifies it itself."""
    RECONCILES.labels(outcome if outcome in OUTCOMES else "error").inc()
    RECONCILE_DURATION.observe(seconds)


def error(reason: str) -> None:
    ERRORS.labels(reason).inc()


def drift_restored(kind: str) -> None:
    DRIFT_RESTORES.labels(kind).inc()


def watch_queue(executor: Executor | None, reports_due: Sized | None) -> None:
    """Report the sync handlers' pool backlog and the pending status reports when scraped."""
    _watched.executor = executor
    _watched.reports_due = reports_due


def watch_agents(index: Mapping[Any, Iterable[Any]]) -> None:
    """Report AIAgents by phase from an index of them (Kopf keeps it current): values are
    iterables of objects with `.status.phase` (api.AIAgent)."""
    _watched.agents = index


def watch_readiness(ready: Callable[[], bool]) -> None:
    _watched.ready = ready


# By class name, so that this module imports neither kopf nor reconcile (which imports it):
# Kopf's errors, and reconcile's own where a caller handles them itself (reconcile_quietly).
RETRY_ERRORS = {"TemporaryError", "SecretNotReady", "ModelConfigNotReady", "ComponentNotReady"}
REFUSED_ERRORS = {"PermanentError", "ChildRefused"}


def outcome_of(exc: BaseException) -> str:
    kind = type(exc).__name__
    if kind in RETRY_ERRORS:
        return "retry"
    if kind in REFUSED_ERRORS:
        return "refused"
    return "error"


def reason_of(exc: BaseException) -> str:
    """What failed, in a few words: a Kopf error raised `from None` still carries the exception
    it replaced as its context, which names the cause better than Kopf's class."""
    cause = exc.__context__ if type(exc).__name__ in ("TemporaryError", "PermanentError") else None
    cause = cause or exc
    status = getattr(cause, "status", None)
    if type(cause).__name__ == "KubeError" and isinstance(status, int):
        return f"KubeError {status}" if status else "KubeError unreachable"
    return type(cause).__name__


# -- API calls


def api_request(
    client: str, method: str, url: str, code: int | str, content_type: str = ""
) -> None:
    verb, resource = request_info(method, url, content_type)
    API_REQUESTS.labels(client, verb, resource, str(code)).inc()


def request_info(method: str, url: str, content_type: str = "") -> tuple[str, str]:
    """The Kubernetes verb and resource (plural, with its subresource) of a request, as the API
    server's own metrics name them; "apply" for a server-side apply. Paths that name no resource
    (discovery, /version) are ("get", "discovery")."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    query = urllib.parse.parse_qs(parts.query)
    if segments[:1] == ["api"]:
        rest = segments[2:]
    elif segments[:1] == ["apis"]:
        rest = segments[3:]
    else:
        rest = []
    if not rest:
        return "get", "discovery"
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # namespaces/<ns>/<plural>...
    resource, named, sub = rest[0], len(rest) >= 2, rest[2] if len(rest) >= 3 else ""
    method = method.upper()
    if method == "GET":
        verb = "get" if named else ("watch" if query.get("watch") in (["true"], ["1"]) else "list")
    elif method == "PATCH":
        verb = "apply" if "apply-patch" in content_type else "patch"
    else:
        verb = {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())
        if verb == "delete" and not named:
            verb = "deletecollection"
    return verb, f"{resource}/{sub}" if sub else resource


def instrument_kopf(module: Any = None) -> None:
    """Count Kopf's own requests: its client sends every one through `kopf._cogs.clients.api
    .request` (looked up at each call by its get/post/patch/delete/stream), which retries inside;
    one call counts once, with its final answer. Watches count when they start."""
    if module is None:
        from kopf._cogs.clients import api as module
    original = module.request
    if getattr(original, "_counted", False):
        return

    async def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        content_type = str(headers.get("Content-Type") or headers.get("content-type") or "")
        try:
            response = await original(method, url, *args, **kwargs)
        except Exception as exc:
            api_request(
                "kopf", method, url, getattr(exc, "status", None) or "unreachable", content_type
            )
            raise
        api_request("kopf", method, url, response.status, content_type)
        return response

    request._counted = True  # type: ignore[attr-defined]
    module.request = request


# -- the server


class MetricsServer:
    """`/metrics` (the path of the endpoint) and `/readyz` on one port, in a daemon thread."""

    def __init__(self, endpoint: str, ready: Callable[[], tuple[bool, str]]) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http":
            raise ValueError(f"AIAGENT_METRICS_ENDPOINT: only http:// is served, not {endpoint!r}")
        self.host = parts.hostname or "0.0.0.0"
        self.port = parts.port or 80
        self.path = parts.path or "/metrics"
        self.ready = ready
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> bool:
        """Listen, or say why not in one warning (the operator works on without metrics)."""
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), self._handler())
        except OSError as exc:
            logger.warning(
                "Metrics are off: cannot listen on %s:%s (%s); set AIAGENT_METRICS_ENDPOINT to a "
                "free address, or empty to turn them off.",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            return False
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, name="metrics server", daemon=True
        ).start()
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = urllib.parse.urlsplit(self.path).path
                if path == server.path:
                    self._answer(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
                elif path == "/readyz":
                    ready, why = server.ready()
                    self._answer(200 if ready else 503, "text/plain", f"{why}\n".encode())
                else:
                    self._answer(404, "text/plain", b"not found\n")

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape or a probe every few seconds is no news

        return Handler
