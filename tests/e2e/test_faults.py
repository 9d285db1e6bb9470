"""Control-plane faults with agents under way: the API server stopped for 30 s, etcd stopped, the
API server throttling us (429s), the operator killed with SIGKILL among 200 new agents, a watch
stream cut with its history compacted away (410 Gone). After each, every AIAgent converges to its
children and status, with no duplicate or orphan, and the operator never exits on its own.

These break their cluster on purpose, so they run on a control plane of their own (torn down
even on failure), not the session's. The operator runs as a ServiceAccount, as in a cluster: the
admin user (system:masters) would be exempt from the API server's throttling. Per fault the time
to converge and the operator's writes are printed and written as JSON (`write_results`: to
$AIAGENT_BENCH_OUT, e.g. bench/results, when set); timings are reported, never asserted.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiagent_operator.kube import USER_AGENT
from aiagent_operator.render import AGENT_LABEL, FIELD_MANAGER, MANAGED_BY_LABEL
from localcluster import LocalCluster
from localcluster.controlplane import LocalControlPlane
from localcluster.kubectl import REPO, Kubectl, OperatorProcess, load_example, wait_for

from .conftest import create_api_key_secrets, create_namespace
from .test_operator_metrics import scrape, total

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("AIAGENT_E2E_KUBECONFIG") or os.environ.get("AIAGENT_E2E_KIND")),
    reason="stops and restarts control-plane components: the local control plane only",
)

RESULTS: dict[str, dict[str, Any]] = {}
THROTTLED = [
    # The legacy in-flight limit answers 429 at once past the limit (priority and fairness would
    # queue first); the limits are total, for every client that is not system:masters.
    "--enable-priority-and-fairness=false",
    "--max-requests-inflight=1",
    "--max-mutating-requests-inflight=1",
]
UNTHROTTLED = [
    "--enable-priority-and-fairness=true",
    "--max-requests-inflight=400",
    "--max-mutating-requests-inflight=200",
]


class Faulty:
    """The fault suite's cluster: its control plane, kubectl, and the operator's kubeconfig."""

    def __init__(self, cluster: LocalCluster, operator_kubeconfig: Path) -> None:
        self.cluster = cluster
        self.control_plane: LocalControlPlane = cluster.control_plane
        self.kubectl = Kubectl(cluster.kubeconfig)
        self.operator_kubeconfig = operator_kubeconfig


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    workdir = tmp_path_factory.mktemp("faults-controlplane")
    with LocalCluster(workdir, real_node=False, client_qps=50) as cluster:
        kubectl = Kubectl(cluster.kubeconfig)
        kubectl.run("apply", "-f", str(REPO / "crds"))
        kubectl.run(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/aiagents.aiagents.dev"
        )
        kubectl.run("create", "serviceaccount", "operator", namespace="default")
        kubectl.run(
            "create",
            "clusterrolebinding",
            "faults-operator",
            "--clusterrole=cluster-admin",
            "--serviceaccount=default:operator",
        )
        sa = cluster.control_plane.kubeconfig_for_service_account("default", "operator")
        yield Faulty(cluster, sa)
    write_results(workdir)


@pytest.fixture(scope="module")
def operator(faulty: Faulty, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator through every fault but the kill: it must outlive them all."""
    log = tmp_path_factory.mktemp("faults-operator") / "operator.log"
    process = OperatorProcess(
        faulty.operator_kubeconfig, log, standalone="true", watch_namespaces="faults-*"
    ).start()
    yield process
    process.stop()


@pytest.fixture
def ns(faulty: Faulty) -> Iterator[str]:
    name = create_namespace(faulty.kubectl, "faults")
    create_api_key_secrets(faulty.kubectl, name)
    yield name
    faulty.kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def agent(name: str, replicas: int = 1) -> dict[str, Any]:
    manifest = load_example("support-bot.yaml", dapr={"enabled": False}, replicas=replicas)
    manifest["metadata"]["name"] = name
    return manifest


def create_agents(kubectl: Kubectl, namespace: str, names: list[str]) -> None:
    """All at once, in one request stream (kubectl apply of a List)."""
    items = [agent(name) for name in names]
    kubectl.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}), namespace)


def problems(kubectl: Kubectl, namespace: str, *, want: str = "ready") -> list[str]:
    """What keeps the namespace from being converged (empty: converged): a child missing,
    duplicated or orphaned, and by `want`: "ready", an agent not Ready at its generation;
    "mirrored", an agent whose status does not say what its Deployment's does (at its
    generation); "children", nothing more."""
    agents = {a["metadata"]["name"]: a for a in kubectl.list("aiagents", namespace)}
    uids = {a["metadata"]["uid"]: name for name, a in agents.items()}
    deployments = {d["metadata"]["name"]: d for d in kubectl.list("deployments", namespace)}
    found: list[str] = []
    for name, a in agents.items() if want != "children" else ():
        status = a.get("status") or {}
        current = status.get("observedGeneration") == a["metadata"]["generation"]
        if want == "ready":
            replicas = a["spec"].get("replicas", 1)
            wanted = status.get("phase") == "Ready" and status.get("readyReplicas") == replicas
        else:
            theirs = (deployments.get(name) or {}).get("status") or {}
            wanted = (status.get("readyReplicas") or 0) == (theirs.get("readyReplicas") or 0)
        if not (current and wanted):
            found.append(f"{name}: {status.get('phase')} {status.get('readyReplicas')}")
    wanted = {"deployments": "{}", "services": "{}", "configmaps": "{}-agent"}
    for kind, pattern in wanted.items():
        children = kubectl.list(kind, namespace, f"{MANAGED_BY_LABEL}={FIELD_MANAGER}")
        owners: Counter[str] = Counter()
        for child in children:
            refs = [r for r in child["metadata"].get("ownerReferences") or [] if r["controller"]]
            owner = uids.get(refs[0]["uid"]) if refs else None
            if owner is None or child["metadata"]["name"] != pattern.format(owner):
                found.append(f"orphan {kind}/{child['metadata']['name']}")
            else:
                owners[owner] += 1
        found += [f"{name}: {owners[name]} {kind}" for name in agents if owners[name] != 1]
    return found


def wait_converged(
    kubectl: Kubectl, namespace: str, timeout: float = 120, *, want: str = "ready"
) -> float:
    """Seconds until converged (`problems` empty). `want="children"`: until every agent has its
    children, the operator's part (Ready also waits for the controller-manager and kwok)."""
    started = time.monotonic()
    last: list[str] = []

    def converged() -> bool:
        nonlocal last
        last = problems(kubectl, namespace, want=want)
        return not last

    try:
        wait_for(f"{namespace} converged", converged, timeout=timeout, interval=1)
    except AssertionError:
        seen = kubectl.run("get", "aiagents,deployments,replicasets,pods", namespace=namespace)
        raise AssertionError(
            f"{namespace} not converged after {timeout}s: {last[:20]}\n{seen.stdout}"
        ) from None
    return time.monotonic() - started


def operator_requests(audit: LocalControlPlane, offset: int, namespace: str) -> Counter[str]:
    """The operator's write requests in `namespace` since `offset`, as "verb resource" with
    "429 " before those the API server refused for throttling."""
    events, _ = audit.audit_events(offset)
    counted: Counter[str] = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        if ref.get("namespace") != namespace:
            continue
        if not e.get("userAgent", "").startswith((USER_AGENT, "kopf/")):
            continue
        what = f"{e['verb']} {ref.get('resource')}" + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        code = (e.get("responseStatus") or {}).get("code", 200)
        counted[f"{code} {what}" if code == 429 else what] += 1
    return counted


def record(fault: str, converge_s: float, writes: Counter[str], **more: Any) -> None:
    ok = {k: v for k, v in writes.items() if not k.startswith("429 ")}
    RESULTS[fault] = {
        "converge_s": round(converge_s, 1),
        "operator_writes": sum(ok.values()),
        "refused_429": sum(v for k, v in writes.items() if k.startswith("429 ")),
        "writes_by_kind": dict(sorted(ok.items())),
        **more,
    }
    print(f"\n[faults] {fault}: {json.dumps(RESULTS[fault])}")


def write_results(workdir: Path) -> None:
    """The figures as JSON: in $AIAGENT_BENCH_OUT (e.g. bench/results) when set, else beside the
    suite's cluster (a test run leaves the repository as it was)."""
    if not RESULTS:
        return
    out = Path(os.environ.get("AIAGENT_BENCH_OUT") or workdir)
    path = out / f"faults-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(RESULTS, indent=2) + "\n")
    print(f"\n[faults] written to {path}")


def metric(process: OperatorProcess, name: str, **labels: str) -> float:
    """The sum of an operator metric's samples that carry `labels`."""
    return total(scrape(f"http://127.0.0.1:{process.metrics_port}"), name, **labels)


def liveness(process: OperatorProcess) -> int | str:
    """What the operator's /healthz answers (its status code), or why it does not."""
    if process.process is None or process.process.poll() is not None:
        raise AssertionError(f"the operator exited on its own:\n{process.log_tail()}")
    url = f"http://127.0.0.1:{process.liveness_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"no answer: {exc}"


def under_way(kubectl: Kubectl, namespace: str, some: int) -> None:
    """Wait until the operator has made the ConfigMaps of `some` agents: mid-creation."""
    selector = f"{MANAGED_BY_LABEL}={FIELD_MANAGER}"
    wait_for(
        f"{some} agents under way",
        lambda: len(kubectl.list("configmaps", namespace, selector)) >= some,
        timeout=60,
        interval=0.2,
    )


def restart_the_other_clients(cp: LocalControlPlane) -> None:
    """After an outage, start afresh the clients that would otherwise make the time measured
    theirs, not the operator's: kwok, the fake kubelet, drops a pod's stage (Running, Ready) it
    could not write and never tries it again (a kubelet would resync), and the
    controller-manager's work queues back off exponentially per object (up to 1000 s), so a
    ReplicaSet's status that failed during the outage may wait minutes for its next try. They
    start once the API server takes writes again (etcd reconnected), or their first writes
    would fail and back off the same way."""
    wait_for("the API server taking writes", lambda: writable(cp), timeout=60, interval=0.5)
    cp.restart_component("kube-controller-manager")
    cp.restart_component("kwok")


def writable(cp: LocalControlPlane) -> bool:
    """Whether a ConfigMap can be created and deleted in `default` now."""
    name = f"faults-probe-{time.monotonic_ns()}"
    path = "/api/v1/namespaces/default/configmaps"
    try:
        cp.request(
            "POST", path, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        )
        cp.request("DELETE", f"{path}/{name}")
    except (urllib.error.URLError, OSError):
        return False
    return True


def outage(
    faulty: Faulty,
    operator: OperatorProcess,
    ns: str,
    component: str,
    seconds: float,
    fault: str,
) -> None:
    kubectl, cp = faulty.kubectl, faulty.control_plane
    names = [f"agent-{i}" for i in range(10)]
    _, offset = cp.audit_events()
    create_agents(kubectl, ns, names)
    under_way(kubectl, ns, 3)
    cp.stop_component(component)
    down_at = time.monotonic()
    answers = set()
    try:
        while time.monotonic() - down_at < seconds:
            answers.add(liveness(operator))
            time.sleep(2)
    finally:
        cp.start_component(component)
        restart_the_other_clients(cp)
    up_at = time.monotonic()
    children = wait_converged(kubectl, ns, want="children")
    # The operator's part: each status says what its Deployment says. Whether the Deployments
    # become Ready is the controller-manager's and kwok's, which an outage leaves behind at
    # times (ReplicaSets whose status stays stale for minutes): recorded, not required.
    converge = children + wait_converged(kubectl, ns, want="mirrored")
    try:
        ready: float | None = converge + wait_converged(kubectl, ns, timeout=60)
    except AssertionError:
        ready = None
    assert liveness(operator) == 200
    record(
        fault,
        converge,
        operator_requests(cp, offset, ns),
        children_s=round(children, 1),
        all_ready_s=None if ready is None else round(ready, 1),
        down_s=round(up_at - down_at, 1),
        liveness_while_down=sorted(map(str, answers)),
    )


def test_apiserver_stopped_for_30s_with_agents_under_way(
    faulty: Faulty, operator: OperatorProcess, ns: str
) -> None:
    outage(faulty, operator, ns, "kube-apiserver", 30, "apiserver stopped 30s")


def test_etcd_stopped_and_started_with_agents_under_way(
    faulty: Faulty, operator: OperatorProcess, ns: str
) -> None:
    outage(faulty, operator, ns, "etcd", 10, "etcd stopped 10s")


def test_throttled_by_the_apiserver(faulty: Faulty, operator: OperatorProcess, ns: str) -> None:
    kubectl, cp = faulty.kubectl, faulty.control_plane
    names = [f"agent-{i}" for i in range(10)]  # one request at a time: 10 are plenty to queue
    refused_before = metric(operator, "aiagent_operator_api_requests_total", code="429")
    cp.restart_component("kube-apiserver", THROTTLED)
    # The controller-manager acts as system:masters meanwhile (like kubectl, kwok and the
    # scheduler), so the operator alone is throttled: starved too, it made no pods in minutes.
    cp.restart_component("kube-controller-manager", ["--use-service-account-credentials=false"])
    try:
        _, offset = cp.audit_events()
        started = time.monotonic()
        create_agents(kubectl, ns, names)  # kubectl is system:masters: never throttled
        children = wait_converged(kubectl, ns, timeout=150, want="children")
        converge = children + wait_converged(kubectl, ns, timeout=150)
        refused = metric(operator, "aiagent_operator_api_requests_total", code="429")
        record(
            "apiserver throttling (429)",
            converge,
            operator_requests(cp, offset, ns),
            children_s=round(children, 1),
            since_create_s=round(time.monotonic() - started, 1),
            operator_saw_429=int(refused - refused_before),
        )
    finally:
        cp.restart_component("kube-apiserver", UNTHROTTLED)
        cp.restart_component("kube-controller-manager", ["--use-service-account-credentials=true"])
    assert refused > refused_before, "no 429 reached the operator: the test throttled nothing"
    assert liveness(operator) == 200


def test_a_watch_stream_cut_and_its_history_compacted_is_relisted(
    faulty: Faulty, operator: OperatorProcess, ns: str
) -> None:
    """The operator is frozen (SIGSTOP) while the API server restarts (its watch streams end),
    things change, and etcd compacts that history away: its watches resume from a version the
    server no longer has (410 Gone), and it must list afresh and catch up."""
    kubectl, cp = faulty.kubectl, faulty.control_plane
    create_agents(kubectl, ns, [f"agent-{i}" for i in range(5)])
    wait_converged(kubectl, ns)
    lists_before = metric(
        operator, "aiagent_operator_api_requests_total", client="kopf", verb="list"
    )
    assert operator.process is not None
    _, offset = cp.audit_events()
    os.kill(operator.process.pid, signal.SIGSTOP)
    try:
        cp.restart_component("kube-apiserver")
        restart_the_other_clients(cp)
        kubectl.run("delete", "deployment", "agent-0", namespace=ns)  # drift: a child deleted
        kubectl.run("delete", "aiagent", "agent-1", namespace=ns)
        kubectl.run("scale", "aiagent", "agent-2", "--replicas=2", namespace=ns)
        create_agents(kubectl, ns, ["agent-new"])
        cp.etcd_compact()
    finally:
        os.kill(operator.process.pid, signal.SIGCONT)
    started = time.monotonic()
    converge = wait_converged(kubectl, ns)
    lists_after = metric(
        operator, "aiagent_operator_api_requests_total", client="kopf", verb="list"
    )
    assert lists_after > lists_before, "the operator never listed again"
    assert kubectl.get("aiagent", "agent-1", ns) is None
    assert liveness(operator) == 200
    record(
        "watch cut, history compacted (410)",
        converge,
        operator_requests(cp, offset, ns),
        since_resume_s=round(time.monotonic() - started, 1),
        relists=int(lists_after - lists_before),
    )


def test_operator_killed_while_200_agents_are_created(faulty: Faulty, tmp_path: Path) -> None:
    kubectl, cp = faulty.kubectl, faulty.control_plane
    namespace = create_namespace(kubectl, "kill")  # not the module operator's: its own
    create_api_key_secrets(kubectl, namespace)
    settings = {"standalone": "true", "watch_namespaces": namespace}
    first = OperatorProcess(faulty.operator_kubeconfig, tmp_path / "first.log", **settings)
    second = OperatorProcess(faulty.operator_kubeconfig, tmp_path / "second.log", **settings)
    try:
        first.start()
        _, offset = cp.audit_events()
        create_agents(kubectl, namespace, [f"agent-{i:03}" for i in range(200)])
        under_way(kubectl, namespace, 60)
        first.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        second.start()
        children = wait_converged(kubectl, namespace, timeout=180, want="children")
        converge = children + wait_converged(kubectl, namespace, timeout=180)
        record(
            "operator SIGKILLed among 200 new agents",
            converge,
            operator_requests(cp, offset, namespace),
            children_s=round(children, 1),
            since_kill_s=round(time.monotonic() - killed_at, 1),
        )
        assert liveness(second) == 200
        pods = kubectl.list("pods", namespace, AGENT_LABEL)
        assert len(pods) == 200, f"{len(pods)} pods for 200 agents of one replica each"
    finally:
        first.stop(signal.SIGKILL)
        second.stop()
        kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)
