"""`python -m aiagent_operator` (or `aiagent-operator`): run the operator with settings from env."""

from __future__ import annotations

import logging
import re
import sys

# Kopf adapts the `kubernetes` package's model objects when that package is importable, and
# imports all of it to do so (~55 MB, over 1,200 modules). The operator hands Kopf only dicts and
# has a client of its own (`kube`, `credentials`): where the package is installed anyway (the dev
# environment has it, for crewai's chromadb), it stays out of the operator's process.
sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]

import kopf  # noqa: E402

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
    each watch event of every child and pod: lines by the thousand while agents are created,
    and the writing of them a share of the operator's CPU. Those go; reconciles, errors and
    warnings stay (they say what the operator did or could not do)."""

    ROUTINE = re.compile(r"(Indexer '[^']*'|Handler '(child-[^']*|agent_pod_event)') succeeded\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not self.ROUTINE.fullmatch(record.getMessage())


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=True,  # every line about an object says which one: [namespace/name]
    )
    logging.getLogger().setLevel(settings.log_level)
    logging.getLogger("kopf._core.reactor.observation").addFilter(SayOnce())
    logging.getLogger("kopf.objects").addFilter(QuietRoutine())
    from . import handlers  # noqa: F401  (registers the handlers with Kopf)

    kopf.run(
        clusterwide=not settings.watch_namespaces,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
        standalone=settings.standalone,
        peering_name=None if settings.standalone else settings.peering_name,
        priority=settings.peering_priority,
    )


if __name__ == "__main__":
    main()
