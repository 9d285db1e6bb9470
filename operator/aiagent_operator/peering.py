"""Before Kopf starts: make sure the peering object exists, or say in one line what to do.

Kopf with mandatory peering waits, silently, until its peering object exists; run by hand without
it (`python -m aiagent_operator` after applying only the CRDs) the operator would reconcile
nothing and say nothing. So at startup the operator looks for its ClusterKopfPeering (cluster
mode) or the KopfPeering of each watched namespace and
- creates what is missing when its RBAC allows;
- falls back to standalone, with a warning, when the peering CRD itself is not installed;
- otherwise logs one line that says what to do, reports not ready (`/readyz`, the
  `aiagent_operator_ready` gauge, the `peering` probe in Kopf's /healthz) and looks again every
  RECHECK_SECONDS: Kopf resumes by itself once the object appears.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .kube import Kube, KubeError
from .settings import OperatorSettings

logger = logging.getLogger(__name__)

GROUP_PATH = "/apis/kopf.dev/v1"
CRDS_FILE = "crds/kopf.dev_peerings.yaml"
RECHECK_SECONDS = 15.0
# An API server that is starting, or whose CRD storage is being set up, answers 429 or 5xx for a
# moment: asked again after these pauses before the answer counts.
TRANSIENT_PAUSES = (0.5, 1.0, 2.0, 4.0)


@dataclass
class Peering:
    """Where this operator's replicas meet: one ClusterKopfPeering, or a KopfPeering in each
    watched namespace."""

    name: str
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide

    @property
    def kind(self) -> str:
        return "KopfPeering" if self.namespaces else "ClusterKopfPeering"

    @property
    def plural(self) -> str:
        return self.kind.lower() + "s"

    def path(self, namespace: str | None) -> str:
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{GROUP_PATH}{where}/{self.plural}"

    def manifest(self) -> dict[str, Any]:
        return {"apiVersion": "kopf.dev/v1", "kind": self.kind, "metadata": {"name": self.name}}


@dataclass
class Readiness:
    """Whether the operator can act (or stands by in its peering), and if not, why: read by
    `/readyz`, the metrics and the probe, from other threads."""

    ready: bool = True
    why: str = "ok"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, ready: bool, why: str) -> None:
        with self._lock:
            self.ready, self.why = ready, why

    def get(self) -> tuple[bool, str]:
        with self._lock:
            return self.ready, self.why

    def probe(self, **_: Any) -> str:
        """A `kopf.on.probe` handler: what /healthz says of the peering."""
        return self.get()[1]


@dataclass
class Outcome:
    standalone: bool  # run Kopf standalone (peering off)
    missing: list[str | None] = field(default_factory=list)  # where no peering object could be
    problem: str = ""  # the one line that says what to do, when something is missing


def watched_namespaces(kube: Kube, patterns: list[str]) -> list[str]:
    """The namespaces the patterns name: as they are, or by listing when they are globs."""
    from kopf._cogs.structs import references

    exact = sorted(str(n) for n in references.select_specific_namespaces(patterns))
    if len(exact) == len(patterns):
        return exact
    try:
        listed = _ask(kube, "GET", "/api/v1/namespaces").get("items") or []
    except KubeError:
        return exact  # Kopf cannot list them either; it serves the exact names alone
    names = {str(ns["metadata"]["name"]) for ns in listed}
    return sorted(
        {n for n in names if any(_matches(references, n, p) for p in patterns)} | set(exact)
    )


def _ask(kube: Kube, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request, asked again while the API server answers that it cannot answer yet."""
    for pause in (*TRANSIENT_PAUSES, None):
        try:
            return kube.request(method, path, **kwargs)
        except KubeError as exc:
            if pause is None or not (exc.status == 429 or exc.status >= 500):
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def _matches(references: Any, namespace: str, pattern: str) -> bool:
    return bool(references.match_namespace(references.NamespaceName(namespace), pattern))


def crd_installed(kube: Kube, peering: Peering) -> bool | None:
    """Whether the API server serves the peering kind (discovery: any user may ask);
    None when it cannot tell."""
    try:
        group = _ask(kube, "GET", GROUP_PATH)
    except KubeError as exc:
        return False if exc.status == 404 else None
    return any(r.get("name") == peering.plural for r in group.get("resources") or [])


def ensure_object(kube: Kube, peering: Peering, namespace: str | None) -> str:
    """Make sure the peering object exists; "" when it does, else why not."""
    path = peering.path(namespace)
    try:
        found = _ask(kube, "GET", path, query=[("fieldSelector", f"metadata.name={peering.name}")])
        if found.get("items"):
            return ""
    except KubeError as exc:
        if exc.status != 403:  # forbidden to read: creating may still be allowed
            return str(exc)
    try:
        _ask(kube, "POST", path, body=peering.manifest())
    except KubeError as exc:
        if exc.status == 409:  # another replica created it meanwhile
            return ""
        return str(exc)
    where = f" in namespace {namespace!r}" if namespace else ""
    logger.info("Created the %s %r%s, where replicas meet.", peering.kind, peering.name, where)
    return ""


def what_to_do(peering: Peering, missing: list[str | None], why: str) -> str:
    """The one line: what is missing, why the operator could not create it, the command."""
    manifest = json.dumps(peering.manifest(), separators=(",", ":"))
    namespaces = [ns for ns in missing if ns]
    if namespaces:
        where = f" in namespace{'s' if len(namespaces) > 1 else ''} {', '.join(namespaces)}"
        if len(namespaces) == 1:
            command = f"echo '{manifest}' | kubectl apply -n {namespaces[0]} -f -"
        else:
            each = " ".join(namespaces)
            command = f"for ns in {each}; do echo '{manifest}' | kubectl apply -n $ns -f -; done"
    else:
        where, command = "", f"echo '{manifest}' | kubectl apply -f -"
    return (
        f"Not acting: no {peering.kind} {peering.name!r}{where}, and it could not be created "
        f"({why}). Create it: {command} (or grant this operator `create` on {peering.plural}."
        f"kopf.dev), or set AIAGENT_STANDALONE=true for a single replica. Waiting for it."
    )


def prepare(kube: Kube, settings: OperatorSettings) -> Outcome:
    """Look at the peering before Kopf starts, and create what is missing if allowed."""
    if settings.standalone:
        return Outcome(standalone=True)
    peering = Peering(settings.peering_name, list(settings.watch_namespaces))
    installed = crd_installed(kube, peering)
    if installed is False:
        logger.warning(
            "The peering CRD %s.kopf.dev is not installed: running standalone, so run a single "
            "replica (for several: kubectl apply -f %s, and restart).",
            peering.plural,
            CRDS_FILE,
        )
        return Outcome(standalone=True)
    if installed is None:  # the API server unreachable: Kopf will say so in its own words
        return Outcome(standalone=False)
    targets: list[str | None] = (
        list(watched_namespaces(kube, peering.namespaces)) if peering.namespaces else [None]
    )
    missing: list[str | None] = []
    reasons: list[str] = []
    for namespace in targets:
        if why := ensure_object(kube, peering, namespace):
            missing.append(namespace)
            reasons.append(why)
    if not missing:
        return Outcome(standalone=False)
    return Outcome(
        standalone=False, missing=missing, problem=what_to_do(peering, missing, reasons[0])
    )


def start(
    kube: Kube | None, settings: OperatorSettings, readiness: Readiness
) -> tuple[bool, Callable[[], None]]:
    """Prepare the peering before `kopf.run`; returns whether to run standalone, and a function
    that stops the re-checking (if any was started). No client (no credentials): as configured."""
    if kube is None:
        return settings.standalone, lambda: None
    try:
        outcome = prepare(kube, settings)
    except Exception as exc:  # an unreachable API server: Kopf will say so in its own words
        logger.warning("Could not check the peering object before starting: %s", exc)
        return settings.standalone, lambda: None
    if not outcome.missing:
        readiness.set(True, "standalone" if outcome.standalone else "peering ok")
        return outcome.standalone, lambda: None
    logger.error(outcome.problem)
    readiness.set(False, outcome.problem)
    stop = threading.Event()
    peering = Peering(settings.peering_name, list(settings.watch_namespaces))
    threading.Thread(
        target=_recheck,
        args=(kube, peering, outcome.missing, readiness, stop),
        name="peering recheck",
        daemon=True,
    ).start()
    return False, stop.set


def _recheck(
    kube: Kube,
    peering: Peering,
    missing: list[str | None],
    readiness: Readiness,
    stop: threading.Event,
) -> None:
    """Quietly look again until every peering object exists (created by a person, or by us once
    RBAC allows); Kopf, watching the peering kind, resumes by itself."""
    while missing and not stop.wait(RECHECK_SECONDS):
        try:
            missing = [ns for ns in missing if ensure_object(kube, peering, ns)]
        except Exception:  # noqa: BLE001 (the API server away for a moment: look again later)
            continue
    if not missing:
        logger.info("The %s %r is there: acting.", peering.kind, peering.name)
        readiness.set(True, "peering ok")
