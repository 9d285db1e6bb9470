"""`python -m aiagent_operator` (or `aiagent-operator`): run the operator with settings from env."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable

# Kopf adapts the `kubernetes` package's model objects when that package is importable, and
# imports all of it to do so (~55 MB, over 1,200 modules). The operator hands Kopf only dicts and
# has a client of its own (`kube`, `credentials`): where the package is installed anyway (the dev
# environment has it, for crewai's chromadb), it stays out of the operator's process.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf  # noqa: E402

from . import metrics, peering  # noqa: E402
from .credentials import CredentialsError  # noqa: E402
from .kube import Kube  # noqa: E402
from .settings import OperatorSettings  # noqa: E402


class SayOnce(logging.Filter):
    """Kopf repeats "Unresolved resources cannot be served" on every CRD change in the cluster
    while a kind it would watch is missing (Dapr's Components, where Dapr is not installed):
    each distinct warning is said once."""

    def __init__(self) -> None:
        super().__init__()
        self._said: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Unresolved resources"):
            return True
        if message in self._said:
            return False
        self._said.add(message)
        return True


class QuietRoutine(logging.Filter):
    """Kopf says "succeeded" at INFO for every index update and every event handler, i.e. for
    each watch event of every child, pod and Secret: lines by the thousand while agents are
    created, the writing of them a share of the operator's CPU, and never quiet at rest. Those
    go (the event handlers' ids are read from Kopf's registry, so a new watch is quiet too), as
    do timers' and daemons'; reconciles, errors and warnings stay (they say what the operator did
    or could not do)."""

    ROUTINE = re.compile(
        r"((Indexer|Timer|Daemon) '[^']*'|Handler '(child-[^']*|agent_pod_event)') succeeded\."
    )
    HANDLER = re.compile(r"Handler '([^']*)' succeeded\.")

    def __init__(self, event_handlers: Iterable[str] | None = None) -> None:
        super().__init__()
        if event_handlers is None:
            registry = kopf.get_default_registry()
            event_handlers = [str(h.id) for h in registry._watching.get_all_handlers()]
        self.event_handlers = frozenset(event_handlers)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        if self.ROUTINE.fullmatch(message):
            return False
        handler = self.HANDLER.fullmatch(message)
        return handler is None or handler.group(1) not in self.event_handlers


def quiet_logs() -> None:
    """Nothing at INFO while nothing changes: no line per child event (`QuietRoutine`), per
    liveness probe (aiohttp's access log of Kopf's /healthz) or per probe handler run."""
    logging.getLogger("kopf._core.reactor.observation").addFilter(SayOnce())
    logging.getLogger("kopf.objects").addFilter(QuietRoutine())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.activities.probe").setLevel(logging.WARNING)


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=True,  # every line about an object says which one: [namespace/name]
    )
    logging.getLogger().setLevel(settings.log_level)
    from . import handlers  # noqa: F401  (registers the handlers with Kopf)

    quiet_logs()
    readiness = peering.Readiness()
    metrics.instrument_kopf()
    metrics.watch_readiness(lambda: readiness.get()[0])
    server = None
    if settings.metrics_endpoint:
        server = metrics.MetricsServer(settings.metrics_endpoint, readiness.get)
        server.start()
    try:
        kube: Kube | None = Kube.from_environment(connections=1)
    except CredentialsError:
        kube = None  # Kopf's login says what is wrong with the credentials, in the same words
    standalone, stop_rechecking = peering.start(kube, settings, readiness)
    if standalone and not settings.standalone:
        # The startup handler reads the settings again (handlers.configure_kopf): the fallback
        # must reach it too, or Kopf would wait for the peering that is not there.
        os.environ["AIAGENT_STANDALONE"] = "true"
    kopf.on.probe(id="peering")(readiness.probe)  # /healthz says what peering.py found
    try:
        kopf.run(
            clusterwide=not settings.watch_namespaces,
            namespaces=settings.watch_namespaces,
            liveness_endpoint=settings.liveness_endpoint or None,
            standalone=standalone,
            peering_name=None if standalone else settings.peering_name,
            priority=settings.peering_priority,
        )
    finally:
        stop_rechecking()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
