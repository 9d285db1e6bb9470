"""Kopf registrations: the whole event surface of the operator on one screen.

Each handler is thin; the work happens in `reconcile`, over the pure `render` and `status`.
Indices and the first look at a child's or pod's event are `async`: Kopf runs those on its event
loop, while a sync handler waits for a thread of the pool that the reconciles (each waiting on
the API server) hold. At a thousand agents, index updates queued behind reconciles held every
watch event in memory meanwhile (the profile: half the operator's peak heap was such bodies).
Run with `python -m aiagent_operator`, or `kopf run -m aiagent_operator.handlers --all-namespaces`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import kopf

from . import (
    api,
    components,
    credentials,
    kopf_fixes,
    metrics,
    model_configs,
    reconcile,
    render,
)
from .kube import Kube, KubeError, is_controlled_by
from .observed import ChildKey, IndexedObserved, RestoreBackoff
from .settings import OperatorSettings
from .status import Sidecar, deployment_facts, pod_problem, sidecar_of

# Kopf's default registry logs in through the `kubernetes` package when it is installed (importing
# it: ~55 MB); this plain one leaves that to our own `login` below, and adds nothing else.
kopf.set_default_registry(kopf.OperatorRegistry())
kopf_fixes.install()  # Kopf's startup gate linear, its watch events decoded by orjson

logger = logging.getLogger(__name__)
T = TypeVar("T")
AIAGENTS = (api.GROUP, api.VERSION, api.PLURAL)
# The kinds with create/update/resume handlers: the only ones whose changes Kopf must compare.
COMPARED_KINDS = {api.KIND}
KOPF_ERROR_BACKOFFS = (1, 1, 2, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5)
# How long a Deployment's status events are gathered before one status write reports them.
STATUS_COALESCE_SECONDS = 1.0
DAPR_COMPONENTS = ("dapr.io", "v1alpha1", components.PLURAL)
DEPLOYMENTS = ("apps", "v1", "deployments")
MODEL_CONFIGS = (api.GROUP, api.VERSION, api.MODEL_CONFIG_PLURAL)
# Every Secret is watched, for its resourceVersion and keys (Kopf never sees a value:
# `kopf_fixes`): a rotated key rolls the pods that read it, and a ModelConfig key's copy in an
# agent's namespace (a child) is restored when edited.
SECRETS = ("v1", "secrets")
# Children are watched so that drift is undone and the Deployment's state reaches status at once.
# Where the cluster has no Dapr, Kopf logs once that it cannot serve Components and starts the
# watch when their CRD appears; the indices below then stay empty, and nothing fails.
CHILD_RESOURCES: list[tuple[str, str] | tuple[str, str, str]] = [
    ("v1", "configmaps"),
    ("v1", "services"),
    DEPLOYMENTS,
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    DAPR_COMPONENTS,
    SECRETS,
]
AGENT_PODS: dict[str, Any] = {
    render.MANAGED_BY_LABEL: render.FIELD_MANAGER,
    render.AGENT_LABEL: kopf.PRESENT,
}
# Kopf filters `labels=` and `when=` on the client, after decoding every object of the kind; these
# watches ask the API server for ours alone, so a cluster's other ConfigMaps, Deployments and pods
# never reach the operator. (Not Components: an agent may name one it does not own; not Secrets:
# the agents' own Secrets are watched too.)
OWN_LABEL_SELECTOR = f"{render.MANAGED_BY_LABEL}={render.FIELD_MANAGER}"
LABELLED_RESOURCES = [r for r in CHILD_RESOURCES if r not in (DAPR_COMPONENTS, SECRETS)] + [
    ("v1", "pods")
]


def configure_kopf(
    kopf_settings: kopf.OperatorSettings, settings: OperatorSettings
) -> kopf_fixes.RememberedDiffBaseStorage:
    """Set Kopf up; returns where it keeps what it last handled of each AIAgent."""
    # Kopf's retry bookkeeping goes to annotations under our group; status stays ours alone. What
    # it last handled stays in memory: an annotation for it was one more write per change.
    kopf_settings.persistence.progress_storage = kopf_fixes.ProgressStorage(prefix=api.GROUP)
    diffbase = kopf_fixes.RememberedDiffBaseStorage(
        compared_kinds=COMPARED_KINDS, prefix=api.GROUP, key="last-handled-configuration"
    )
    kopf_settings.persistence.diffbase_storage = diffbase
    kopf_settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    # Events on the AIAgent only for what a person must act on, not every successful pass.
    kopf_settings.posting.level = logging.WARNING
    kopf_settings.posting.loggers = True  # e.g. "Secret 'openai' ... not found" in describe
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.priority = settings.peering_priority
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.mandatory = not settings.standalone
    kopf_settings.execution.max_workers = settings.handler_workers
    # Kopf's own requests (watches, its patches) retry after 1, 1, 2 ... 21 s by default: a
    # worker whose patch met an outage then waited up to 21 s more once the API server was
    # back. Every 5 s at most, for about as long in all.
    kopf_settings.networking.error_backoffs = KOPF_ERROR_BACKOFFS
    for resource in LABELLED_RESOURCES:
        kopf_settings.watching.label_selectors[resource] = OWN_LABEL_SELECTOR
    return diffbase


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Kopf's watches and patches use the same credentials as `Kube` (asked again on a 401)."""
    return kopf.ConnectionInfo(**credentials.load().for_kopf())


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    memo.settings = OperatorSettings()
    memo.kube = Kube.from_environment(connections=memo.settings.handler_workers)
    # What this process applied last, per child: the digest index may lag behind it.
    memo.applied_here = {}
    memo.copy_versions = {}  # per key copy (a Secret): the version our last apply made
    memo.secrets_seen = {}  # Secrets found usable a moment ago (their keys, never values)
    memo.status_versions = {}  # per AIAgent uid: the resourceVersion our last status write made
    memo.diffbase = configure_kopf(settings, memo.settings)
    memo.executor = settings.execution.executor  # the pool of the sync handlers, for `in_pool`
    memo.deployments_to_report = {}  # (namespace, agent): its newest Deployment, to report soon
    memo.reports_due = {}  # (namespace, agent): the task that will (referenced until it runs)
    memo.restore_backoff = RestoreBackoff()  # children restored lately, for a fight's back-off
    memo.drifted = {}  # (kind, namespace, name): its newest drifted event, restored when due
    memo.restores_due = {}  # (kind, namespace, name): the task that will
    metrics.watch_queue(memo.executor, memo.reports_due)
    metrics.watch_agents(kwargs["aiagents_by_name"])  # Kopf passes indices to startup handlers


async def in_pool(memo: kopf.Memo, work: Callable[[], T]) -> T:
    """Run blocking work in the sync handlers' pool, in this handler's context (so its log lines
    still name the object, and warnings still become its events)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(memo.executor, context.run, work)


@kopf.index(*AIAGENTS)
async def aiagents_by_name(body: kopf.Body, **_: Any) -> dict[tuple[str, str], api.AIAgent]:
    agent = api.AIAgent.from_body(body)
    return {(agent.namespace, agent.name): agent}


@kopf.index(*MODEL_CONFIGS)
async def model_configs_by_name(
    body: kopf.Body, **_: Any
) -> dict[tuple[str, str], api.ModelConfig]:
    config = api.ModelConfig.from_body(body)
    return {(config.namespace, config.name): config}


@kopf.index(*SECRETS)
async def secret_versions(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], tuple[str, frozenset[str]]]:
    """Each Secret's resourceVersion and keys (a few bytes; the values never reach Kopf)."""
    version = str(body.metadata.get("resourceVersion", ""))
    return {(namespace or "", name): (version, frozenset(body.get("data") or {}))}


def controlled_by_aiagent(body: kopf.Body, **_: Any) -> bool:
    """Whether an AIAgent is the object's controller (the children's watches filter on it)."""
    return any(
        ref.get("controller")
        and ref.get("kind") == api.KIND
        and ref.get("apiVersion") == api.API_VERSION
        for ref in body.metadata.get("ownerReferences") or []
    )


# The pods' and Components' watch streams fill these as they go, so status needs no request.
@kopf.index("v1", "pods", labels=AGENT_PODS)
async def agent_pods(
    body: kopf.Body, namespace: str | None, **_: Any
) -> dict[tuple[str, str], Sidecar]:
    return {(namespace or "", body.metadata.labels[render.AGENT_LABEL]): sidecar_of(dict(body))}


@kopf.index(*DAPR_COMPONENTS)
async def dapr_components(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], components.SeenComponent]:
    return {(namespace or "", name): components.seen_component(body)}


@kopf.index(*DAPR_COMPONENTS, when=controlled_by_aiagent)
async def dapr_components_by_owner(body: kopf.Body, name: str, **_: Any) -> dict[str, str]:
    owner = next(ref for ref in body.metadata["ownerReferences"] if ref.get("controller"))
    return {owner["uid"]: name}


async def applied_digest(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[ChildKey, str]:
    """The digest each child was last applied with (a few bytes per child, not the child)."""
    digest = (body.metadata.annotations or {}).get(render.APPLIED_HASH_ANNOTATION)
    return {(str(body.get("kind")), namespace or "", name): digest} if digest else {}


# Kopf fills every index from a full listing before any other handler runs, so after a restart
# the resume handlers find each child's digest and re-apply only what changed meanwhile, and
# report each agent's Deployment from the index rather than reading it.
@kopf.index(*DEPLOYMENTS, when=controlled_by_aiagent)
async def agent_deployments(
    body: kopf.Body, namespace: str | None, name: str, **_: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace or "", name): deployment_facts(dict(body))}


# Every other child: only its digest.
APPLIED_INDICES = [f"applied_{r[-1]}" for r in CHILD_RESOURCES if r != DEPLOYMENTS]
for _resource, _index in zip(
    [r for r in CHILD_RESOURCES if r != DEPLOYMENTS], APPLIED_INDICES, strict=True
):
    kopf.index(*_resource, when=controlled_by_aiagent, id=_index)(applied_digest)


def indexed_owner(indices: dict[str, Any], key: tuple[str, str]) -> api.AIAgent | None:
    """The AIAgent (namespace, name) as the index has it now; Kopf passes indices by name as
    keyword arguments, and they follow the watch stream."""
    owners: Iterable[api.AIAgent] = indices["aiagents_by_name"].get(key, [])
    return next(iter(owners), None)


def observed(memo: kopf.Memo, indices: dict[str, Any], *, asking: bool = True) -> IndexedObserved:
    """The facts from the indices (`asking=False`: and nothing else, for the event loop)."""
    return IndexedObserved(
        memo.kube,
        pods=indices["agent_pods"],
        components_by_name=indices["dapr_components"],
        components_by_owner=indices["dapr_components_by_owner"],
        applied_digests=[indices[name] for name in APPLIED_INDICES],
        deployments=indices["agent_deployments"],
        applied_here=memo.applied_here,
        secrets_seen=memo.secrets_seen,
        status_versions=memo.status_versions,
        model_configs_by_name=indices["model_configs_by_name"],
        secrets=indices["secret_versions"],
        agents=indices["aiagents_by_name"],
        copy_versions=memo.copy_versions,
        asking=asking,
    )


@kopf.on.resume(*AIAGENTS)
@kopf.on.create(*AIAGENTS)
@kopf.on.update(*AIAGENTS)
def reconcile_aiagent(body: kopf.Body, memo: kopf.Memo, reason: str, **kwargs: Any) -> None:
    agent = api.AIAgent.from_body(body)
    try:
        with metrics.reconciling(), retried_soon_if_transient(kwargs.get("retry") or 0):
            reconcile.reconcile_agent(agent, memo.kube, memo.settings, observed(memo, kwargs))
    except (reconcile.SecretNotReady, reconcile.ModelConfigNotReady) as exc:
        raise kopf.TemporaryError(str(exc), delay=memo.settings.secret_retry_seconds) from None
    except reconcile.ComponentNotReady as exc:
        raise kopf.TemporaryError(str(exc), delay=memo.settings.component_retry_seconds) from None
    except reconcile.ChildRefused as exc:
        raise kopf.PermanentError(str(exc)) from None
    finally:
        # Once per change (not on retries; after a restart every agent resumes anyway).
        if reason != "resume" and not kwargs.get("retry"):
            for other in budget_sharers(memo, kwargs, agent):
                reconcile_quietly(memo, kwargs, other)


@contextlib.contextmanager
def retried_soon_if_transient(retry: int) -> Iterator[None]:
    """The API server away, overloaded (429) or failing: retry soon, then less often. Kopf
    waits a minute after any other exception, so an outage of seconds cost each agent whose
    reconcile it caught that much."""
    try:
        yield
    except KubeError as exc:
        if not reconcile.transient(exc):
            raise
        delay = reconcile.retry_delay(retry)
        raise kopf.TemporaryError(f"the API server: {exc}", delay=delay) from None


def budget_sharers(
    memo: kopf.Memo, indices: dict[str, Any], agent: api.AIAgent
) -> list[api.AIAgent]:
    """The other agents that share a ModelConfig's namespace budget with `agent`: when it comes,
    goes or changes its replicas, their shares change too (each pod's share is the budget over
    all their pods). From the indices alone."""
    key = model_configs.config_key(agent)
    if key is None:
        return []
    facts = observed(memo, indices, asking=False)
    config = facts.model_config(*key)
    if config is None or config.spec.namespace_budget is None:
        return []
    return [other for other in facts.sharing(agent, key) if other.uid != agent.uid]


def reconcile_quietly(memo: kopf.Memo, indices: dict[str, Any], agent: api.AIAgent) -> None:
    """Reconcile an agent because something it uses changed (a ModelConfig, a Secret, a budget
    sharer), not the agent itself: what goes wrong shows in its status, and Kopf's own handler
    for the agent keeps its retries. The agent is taken as the index has it now: it may have
    changed, or gone, while this waited for a thread."""
    for current in indices["aiagents_by_name"].get((agent.namespace, agent.name), []):
        agent = current
    if agent.deleting or all(
        a.uid != agent.uid
        for a in indices["aiagents_by_name"].get((agent.namespace, agent.name), [])
    ):
        return
    try:
        with metrics.reconciling():
            reconcile.reconcile_agent(agent, memo.kube, memo.settings, observed(memo, indices))
    except (
        reconcile.SecretNotReady,
        reconcile.ModelConfigNotReady,
        reconcile.ComponentNotReady,
        reconcile.ChildRefused,
    ) as exc:
        logger.info("%s/%s: %s", agent.namespace, agent.name, exc)
    except KubeError as exc:
        logger.warning("%s/%s: reconcile failed: %s", agent.namespace, agent.name, exc.message)


async def reconcile_users(
    memo: kopf.Memo, indices: dict[str, Any], agents: list[api.AIAgent]
) -> None:
    """Reconcile the agents that use what changed, as many at once as the pool has threads (a
    ModelConfig may serve hundreds)."""
    await asyncio.gather(
        *(in_pool(memo, functools.partial(reconcile_quietly, memo, indices, a)) for a in agents)
    )


def changed(type: str | None, **_: Any) -> bool:
    """A change seen by the watch (not an object listed at startup: the agents resume anyway)."""
    return type in ("ADDED", "MODIFIED", "DELETED")


@kopf.on.event(*MODEL_CONFIGS, when=changed)
async def model_config_changed(
    namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Every agent that uses the ModelConfig follows it: a new model or endpoint rolls its pods,
    a deleted or narrowed one makes it Pending with a reason that names the ModelConfig."""
    key = (namespace or "", name)
    users = [
        agent
        for agents in kwargs["aiagents_by_name"].values()
        for agent in agents
        if model_configs.config_key(agent) == key and not agent.deleting
    ]
    await reconcile_users(memo, kwargs, users)


def changed_not_deleted(type: str | None, **_: Any) -> bool:
    """A Secret created or changed. Not deleted: rolling the pods onto a Secret that is gone
    would only replace serving pods with ones that cannot start (status says it is missing)."""
    return type in ("ADDED", "MODIFIED")


@kopf.on.event(*SECRETS, when=changed_not_deleted)
async def secret_changed(
    body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A Secret an agent's pods read changed (its key rotated, say): the agent is rendered again,
    its pod template carries the Secret's new version, and its pods roll."""
    if controlled_by_aiagent(body):
        return  # a key copy: `_on_child_event` restores it
    key = (namespace or "", name)
    facts = observed(memo, kwargs, asking=False)
    users = []
    for agents in kwargs["aiagents_by_name"].values():
        for agent in agents:
            if agent.deleting:
                continue
            config_key = model_configs.config_key(agent)
            config = facts.model_config(*config_key) if config_key else None
            if key in model_configs.secrets_read(agent, config):
                users.append(agent)
    await reconcile_users(memo, kwargs, users)


def deleted(type: str, **_: Any) -> bool:
    return type == "DELETED"


@kopf.on.event(*AIAGENTS, when=deleted)
async def forget_aiagent(uid: str, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """What this process keeps per agent goes with it: the essence Kopf compares and the version
    of our last status write (a child's applied digest goes with the child)."""
    memo.diffbase.forget(uid)
    memo.status_versions.pop(uid, None)
    if (body.get("spec") or {}).get("modelRef"):
        sharers = budget_sharers(memo, kwargs, api.AIAgent.from_body(body))
        await reconcile_users(memo, kwargs, sharers)


def forget_applied(applied_here: dict[ChildKey, str], child: kopf.Body, namespace: str) -> None:
    """A deleted child's digest goes with it, unless a child of the same name was applied since
    (its events come from another worker, and may be handled before the old one's deletion)."""
    key = (str(child.get("kind")), namespace, child.metadata.name or "")
    if applied_here.get(key) == child.metadata.annotations.get(render.APPLIED_HASH_ANNOTATION):
        applied_here.pop(key, None)


async def _on_child_event(
    type: str, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    owner_name = next(
        ref["name"] for ref in body.metadata["ownerReferences"] if ref.get("controller")
    )
    owner = indexed_owner(kwargs, (namespace or "", owner_name))
    if type == "DELETED":
        forget_applied(memo.applied_here, body, namespace or "")
        if body.get("kind") == "Secret":
            memo.copy_versions.pop(("Secret", namespace or "", body.metadata.name or ""), None)
    child = dict(body)
    facts = observed(memo, kwargs, asking=False)
    work = reconcile.child_event_work(type, child, owner, memo.settings, facts)
    key = (str(body.get("kind")), namespace or "", body.metadata.name or "")
    if work != "restore":
        memo.drifted.pop(key, None)  # as wanted again (or gone with its owner): nothing due
        if work == "report":
            report_soon(memo, (namespace or "", owner_name), child, kwargs)
        return
    wait = memo.restore_backoff.wait(key)
    if wait > 0 or key in memo.restores_due:
        # Fought over: restored when due, as the newest event then has it.
        restore_later(memo, key, type, child, (namespace or "", owner_name), kwargs)
        if key[0] == "Deployment" and type != "DELETED" and reconcile.settled(child):
            report_soon(memo, (namespace or "", owner_name), child, kwargs)
        return
    try:
        restored = await in_pool(
            memo,
            lambda: reconcile.on_child_event(
                type, child, owner, memo.kube, memo.settings, observed(memo, kwargs)
            ),
        )
    except KubeError as exc:
        if not reconcile.transient(exc):
            raise
        # No later event may bring it up again (a deleted child sends none): tried again.
        restore_later(memo, key, type, child, (namespace or "", owner_name), kwargs)
        return
    if restored:
        memo.restore_backoff.restored(key)


def restore_later(
    memo: kopf.Memo,
    key: ChildKey,
    event_type: str,
    child: dict[str, Any],
    owner_key: tuple[str, str],
    kwargs: dict[str, Any],
) -> None:
    """Restore the child when its back-off says, as its newest event then has it (one task per
    child; an event that shows it as wanted meanwhile cancels the restore)."""
    memo.drifted[key] = (event_type, child)
    if key not in memo.restores_due:
        memo.restores_due[key] = asyncio.create_task(
            _restore_when_due(memo, key, owner_key, kwargs)
        )


async def _restore_when_due(
    memo: kopf.Memo, key: ChildKey, owner_key: tuple[str, str], kwargs: dict[str, Any]
) -> None:
    backoff: RestoreBackoff = memo.restore_backoff
    failures = 0
    try:
        while key in memo.drifted:
            wait = max(backoff.wait(key), reconcile.retry_delay(failures - 1) if failures else 0)
            if wait > 0 and backoff.first_warning(key):
                _, child = memo.drifted[key]
                warn = functools.partial(
                    reconcile.warn_fought_over, memo.kube, child, backoff.restored_count(key), wait
                )
                await in_pool(memo, warn)
            await asyncio.sleep(wait)
            drifted = memo.drifted.pop(key, None)
            owner = indexed_owner(kwargs, owner_key)
            if drifted is None or owner is None:
                return  # as wanted again, or its owner gone
            event_type, child = drifted
            restore = functools.partial(
                reconcile.on_child_event,
                event_type,
                child,
                owner,
                memo.kube,
                memo.settings,
                observed(memo, kwargs),
            )
            try:
                if await in_pool(memo, restore):
                    backoff.restored(key)
                failures = 0
            except KubeError as exc:
                if not reconcile.transient(exc):
                    raise
                memo.drifted.setdefault(key, drifted)  # unless a newer event came meanwhile
                failures += 1
    except Exception:  # no Kopf handler around this task to log it
        logger.exception("%s %s/%s: restoring it failed", *key)
        metrics.error("drift_restore")
    finally:
        # No await between the loop's last look and this: an event from here on starts a task.
        del memo.restores_due[key]


def report_soon(
    memo: kopf.Memo, key: tuple[str, str], deployment: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    """Report the agent's Deployment on it in STATUS_COALESCE_SECONDS, as it is then: the events
    of a rollout (observed, replicas updated, ready, available) come within moments of each
    other, and one status write serves them all rather than one write and read each."""
    memo.deployments_to_report[key] = deployment  # the newest event wins
    if key not in memo.reports_due:
        memo.reports_due[key] = asyncio.create_task(_report_while_news(memo, key, kwargs))


async def _report_while_news(memo: kopf.Memo, key: tuple[str, str], kwargs: dict[str, Any]) -> None:
    """One task per agent at a time, so reports are written in the order of their events (two
    in the pool at once could land newest first, and the older one stick)."""
    failures = 0
    try:
        while key in memo.deployments_to_report:
            await asyncio.sleep(
                reconcile.retry_delay(failures - 1) if failures else STATUS_COALESCE_SECONDS
            )
            deployment = memo.deployments_to_report.pop(key)
            owner = indexed_owner(kwargs, key)  # as it is now
            if owner is None or not is_controlled_by(deployment, owner.uid):
                continue
            facts = observed(memo, kwargs)
            report = functools.partial(
                reconcile.report_deployment, memo.kube, owner, deployment, memo.settings, facts
            )
            try:
                await in_pool(memo, report)
                failures = 0
            except KubeError as exc:
                if not reconcile.transient(exc):
                    raise
                # The API server away or throttling us: no event may come to report it again
                # (a Deployment at rest has none), so this one is tried again, with back-off,
                # unless a newer one came meanwhile.
                memo.deployments_to_report.setdefault(key, deployment)
                failures += 1
                metrics.error(metrics.reason_of(exc))
    except Exception:  # no Kopf handler around this task to log it
        logger.exception("%s/%s: reporting the Deployment's status failed", *key)
        metrics.error("status_report")
    finally:
        # No await between the loop's last look and this: an event from here on starts a task.
        del memo.reports_due[key]


for _resource in CHILD_RESOURCES:
    kopf.on.event(*_resource, when=controlled_by_aiagent, id=f"child-{_resource[-1]}")(
        _on_child_event
    )


@kopf.on.event("v1", "pods", labels=AGENT_PODS)
async def agent_pod_event(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A crash-looping or unpullable agent container shows on its AIAgent without waiting for the
    Deployment's progress deadline."""
    name = body.metadata.get("labels", {}).get(render.AGENT_LABEL, "")
    owner = indexed_owner(kwargs, (namespace or "", name))
    pod = dict(body)
    if owner is None or pod_problem([pod]) is None:
        return  # pods that are fine cost nothing: their Deployment's events carry recovery
    await in_pool(
        memo,
        lambda: reconcile.on_pod_event(
            pod, owner, memo.kube, memo.settings, observed(memo, kwargs)
        ),
    )
