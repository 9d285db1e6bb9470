"""What the operator does at startup about its peering object (peering.py), against a fake API
server that answers as a real one does (the e2e suite, tests/e2e/test_operator_startup.py, runs
the same against a real one)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from aiagent_operator import peering
from aiagent_operator.kube import KubeError
from aiagent_operator.settings import OperatorSettings

GROUP = {"resources": [{"name": "clusterkopfpeerings"}, {"name": "kopfpeerings"}]}


class FakeApi:
    """Answers discovery, listings and creates of peering objects; records what was asked."""

    def __init__(
        self,
        *,
        crd: bool = True,
        existing: set[str] | None = None,
        may_create: bool = True,
        may_list: bool = True,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.crd, self.existing, self.may_create, self.may_list = (
            crd,
            existing or set(),
            may_create,
            may_list,
        )
        self.namespaces = namespaces
        self.calls: list[tuple[str, str]] = []

    def request(
        self, method: str, path: str, body: Any = None, query: Any = None
    ) -> dict[str, Any]:
        self.calls.append((method, path))
        if path == peering.GROUP_PATH:
            if not self.crd:
                raise KubeError(
                    404, "Not Found", "the server could not find the requested resource"
                )
            return GROUP
        if path == "/api/v1/namespaces":
            return {"items": [{"metadata": {"name": n}} for n in self.namespaces]}
        if method == "GET":
            if not self.may_list:
                raise KubeError(403, "Forbidden", f"{path} is forbidden")
            return {"items": [{"metadata": {"name": "p"}}] if path in self.existing else []}
        if method == "POST":
            if not self.may_create:
                raise KubeError(
                    403,
                    "Forbidden",
                    'clusterkopfpeerings.kopf.dev is forbidden: User "op" cannot create',
                )
            if path in self.existing:
                raise KubeError(409, "Conflict", "already exists")
            self.existing.add(path)
            return body
        raise AssertionError((method, path))


def settings(**values: Any) -> OperatorSettings:
    return OperatorSettings(peering_name="p", peering_priority=1, **values)


CLUSTER = "/apis/kopf.dev/v1/clusterkopfpeerings"


def test_standalone_asks_nothing() -> None:
    api = FakeApi()
    assert peering.prepare(api, settings(standalone=True)) == peering.Outcome(standalone=True)
    assert api.calls == []


def test_an_existing_peering_is_left_alone() -> None:
    api = FakeApi(existing={CLUSTER})
    assert peering.prepare(api, settings()) == peering.Outcome(standalone=False)
    assert ("POST", CLUSTER) not in api.calls


def test_a_missing_peering_is_created(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    with caplog.at_level(logging.INFO, logger="aiagent_operator.peering"):
        assert peering.prepare(api, settings()).missing == []
    assert ("POST", CLUSTER) in api.calls and CLUSTER in api.existing
    assert [r.getMessage() for r in caplog.records] == [
        "Created the ClusterKopfPeering 'p', where replicas meet."
    ]


def test_created_meanwhile_by_another_replica_is_fine() -> None:
    api = FakeApi(may_list=False)  # cannot see it, creates it: 409 says it is there
    api.existing.add(CLUSTER)
    assert peering.prepare(api, settings()).missing == []


def test_without_the_crd_it_runs_standalone(caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi(crd=False)
    with caplog.at_level(logging.INFO, logger="aiagent_operator.peering"):
        assert peering.prepare(api, settings()) == peering.Outcome(standalone=True)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        "clusterkopfpeerings.kopf.dev is not installed: running standalone" in record.getMessage()
    )


def test_without_permission_one_line_says_what_to_do() -> None:
    outcome = peering.prepare(FakeApi(may_create=False), settings())
    assert outcome.missing == [None] and not outcome.standalone
    command = (
        'echo \'{"apiVersion":"kopf.dev/v1","kind":"ClusterKopfPeering","metadata":{"name":"p"}}\''
        " | kubectl apply -f -"
    )
    assert "no ClusterKopfPeering 'p'" in outcome.problem and command in outcome.problem
    assert "cannot create" in outcome.problem and "AIAGENT_STANDALONE=true" in outcome.problem
    assert "\n" not in outcome.problem


def test_namespaced_names_each_namespace_and_expands_globs() -> None:
    api = FakeApi(may_create=False, namespaces=("team-a", "team-b", "other"))
    outcome = peering.prepare(api, settings(watch_namespaces="team-*,solo"))
    assert outcome.missing == ["solo", "team-a", "team-b"]
    assert "no KopfPeering 'p' in namespaces solo, team-a, team-b" in outcome.problem
    assert "for ns in solo team-a team-b; do echo" in outcome.problem
    assert "kubectl apply -n $ns -f -; done" in outcome.problem
    one = peering.prepare(FakeApi(may_create=False), settings(watch_namespaces="team-a"))
    assert "kubectl apply -n team-a -f -" in one.problem


def test_start_reports_not_ready_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    readiness = peering.Readiness()
    with caplog.at_level(logging.INFO, logger="aiagent_operator.peering"):
        standalone, stop = peering.start(FakeApi(may_create=False), settings(), readiness)
    stop()
    assert standalone is False
    ready, why = readiness.get()
    assert not ready and "no ClusterKopfPeering 'p'" in why
    assert readiness.probe() == why
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_recheck_turns_ready_once_the_object_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peering, "RECHECK_SECONDS", 0.01)
    api = FakeApi(may_create=False)
    readiness = peering.Readiness()
    standalone, stop = peering.start(api, settings(), readiness)
    try:
        assert not readiness.get()[0]
        api.existing.add(CLUSTER)  # a person applied it
        import time

        deadline = time.monotonic() + 5
        while not readiness.get()[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert readiness.get() == (True, "peering ok")
    finally:
        stop()


def test_an_unreachable_api_server_is_left_to_kopf() -> None:
    class Down:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            raise KubeError(0, "Unreachable", "connection refused")

    readiness = peering.Readiness()
    standalone, _ = peering.start(Down(), settings(), readiness)
    assert standalone is False and readiness.get()[0]


def test_a_busy_api_server_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after the peering CRD is (re)created the API server answers 429 "storage is
    (re)initializing" for a moment: that is no refusal."""
    monkeypatch.setattr(peering, "TRANSIENT_PAUSES", (0, 0, 0))
    api = FakeApi()
    busy = [KubeError(429, "Too Many Requests", "storage is (re)initializing")] * 2
    real = api.request

    def request(method: str, path: str, body: Any = None, query: Any = None) -> dict[str, Any]:
        if method == "POST" and busy:
            raise busy.pop()
        return real(method, path, body, query)

    api.request = request  # type: ignore[method-assign]
    assert peering.prepare(api, settings()).missing == []
    assert CLUSTER in api.existing
    always = FakeApi()
    always.request = lambda *a, **k: (_ for _ in ()).throw(KubeError(503, "Unavailable", "x"))  # type: ignore[method-assign]
    assert peering.crd_installed(always, peering.Peering("p")) is None
