"""What the operator answers from its indices and memory without asking the API server.

The client here points at a port nothing listens on: a request it should not make fails the test
with "Unreachable", and one it must make shows as that error."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from aiagent_operator import api, reconcile, render
from aiagent_operator.credentials import Credentials
from aiagent_operator.kube import Kube, KubeError
from aiagent_operator.observed import STALE, IndexedObserved, RestoreBackoff, other_writer
from aiagent_operator.settings import OperatorSettings
from aiagent_operator.status import compute_status, deployment_facts, sidecar_of

from .conftest import make_agent

NOWHERE = Kube(Credentials(server="https://127.0.0.1:1", insecure=True))


def indexed(**memory: Any) -> IndexedObserved:
    return IndexedObserved(
        NOWHERE,
        pods=memory.pop("pods", {}),
        components_by_name={},
        components_by_owner={},
        **memory,
    )


def at_version(agent: api.AIAgent, version: str, **changes: Any) -> api.AIAgent:
    return agent.model_copy(update={"resource_version": version, **changes})


def asks_the_api(call: Any) -> bool:
    try:
        call()
    except KubeError as exc:
        assert exc.reason == "Unreachable", exc
        return True
    return False


def test_the_index_owner_is_trusted_until_a_write_from_it_is_refused() -> None:
    versions: dict[str, str] = {}
    observed = indexed(status_versions=versions)
    owner = at_version(make_agent(), "41")
    assert observed.current_owner(owner) is owner  # nothing written yet: the index is all we know
    observed.status_written(owner, "42")
    # Kopf's annotation patch makes "43" before the index shows "42": still no request (a write
    # from a stale view is conditional, and refused)
    assert observed.current_owner(at_version(owner, "43")) is not None
    assert observed.current_owner(at_version(owner, "43", deleting=True)) is None
    observed.status_written(owner, STALE)  # such a write was refused (409)
    assert asks_the_api(lambda: observed.current_owner(owner))


def test_a_usable_secret_is_asked_for_once_in_a_while_a_missing_one_every_time() -> None:
    seen: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
    observed = indexed(secrets_seen=seen)
    agent = make_agent()
    assert asks_the_api(lambda: observed.secret_problem(agent))
    seen[("team-a", "openai")] = (time.monotonic(), frozenset({"other"}))  # read just now
    assert observed.secret_problem(agent) == (
        "Secret 'openai' has no key 'api-key' (spec.model.apiKeySecretRef.key)"
    )
    seen[("team-a", "openai")] = (time.monotonic() - 60, frozenset({"api-key"}))
    assert asks_the_api(lambda: observed.secret_problem(agent))  # stale: asked again


def crash_looping_pod(name: str, agent: str = "support-bot") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"aiagents.dev/agent": agent}},
        "spec": {"containers": [{"name": "agent"}]},
        "status": {
            "containerStatuses": [
                {
                    "name": "agent",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 3, "message": "no such model"}},
                    "restartCount": 4,
                }
            ]
        },
    }


def test_a_stuck_pod_is_found_in_the_pod_index() -> None:
    fine = sidecar_of({"metadata": {"name": "support-bot-a"}, "status": {}})
    stuck = sidecar_of(crash_looping_pod("support-bot-b"))
    observed = indexed(pods={("team-a", "support-bot"): [fine, stuck]})
    reason, message = observed.stuck_pod(make_agent()) or ("", "")
    assert reason == "CrashLoopBackOff"
    assert message.startswith("pod support-bot-b: container agent CrashLoopBackOff (exit code 3")
    assert "no such model" in message


@pytest.mark.parametrize(
    ("kind", "status", "work"),
    [
        ("Deployment", {}, None),  # not yet observed by its controller: no news
        ("Deployment", {"observedGeneration": 1, "readyReplicas": 1}, "report"),
        ("ConfigMap", {}, None),  # as its owner wants it
    ],
)
def test_which_child_events_need_work(
    kind: str, status: dict[str, Any], work: str | None, settings: OperatorSettings
) -> None:
    agent = make_agent()
    facts = IndexedObserved(
        None, pods={}, components_by_name={}, components_by_owner={}, asking=False
    )  # type: ignore[arg-type]
    # As the operator renders it: with the versions of its Secrets (none known here).
    rendered = facts.effective(agent)
    children = {c["kind"]: c for c in reconcile.render.render_children(rendered, settings)}
    child = {**children[kind], "status": status}
    child["metadata"] = {**child["metadata"], "generation": 1}  # its ownerReferences: rendered
    assert reconcile.child_event_work("MODIFIED", child, agent, settings, facts) == work
    assert reconcile.child_event_work("DELETED", child, agent, settings, facts) == "restore"
    if kind == "ConfigMap":
        edited = {**child, "data": {"agent.yaml": "edited by hand"}}
        assert reconcile.child_event_work("MODIFIED", edited, agent, settings, facts) == "restore"
    assert reconcile.child_event_work("MODIFIED", child, None, settings, facts) is None


def test_the_agents_deployment_and_its_digest_come_from_the_deployment_index() -> None:
    """A restart with nothing changed reads no Deployment: the index has what status needs."""
    agent = make_agent()
    children = reconcile.desired(agent, OperatorSettings()).children
    wanted = next(c for c in children if c["kind"] == "Deployment")
    digest = render.applied_hash(wanted)
    live = render.stamped(wanted, digest)
    live["metadata"].update(uid="d-1", generation=4, managedFields=[{"manager": "x"}])
    live["status"] = {"observedGeneration": 4, "readyReplicas": 1, "conditions": []}
    facts = deployment_facts(live)
    observed = indexed(deployments={("team-a", "support-bot"): [facts]})

    assert observed.deployment(agent) == facts
    assert observed.unchanged(wanted, digest) and not observed.unchanged(wanted, "other")
    # What status makes of the facts is what it makes of the whole Deployment.
    now = "2026-12-06T10:00:00Z"
    assert compute_status(agent, live, now=now) == compute_status(agent, facts, now=now)
    assert len(json.dumps(facts)) < len(json.dumps(live)) / 4


def test_a_deployment_not_in_the_index_or_someone_elses_is_asked_for() -> None:
    agent = make_agent()
    theirs = {"metadata": {"ownerReferences": [{"uid": "other", "controller": True}]}}
    for deployments in ({}, {("team-a", "support-bot"): [deployment_facts(theirs)]}):
        observed = indexed(deployments=deployments)
        assert asks_the_api(lambda observed=observed: observed.deployment(agent))


def test_the_rendering_remembered_is_that_of_the_agents_generation() -> None:
    """A spec changed and changed back renders as before but for its generation, which the
    Deployment carries (status reports it as observed): the remembered rendering must not be the
    earlier generation's."""
    first = make_agent(generation=1)
    spec = first.spec.model_dump(by_alias=True, exclude_none=True)
    changed = make_agent({**spec, "replicas": 2}, generation=2)
    back = make_agent(generation=3)
    settings = OperatorSettings()  # one, as the operator's: remembered renderings are per settings

    def stamped(agent: api.AIAgent) -> tuple[str, int]:
        children = reconcile.desired(agent, settings).children
        deployment = next(c for c in children if c["kind"] == "Deployment")
        return deployment["metadata"]["annotations"][render.GENERATION_ANNOTATION], deployment[
            "spec"
        ]["replicas"]

    assert [stamped(a) for a in (first, changed, back)] == [("1", 1), ("2", 2), ("3", 1)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_child_fought_over_is_restored_with_exponential_back_off() -> None:
    clock = FakeClock()
    backoff = RestoreBackoff(free=2, base=2.0, cap=16.0, quiet=60.0, clock=clock)
    key = ("Deployment", "ns", "bot")
    restores = []
    # Another writer sets the field back every second, for a minute; we restore when due.
    for second in range(60):
        clock.now = 1000.0 + second
        if backoff.wait(key) == 0:
            backoff.restored(key)
            restores.append(second)
    assert restores == [0, 1, 3, 7, 15, 31, 47], restores  # 2 free, then 2, 4, 8, 16, 16 (cap)
    assert backoff.first_warning(key) and not backoff.first_warning(key)


def test_the_back_off_waits_from_the_last_restore_and_starts_afresh_after_quiet() -> None:
    clock = FakeClock()
    backoff = RestoreBackoff(free=1, base=4.0, quiet=30.0, clock=clock)
    key = ("ConfigMap", "ns", "bot-agent")
    assert backoff.wait(key) == 0
    backoff.restored(key)
    clock.now += 1
    assert backoff.wait(key) == 3.0  # 4 s after the last restore
    backoff.first_warning(key)
    clock.now += 31  # left as wanted for longer than `quiet`
    assert backoff.wait(key) == 0
    assert backoff.restored_count(key) == 0 and len(backoff) == 0
    assert backoff.first_warning(key)  # a new episode is said again


def test_other_writer_is_who_changed_more_than_metadata() -> None:
    def entry(manager: str, time: str, fields: dict[str, Any], sub: str = "") -> dict[str, Any]:
        found = {"manager": manager, "time": time, "operation": "Update", "fieldsV1": fields}
        return {**found, "subresource": sub} if sub else found

    deployment = {
        "metadata": {
            "managedFields": [
                entry("aiagent-operator", "2026-01-01T00:00:09Z", {"f:spec": {}}),
                entry("second-writer", "2026-01-01T00:00:05Z", {"f:spec": {}}),
                entry("kube-controller-manager", "2026-01-01T00:00:07Z", {"f:metadata": {}}),
                entry(
                    "kube-controller-manager", "2026-01-01T00:00:08Z", {"f:status": {}}, "status"
                ),
            ]
        }
    }
    assert other_writer(deployment, "aiagent-operator") == "second-writer"
    only_metadata = {"metadata": {"managedFields": deployment["metadata"]["managedFields"][2:3]}}
    assert other_writer(only_metadata, "aiagent-operator") == "kube-controller-manager"
    assert other_writer({"metadata": {}}, "aiagent-operator") is None


def test_transient_api_errors_are_retried_soon_then_less_often() -> None:
    assert reconcile.transient(KubeError(429, "Too Many Requests", "slow down"))
    assert reconcile.transient(KubeError(0, "Unreachable", "connection refused"))
    assert reconcile.transient(KubeError(503, "Service Unavailable", "etcd"))
    assert not reconcile.transient(KubeError(422, "Invalid", "bad field"))
    assert not reconcile.transient(KubeError(403, "Forbidden", "no"))
    assert [reconcile.retry_delay(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]
    assert reconcile.retry_delay(10_000) == 10


def test_a_namespace_being_deleted_or_gone_is_nothing_to_repair() -> None:
    """A child restored as its namespace goes: refused (403, terminating) or the namespace
    already gone (404 naming the namespace); a missing object's own 404 is not that."""
    from aiagent_operator.kube import _kube_error

    terminating = _kube_error(
        403,
        "Forbidden",
        b'{"message": "unable to create new content in namespace x because it '
        b'is being terminated", "details": {"name": "a", "kind": "deployments"}}',
    )
    gone = _kube_error(
        404,
        "Not Found",
        b'{"message": "namespaces \\"x\\" not found", '
        b'"details": {"name": "x", "kind": "namespaces"}}',
    )
    missing = _kube_error(
        404,
        "Not Found",
        b'{"message": "deployments.apps \\"a\\" not found", '
        b'"details": {"name": "a", "group": "apps", "kind": "deployments"}}',
    )
    assert terminating.namespace_terminating and gone.namespace_terminating
    assert not missing.namespace_terminating
