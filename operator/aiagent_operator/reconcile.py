"""The reconcile flow: render, apply, prune, observe, report. The only module that mixes
the pure parts (`render`, `status`) with API calls (`kube`); Kopf handlers call into it."""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Literal, NamedTuple

from . import api, components, events, metrics, model_configs, render
from .components import ComponentFact, SeenComponent
from .kube import Kube, KubeError, is_controlled_by
from .observed import STALE, Observed, other_writer
from .settings import OperatorSettings
from .status import Sidecar, compute_status, failed_status, pod_problem, sidecar_of, status_patch

logger = logging.getLogger(__name__)


class SecretNotReady(Exception):
    """The AIAgent's API key Secret is missing or lacks its key; retried until it appears."""


class ChildRefused(Exception):
    """The API server refused a rendered child; retrying the same spec cannot help."""


KEY_COPY_CONFLICT = "KeyCopyConflict"


class ModelConfigNotReady(Exception):
    """The AIAgent's ModelConfig is missing or does not allow its namespace; rechecked until
    that changes (and at once when the ModelConfig does)."""


class ComponentNotReady(Exception):
    """A Dapr Component of the agent is missing, someone else's, or cannot be created (no Dapr
    in the cluster); rechecked until that changes."""


# Answers that say "not now" rather than "not this": the API server unreachable (0), throttling
# us (429), or failing (its storage away: 500, 503, 504).
TRANSIENT_STATUSES = frozenset({0, 429, 500, 502, 503, 504})
RETRY_CAP_SECONDS = 10.0


def transient(exc: KubeError) -> bool:
    """Whether the same request may well succeed a moment later."""
    return exc.status in TRANSIENT_STATUSES


def retry_delay(retry: int) -> float:
    """Seconds before the `retry`-th retry after a transient failure: 1, 2, 4, 8, then 10: an
    outage of a minute is caught up with within seconds of its end."""
    return float(min(2 ** min(retry, 10), RETRY_CAP_SECONDS))


class Desired(NamedTuple):
    """What an AIAgent asks for: its children in apply order, and its inline Dapr Components."""

    children: list[render.Manifest]
    components: list[render.Manifest]


# Every event of a child is checked against what its owner wants, which a burst of events (a
# rollout, a thousand agents created at once) would otherwise render anew each time: most of
# what the operator spent on child events. The rendering depends only on the owner's identity,
# generation (stamped on the Deployment) and spec, and the settings; a few hundred agents' worth
# covers any burst's working set.
_DESIRED: OrderedDict[tuple[str, str, str, int, str], tuple[OperatorSettings, Desired]] = (
    OrderedDict()
)
DESIRED_CACHE_SIZE = 512


def desired(agent: api.AIAgent, settings: OperatorSettings) -> Desired:
    """`render` of the agent's children and Components, remembered for the same agent and spec.
    The manifests are shared: never modify them (`render.stamped` copies what it changes)."""
    key = (
        agent.namespace,
        agent.name,
        agent.uid,
        agent.generation,
        # The derived fields too (`model_configs.effective`): a rotated Secret rolls the pods.
        agent.model_dump_json(
            include={"spec", "secrets_version", "budget", "key_source", "key_source_version"}
        ),
    )
    cached = _DESIRED.get(key)
    if cached is not None and cached[0] is settings:
        _DESIRED.move_to_end(key)
        return cached[1]
    children = render.render_children(agent, settings)
    key_copy = model_configs.render_key_copy(agent)
    if key_copy is not None:
        children.insert(0, key_copy)  # before the pods that read it
    wanted = Desired(children, components.render_components(agent))
    _DESIRED[key] = (settings, wanted)
    if len(_DESIRED) > DESIRED_CACHE_SIZE:
        _DESIRED.popitem(last=False)
    return wanted


def reconcile_agent(
    agent: api.AIAgent,
    kube: Kube,
    settings: OperatorSettings,
    observed: Observed | None = None,
) -> None:
    """Bring the children in line with the spec and write the status that follows.

    Raises SecretNotReady or ComponentNotReady (retry later), or ChildRefused (wait for a spec
    change). `observed` answers from Kopf's indices; without it, from the API.
    """
    observed = observed or Observed(kube)
    secret_problem = observed.secret_problem(agent)
    try:
        rendered = observed.effective(agent)
    except model_configs.ModelConfigProblem as problem:
        if problem.reason == "ModelConfigNotAllowed":
            revoke(kube, agent)
        # Otherwise (the ModelConfig deleted) nothing is applied: the pods keep the model they
        # have until the ModelConfig is back.
        refresh_status(kube, agent, observed.deployment(agent), None, settings, observed)
        raise ModelConfigNotReady(problem.message) from None
    children, inline = desired(rendered, settings)
    deployment: dict[str, Any] | None = None
    claimed: dict[str, ComponentFact] = {}
    current: render.Manifest | None = None
    try:
        # Components first: a sidecar loads its Components when it starts.
        for current in inline:
            fact = claim_component(kube, agent, current, observed)
            claimed[fact.name] = fact
        for current in children:
            applied = apply_child(kube, current, observed)
            if current["kind"] == "Deployment":
                # Unchanged, so not applied: status may still have news (a Component or Secret
                # fixed meanwhile), and it is computed from the live Deployment.
                deployment = applied or observed.deployment(agent)
    except KubeError as exc:
        if exc.namespace_terminating:
            # Our view of the agent predates its namespace's deletion: the namespace controller
            # removes the agent too, so there is nothing to build and nothing to report.
            logger.info("%s/%s: namespace is being deleted", agent.namespace, agent.name)
            return
        if exc.reason == KEY_COPY_CONFLICT and current is not None:
            # Someone else's Secret has the copy's name: rechecked until it is gone.
            message = f"Secret {current['metadata']['name']}: {exc.message}"
            write_status(kube, agent, failed_status(agent, KEY_COPY_CONFLICT, message))
            raise SecretNotReady(message) from None
        if not exc.is_permanent or current is None:
            raise
        message = f"{current['kind']} {current['metadata']['name']}: {exc.message}"
        write_status(kube, agent, failed_status(agent, "ChildRefused", message))
        raise ChildRefused(message) from exc

    facts = component_facts(agent, observed, claimed)
    app = render.dapr_app_id(agent)
    component_problems = [p for f in facts if (p := f.problem(agent.namespace, app))]
    # The Deployment's watch events carry its status from here on. An apply that changed the
    # spec returns a status the controller has not caught up with; writing it could land after
    # a newer one from the watch and stick, so only a settled answer (or a Secret or Component
    # problem, which no Deployment event would report) is written here.
    if secret_problem or component_problems or settled(deployment):
        refresh_status(kube, agent, deployment, secret_problem, settings, observed, facts)

    wanted = {(c["apiVersion"], c["kind"]) for c in children}
    copy = ("Secret", agent.namespace, model_configs.key_copy_name(agent))
    if (
        ("v1", "Secret") not in wanted
        and observed.may_have(copy)
        and kube.delete_if_controlled_by("v1", "Secret", agent.namespace, copy[2], agent.uid)
    ):
        logger.info("deleted Secret %s/%s: the agent uses no ModelConfig key", *copy[1:])
    for api_version, kind in render.PRUNABLE:
        if (
            (api_version, kind) not in wanted
            and observed.may_have((kind, agent.namespace, agent.name))
            and kube.delete_if_controlled_by(
                api_version, kind, agent.namespace, agent.name, agent.uid
            )
        ):
            logger.info(
                "deleted %s %s/%s: no longer in the spec", kind, agent.namespace, agent.name
            )
    prune_components(kube, agent, observed, {m["metadata"]["name"] for m in inline})
    if secret_problem:
        raise SecretNotReady(secret_problem)
    if component_problems:
        raise ComponentNotReady("; ".join(message for _, message in component_problems))


def revoke(kube: Kube, agent: api.AIAgent) -> None:
    """A namespace the ModelConfig no longer allows loses the key: its copy, and the pods that
    hold it (the Deployment; it comes back when the namespace is allowed again)."""
    copy = model_configs.key_copy_name(agent)
    for kind, api_version, name in (("Secret", "v1", copy), ("Deployment", "apps/v1", agent.name)):
        if kube.delete_if_controlled_by(api_version, kind, agent.namespace, name, agent.uid):
            logger.info(
                "deleted %s %s/%s: its ModelConfig no longer allows the namespace",
                kind,
                agent.namespace,
                name,
            )


def apply_child(
    kube: Kube, manifest: render.Manifest, observed: Observed, *, drifted: bool = False
) -> dict[str, Any] | None:
    """Server-side apply the child, stamped with its digest; None (and no request) when the live
    child already carries that digest, i.e. already is what this apply would make it. A child
    seen `drifted` (edited by hand: the digest stays while the fields change) is always applied."""
    digest = render.applied_hash(manifest)
    if not drifted and observed.unchanged(manifest, digest):
        return None
    body = render.stamped(manifest, digest)
    if manifest["kind"] == "Secret":
        # A ModelConfig's key copy: its value is read now, from the source the manifest names,
        # and goes from that Secret to this one and nowhere else (not in the digest, not logged).
        _claim_key_copy(kube, manifest)
        value = _key_value(kube, manifest["metadata"]["annotations"])
        if value is None:
            return None  # the source is gone or lacks the key: `secret_problem` reports it
        body["data"] = {model_configs.KEY_COPY_KEY: value}
        try:
            applied = kube.apply(body)
        except KubeError as exc:
            # Whatever refused it (an admission webhook) may quote the object: say only that.
            exc.message = f"the API server refused the key copy (HTTP {exc.status} {exc.reason})"
            raise
        observed.applied(manifest, digest, str(applied.get("metadata", {}).get("resourceVersion")))
        return applied
    applied = kube.apply(body)
    observed.applied(manifest, digest, str(applied.get("metadata", {}).get("resourceVersion", "")))
    return applied


def _claim_key_copy(kube: Kube, manifest: render.Manifest) -> None:
    """Never take over a Secret of the copy's name that is not the agent's (an apply with force
    would, and the agent's deletion would then delete it): refuse, and say what to do."""
    meta = manifest["metadata"]
    existing = kube.get("v1", "Secret", meta["namespace"], meta["name"])
    if existing is not None and not is_controlled_by(existing, meta["ownerReferences"][0]["uid"]):
        raise KubeError(
            status=409,
            reason=KEY_COPY_CONFLICT,
            message=f"a Secret {meta['name']!r} that is not this agent's exists: the operator "
            "keeps the ModelConfig's key under that name; rename or delete that Secret",
        )


def _key_value(kube: Kube, annotations: dict[str, str]) -> str | None:
    """The (base64) value the key copy is made from, or None when it cannot be read."""
    namespace, name, key = annotations[model_configs.SOURCE_ANNOTATION].split("/", 2)
    source = kube.get("v1", "Secret", namespace, name)
    value = ((source or {}).get("data") or {}).get(key)
    return value if isinstance(value, str) else None


def claim_component(
    kube: Kube,
    agent: api.AIAgent,
    manifest: render.Manifest,
    observed: Observed,
    *,
    drifted: bool = False,
) -> ComponentFact:
    """Apply an inline Component only if it is this agent's to apply.

    Server-side apply with force would take over a same-named Component of another agent (or
    of a person), so ownership is checked first: a Component nobody has is created with a
    plain create, which fails instead of taking over one that appeared meanwhile; one this
    agent controls is applied; any other is left alone and reported.
    """
    meta = manifest["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    field = next(f for f, ref in components.component_refs(agent) if ref.name == name)

    def fact(verdict: components.Verdict, detail: str = "") -> ComponentFact:
        return ComponentFact(field=field, name=name, inline=True, verdict=verdict, detail=detail)

    try:
        seen = observed.component(namespace, name, confirm=False)
        if seen is None:
            try:
                digest = render.applied_hash(manifest)
                kube.create(render.stamped(manifest, digest))
                observed.applied(manifest, digest)
                logger.info("created Component %s/%s (%s)", namespace, name, field)
                return fact("Ok")
            except KubeError as exc:
                if exc.status != 409:
                    raise
            seen = observed.component(namespace, name)  # created by someone else meanwhile
            if seen is None:
                return fact("Missing")  # and deleted again: the retry will create it
        if seen.controller_uid != agent.uid:
            return fact("Conflict", seen.controller or "")
        apply_child(kube, manifest, observed, drifted=drifted)
        return fact("Ok")
    except KubeError as exc:
        if exc.no_such_api:
            return fact("NoDaprAPI")
        raise


def component_facts(
    agent: api.AIAgent, observed: Observed, claimed: dict[str, ComponentFact] | None = None
) -> list[ComponentFact]:
    """What became of each Component the agent names (`claimed`: the inline ones just applied)."""
    facts = []
    for field, ref in components.component_refs(agent):
        if claimed and ref.name in claimed:
            facts.append(claimed[ref.name])
            continue
        try:
            seen: SeenComponent | None = observed.component(agent.namespace, ref.name)
        except KubeError as exc:
            if not exc.no_such_api:
                raise
            facts.append(components.no_dapr_api(field, ref))
            continue
        facts.append(components.judge(agent, field, ref, seen))
    return facts


def prune_components(kube: Kube, agent: api.AIAgent, observed: Observed, wanted: set[str]) -> None:
    """Delete the Components this agent controls that its spec no longer declares."""
    for name in sorted(observed.owned_components(agent) - wanted):
        if kube.delete_if_controlled_by(
            components.API_VERSION, components.KIND, agent.namespace, name, agent.uid
        ):
            logger.info("deleted Component %s/%s: no longer in the spec", agent.namespace, name)


def settled(deployment: dict[str, Any] | None) -> bool:
    if deployment is None:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration", 0)
    return bool(observed >= deployment["metadata"].get("generation", 0))


def refresh_status(
    kube: Kube,
    agent: api.AIAgent,
    deployment: dict[str, Any] | None,
    secret_problem: str | None,
    settings: OperatorSettings,
    observed: Observed | None = None,
    facts: list[ComponentFact] | None = None,
    *,
    if_unchanged: bool = False,
) -> None:
    """Compute the agent's status and write what changed (`if_unchanged`: see `write_status`)."""
    observed = observed or Observed(kube)
    stuck = None
    if deployment is not None and not _all_ready(deployment):
        # Only then: the Deployment alone cannot tell a slow start from a crash loop. (A pod
        # the index has not seen stuck yet is reported by its own event, `on_pod_event`.)
        stuck = observed.stuck_pod(agent)
    sidecars: list[Sidecar] | None = None
    if agent.spec.dapr.enabled:
        if facts is None:
            facts = component_facts(agent, observed)
        sidecars = observed.sidecars(agent)
        if _lags(sidecars, deployment):
            # The pod index has not seen the pods the Deployment counts ready yet (another
            # watch stream): ask, rather than report an old pod's sidecar.
            pods = kube.list_pods(agent.namespace, render.selector_labels(agent))
            sidecars = [sidecar_of(pod) for pod in pods]
    status = compute_status(
        agent,
        deployment,
        secret_problem=secret_problem,
        model_problem=observed.model_problem(agent),
        stuck=stuck,
        components=facts,
        sidecars=sidecars,
        cluster_domain=settings.cluster_domain,
    )
    write_status(kube, agent, status, observed, if_unchanged=if_unchanged)


def _lags(sidecars: list[Sidecar], deployment: dict[str, Any] | None) -> bool:
    ready = sum(1 for s in sidecars if s.pod_ready and not s.terminating)
    return ready < int(((deployment or {}).get("status") or {}).get("readyReplicas", 0))


def _all_ready(deployment: dict[str, Any]) -> bool:
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    return bool((deployment.get("status") or {}).get("readyReplicas", 0) >= wanted)


def on_pod_event(
    pod: dict[str, Any],
    owner: api.AIAgent | None,
    kube: Kube,
    settings: OperatorSettings,
    observed: Observed | None = None,
) -> None:
    """A pod of an agent got stuck (crash loop, image pull): report it on the agent at once.

    Pods that are fine cost nothing here; their Deployment's events carry recovery."""
    if owner is None or pod_problem([pod]) is None:
        return
    observed = observed or Observed(kube)
    fresh = Observed(kube).current_owner(owner)  # always asked: the index may lag
    if fresh is None:
        return
    owner = fresh
    deployment = kube.get("apps/v1", "Deployment", owner.namespace, owner.name)
    if deployment is None or not is_controlled_by(deployment, owner.uid):
        return
    refresh_status(kube, owner, deployment, observed.secret_problem(owner), settings, observed)


def write_status(
    kube: Kube,
    agent: api.AIAgent,
    status: api.AIAgentStatus,
    observed: Observed | None = None,
    *,
    if_unchanged: bool = False,
) -> None:
    """Patch what differs from `agent.status`. `if_unchanged`: only if the AIAgent is still at
    the version `agent` was read at (KubeError 409 otherwise): for a view that may be stale."""
    patch = status_patch(agent.status, status)
    if patch is None:
        return
    try:
        version = kube.patch_status(agent, patch, if_unchanged=if_unchanged)
    except KubeError as exc:
        if exc.status != 404:  # the AIAgent was deleted meanwhile: nothing to report on
            raise
        return
    if observed is not None:
        observed.status_written(agent, version)
    events.announce(kube, agent, agent.status, status)


def report_deployment(
    kube: Kube,
    owner: api.AIAgent,
    deployment: dict[str, Any],
    settings: OperatorSettings,
    observed: Observed,
) -> None:
    """The Deployment's status moved on: let it flow into the owner's status.

    Most of the time the owner from the index is current (`Observed.current_owner`), and the
    write is conditional on it; when someone else changed the agent meanwhile, the write is
    refused (409) and repeated from the agent read afresh."""
    for _ in range(3):
        current = observed.current_owner(owner)
        if current is None:
            return  # deleted, being deleted, or replaced by a new agent of the same name
        try:
            secret_problem = observed.secret_problem(current)
            refresh_status(
                kube, current, deployment, secret_problem, settings, observed, if_unchanged=True
            )
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
            observed.status_written(current, STALE)  # not current after all: ask next time
    logger.info("%s/%s: status changed under each of 3 writes", owner.namespace, owner.name)


def child_event_work(
    event_type: str | None,
    child: dict[str, Any],
    owner: api.AIAgent | None,
    settings: OperatorSettings,
    observed: Observed,
) -> Literal["restore", "report"] | None:
    """What a child's event asks for. "restore": the child differs from what its owner (as the
    index has it) wants, or was deleted (`on_child_event`, which reads the owner afresh).
    "report": a Deployment whose controller has caught up with its spec, so its status may have
    news (`report_deployment`). None: nothing, the most common answer. No request, given an
    `observed` that answers from indices alone."""
    if owner is None or not is_controlled_by(child, owner.uid):
        return None  # the owner is gone (garbage collection under way) or was recreated
    if _drift(event_type, child, owner, settings, observed) is not None:
        return "restore"
    if child["kind"] == "Secret" and event_type == "MODIFIED" and observed.key_copy_tampered(child):
        return "restore"
    if child["kind"] == "Deployment" and event_type != "DELETED" and settled(child):
        return "report"
    return None


def on_child_event(
    event_type: str | None,
    child: dict[str, Any],
    owner: api.AIAgent | None,
    kube: Kube,
    settings: OperatorSettings,
    observed: Observed | None = None,
) -> bool:
    """React to a change of a child: restore it if it was deleted or edited, and let the
    Deployment's own status flow into the owner's status. True when it restored the child.

    `owner` comes from Kopf's index, which may lag behind the child's own watch stream. Before
    undoing anything the owner is read afresh, so a spec change a moment ago is not reverted;
    a status from the Deployment is written only over the owner's current version (see
    `report_deployment`), so neither is a status written a moment ago overwritten.
    """
    if owner is None:
        return False
    observed = observed or Observed(kube)
    work = child_event_work(event_type, child, owner, settings, observed)
    if work is None:
        return False
    if work == "report":
        report_deployment(kube, owner, child, settings, observed)
        return False
    fresh = Observed(kube).current_owner(owner)  # always asked: the index may lag
    if fresh is None:
        return False
    owner = fresh
    restored = False
    is_deployment = child["kind"] == "Deployment"
    wanted = _drift(event_type, child, owner, settings, observed)
    if wanted is None and child["kind"] == "Secret" and observed.key_copy_tampered(child):
        wanted = _drift("DELETED", child, owner, settings, observed)  # its value: from the source
    if wanted is not None:
        logger.info(
            "restoring %s %s/%s (%s)",
            child["kind"],
            owner.namespace,
            child["metadata"]["name"],
            "deleted" if event_type == "DELETED" else "changed outside the operator",
        )
        try:
            if wanted["kind"] == components.KIND:
                # Deleted: whoever creates a Component of that name first has it, so the
                # restore goes through the same ownership check as the reconcile.
                claimed = claim_component(kube, owner, wanted, observed, drifted=True)
                if claimed.verdict != "Ok":
                    deployment = observed.deployment(owner)
                    secret_problem = observed.secret_problem(owner)
                    refresh_status(kube, owner, deployment, secret_problem, settings, observed)
                    return False
                metrics.drift_restored(wanted["kind"])
                return True
            applied = apply_child(kube, wanted, observed, drifted=True)
            restored = applied is not None
            if restored:
                metrics.drift_restored(wanted["kind"])
            child = applied or child
        except KubeError as exc:
            if exc.namespace_terminating:
                return False  # the whole namespace is going away, owner included
            raise
    if is_deployment and event_type != "DELETED":
        refresh_status(kube, owner, child, observed.secret_problem(owner), settings, observed)
    return restored


def warn_fought_over(kube: Kube, child: dict[str, Any], restores: int, wait: float) -> None:
    """Say once, at WARNING, that a child keeps being changed back, by whom if its managedFields
    tell (a GET: the watch events come without them), and that restores now back off."""
    meta = child["metadata"]
    where = f"{child['kind']} {meta.get('namespace')}/{meta['name']}"
    try:
        live = kube.get(child["apiVersion"], child["kind"], meta.get("namespace", ""), meta["name"])
    except (KubeError, KeyError):
        live = None
    who = other_writer(live or {}, render.FIELD_MANAGER)
    logger.warning(
        "%s was changed again%s after %d restores: another writer is setting fields the "
        "operator owns; restoring with back-off (next in %.0fs)",
        where,
        f" by field manager {who!r}" if who else "",
        restores,
        wait,
    )


def _drift(
    event_type: str | None,
    child: dict[str, Any],
    owner: api.AIAgent,
    settings: OperatorSettings,
    observed: Observed,
) -> dict[str, Any] | None:
    """The child as the owner wants it, if the actual one was deleted or differs; else None
    (also when the owner no longer wants the child: pruning handles that, and when its
    ModelConfig cannot be used: the reconcile reports that)."""
    try:
        rendered = observed.effective(owner)
    except model_configs.ModelConfigProblem:
        return None
    children, inline = desired(rendered, settings)
    for wanted in children + inline:
        same = (wanted["kind"], wanted["metadata"]["name"])
        if same == (child["kind"], child["metadata"]["name"]):
            if event_type == "DELETED" or not is_subset(wanted, child):
                return wanted
            return None
    return None


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field we set still has our value (fields others added do not count)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and is_subset(value, actual[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual or str(desired) == str(actual))
