"""Benchmark of the operator at scale on the local control plane (kwok's fake nodes).

    python -m bench.operator [--agents 100 1000] [--concurrency 16] [--rest-seconds 60] [--out DIR]
    python -m bench.operator --agents 10000 --no-raw [--out DIR]   # the operator's phases only
    python -m bench.operator --table bench/results/operator-<date>-n*.json

Prints each run's JSON (and writes it to DIR/operator-<date>-n<N>.json), then the table of all.

N AIAgents with autoscaling on (4 children each: ConfigMap, Deployment, Service, HPA), created
at the same concurrency two ways in one run: by a raw client that creates each AIAgent and
applies its rendered children itself (the same objects, the same HTTP client as the operator:
the limit), and through the operator. Then: the operator at rest, a restart after kill -9 with
nothing changed, and deleting everything. Create → Deployment latency is measured twice: over
the bulk create (busy), and for agents created one at a time into the settled operator (idle).
The operator runs as a user of its own, which the API server audits on every request
(`AUDITED_USER`), so its requests are counted by verb from the audit log; RSS and CPU come from
/proc, for the operator and for each control-plane process in each creating phase. When the
operator's children exist is seen by watches (metadata only) in this process; the raw client's
calls return when its children exist. The cluster is sized for N: a /16 service range, and the
controller-manager and the scheduler allowed N/10 requests a second (50 to 1000), so they, not
their defaults, keep up.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from aiagent_operator import api, render
from aiagent_operator.kube import Kube, KubeError, object_path
from aiagent_operator.settings import OperatorSettings
from localcluster import LocalCluster
from localcluster.controlplane import (
    AUDITED_USER,
    LARGE_SERVICE_CIDR,
    WRITE_VERBS,
    LocalControlPlane,
)
from localcluster.kubectl import KWOK_TOLERATION, OperatorProcess

CHILD_KINDS = (
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
)


def agent(i: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": f"agent-{i:05d}"},
        "spec": {
            "framework": "langchain",
            "model": {
                "name": "gpt-4o-mini",
                "apiKeySecretRef": {"name": "openai", "key": "api-key"},
            },
            "agent": {"instructions": "You are brief."},
            "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
            "dapr": {"enabled": False},
            "tolerations": [KWOK_TOLERATION],
        },
    }


def namespace(client: Kube, name: str) -> None:
    client.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    client.request(
        "POST",
        f"/api/v1/namespaces/{name}/secrets",
        {"metadata": {"name": "openai"}, "stringData": {"api-key": "sk-bench"}},
    )


def wait(what: str, done: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return round(time.monotonic() - started, 2)


def proc_usage(pid: int) -> dict[str, float]:
    """RSS now and its peak so far (MiB), and CPU seconds (user + system) of a process."""
    memory = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in memory:
            memory[name] = int(value.split()[0]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": round(memory["VmRSS"], 1),
        "peak_rss_mib": round(memory["VmHWM"], 1),
        "cpu_s": round(cpu, 2),
    }


def cluster_cpu(cp: LocalControlPlane) -> dict[str, float]:
    """CPU seconds so far of each control-plane process (etcd, kube-apiserver, ...)."""
    running = {name: p for name, p in cp.procs.procs.items() if p.poll() is None}
    return {name: proc_usage(p.pid)["cpu_s"] for name, p in running.items()}


def cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 1) for name in after}


class OperatorRequests:
    """The audited user's requests, read from the audit log in portions."""

    def __init__(self, cp: LocalControlPlane) -> None:
        self.cp = cp
        self.offset = 0
        self.last = 0.0  # when the newest one was received (epoch seconds; 0: none yet)

    def since_last_read(self) -> dict[str, Any]:
        """Since the previous call: the requests by verb, and by verb and resource."""
        events, self.offset = self.cp.audit_events(self.offset)
        mine = [e for e in events if e.get("user", {}).get("username") == AUDITED_USER]
        self.last = max([self.last, *(_epoch(e["requestReceivedTimestamp"]) for e in mine)])
        verbs = collections.Counter(e["verb"] for e in mine)
        detail = collections.Counter(f"{e['verb']} {_resource(e)}" for e in mine)
        return {
            "operator_requests_by_verb": dict(sorted(verbs.items())),
            "operator_requests": dict(detail.most_common()),
        }


def _resource(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = ref.get("subresource")
    return f"{ref.get('resource', '?')}/{sub}" if sub else str(ref.get("resource", "?"))


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def writes(verbs: dict[str, int]) -> int:
    return sum(n for verb, n in verbs.items() if verb in WRITE_VERBS)


def raw_client(client: Kube, n: int, concurrency: int) -> float:
    """The AIAgents and their rendered children, created by a plain client: the limit. (Not
    watched: its own calls say when the children exist, and watches decoded in this process
    would slow it down.)"""
    ns = "bench-raw"
    namespace(client, ns)
    settings = OperatorSettings()

    def create(i: int) -> None:
        created = client.request(
            "POST", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}", agent(i)
        )
        for child in render.render_children(api.AIAgent.from_body(created), settings):
            client.apply(render.stamped(child, render.applied_hash(child)))

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, range(n)))
    return round(time.monotonic() - started, 2)


def delete_namespace(client: Kube, ns: str, timeout: float = 600) -> float:
    client.request("DELETE", f"/api/v1/namespaces/{ns}")

    def gone() -> bool:
        try:
            client.request("GET", f"/api/v1/namespaces/{ns}")
        except KubeError as exc:
            return exc.status == 404
        return False

    return wait(f"namespace {ns} deleted", gone, timeout=timeout, interval=0.5)


def quiet(
    requests: OperatorRequests, since: float, idle: float = 5
) -> tuple[float, dict[str, Any]]:
    """Seconds from `since` to the audited user's last request, once it has been idle `idle` s,
    and the requests made meanwhile."""
    seen: dict[str, collections.Counter[str]] = {
        "operator_requests_by_verb": collections.Counter(),
        "operator_requests": collections.Counter(),
    }
    while True:
        for key, counts in requests.since_last_read().items():
            seen[key].update(counts)
        if time.time() - max(since, requests.last) > idle:
            busy = round(max(since, requests.last) - since, 2)
            return busy, {key: dict(counts.most_common()) for key, counts in seen.items()}
        time.sleep(0.5)


def resumed(operator: OperatorProcess, offset: int) -> int:
    """How many AIAgents the operator has handled since `offset` of its log (Kopf logs one line
    for each object whose handlers are done: after a restart, "Creation is processed", as this
    process has not handled the object before)."""
    with operator.log_path.open("rb") as log:
        log.seek(offset)
        text = log.read()
    return text.count(b"Creation is processed") + text.count(b"Resuming is processed")


# The children are watched as metadata alone (their labels name their agent): a fraction of the
# bytes to encode and decode.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


class Watched:
    """A namespace's AIAgents and children, from watches in threads (one per kind): when each
    child first appeared, by kind and its agent's name, and when each AIAgent was first Ready,
    on the clock of this process (so it compares with when the create of an AIAgent returned).
    Watching costs the API server little; listing every child every quarter second, as this
    bench first counted them, made the API server work for the bench while the operator ran.
    """

    def __init__(self, cp: LocalControlPlane, ns: str) -> None:
        self.first: dict[str, dict[str, float]] = {kind: {} for _, kind in CHILD_KINDS}
        self.ready: dict[str, float] = {}
        self._cp = cp
        kinds = [*CHILD_KINDS, (api.API_VERSION, api.KIND)]
        for api_version, kind in kinds:
            path = object_path(api_version, kind, ns) + "?watch=1&timeoutSeconds=3600"
            threading.Thread(target=self._watch, args=(kind, path), daemon=True).start()

    def _watch(self, kind: str, path: str) -> None:
        while True:  # a watch the server ends, or a quiet minute's read timeout: watch again
            try:
                accept = "application/json" if kind == api.KIND else METADATA_ONLY
                for event in self._cp.stream(path, accept):
                    obj, now = event["object"], time.monotonic()
                    if kind == api.KIND:
                        if (obj.get("status") or {}).get("phase") == "Ready":
                            self.ready.setdefault(obj["metadata"]["name"], now)
                        continue
                    agent = (obj["metadata"].get("labels") or {}).get(render.AGENT_LABEL)
                    if agent and event["type"] != "DELETED":  # a child: by its agent's name
                        self.first[kind].setdefault(agent, now)
            except (OSError, ValueError, KeyError):
                time.sleep(0.2)

    def every_child(self, names: set[str]) -> bool:
        return all(names <= seen.keys() for seen in self.first.values())

    def last(self, seen: dict[str, float], names: set[str]) -> float:
        """When the last of `names` was seen."""
        return max(seen[name] for name in names)


def latency(created: dict[str, float], seen: Watched) -> dict[str, float]:
    """create returned → Deployment seen, p50 and p99 (seconds)."""
    deployments = seen.first["Deployment"]
    waits = sorted(max(0.0, deployments[name] - t) for name, t in created.items())
    cuts = statistics.quantiles(waits, n=100, method="inclusive")
    return {"p50_s": round(cuts[49], 3), "p99_s": round(cuts[98], 3), "count": len(waits)}


def create_agents(client: Kube, ns: str, indices: range, concurrency: int) -> dict[str, float]:
    """Create AIAgents; when each create returned, by name."""
    created: dict[str, float] = {}

    def create(i: int) -> None:
        client.request("POST", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}", agent(i))
        created[f"agent-{i:05d}"] = time.monotonic()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(create, indices))
    return created


def idle_latency(
    client: Kube, ns: str, first: int, seen: Watched, probes: int = 20
) -> dict[str, float]:
    """Agents created one at a time into a settled operator; then deleted again, so the restart
    that follows finds exactly the N agents it had."""
    created: dict[str, float] = {}
    for i in range(first, first + probes):
        created.update(create_agents(client, ns, range(i, i + 1), 1))
        probe = f"agent-{i:05d}"
        wait("the probe's Deployment", lambda p=probe: p in seen.first["Deployment"], 60, 0.02)
        time.sleep(0.3)
    result = latency(created, seen)
    for name in created:
        client.request("DELETE", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}/{name}")

    def probes_gone() -> bool:
        names = {d["metadata"]["name"] for d in client.list("apps/v1", "Deployment", ns, {})}
        return not names & created.keys()

    wait("the probe agents deleted", probes_gone, 300, 0.5)
    return result


def run(
    n: int,
    concurrency: int,
    rest_seconds: float,
    checkpoint: Callable[[dict[str, Any]], None] = lambda result: None,
    raw: bool = True,
) -> dict[str, Any]:
    """One run at N; `checkpoint` gets the result so far after each phase (a run at 10 000 takes
    over an hour: what was measured survives one cut short)."""
    settings = {"agents": n, "concurrency": concurrency, "rest_seconds": rest_seconds}
    result: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "settings": settings}
    qps = min(1000, max(50, n // 10))
    patience = 1800 + n * 0.5  # seconds any one phase may take before the run gives up
    with (
        contextlib.ExitStack() as stack,
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            Path(tmp) / "cluster",
            real_node=False,
            kwok_nodes=max(3, n // 100 + 2),
            service_cidr=LARGE_SERVICE_CIDR,
            client_qps=qps,
        ) as cluster,
    ):
        result["cluster"] = {"service_cidr": LARGE_SERVICE_CIDR, "controllers_qps": qps}
        cp = cluster.control_plane
        admin = Kube.from_kubeconfig(cluster.kubeconfig)
        for crd in sorted((Path(__file__).parents[1] / "crds").glob("*.yaml")):
            for document in yaml.safe_load_all(crd.read_text()):
                if document:
                    admin.request(
                        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", document
                    )
        time.sleep(2)  # the CRD established
        if raw:
            cpu_before = cluster_cpu(cp)
            result["raw_client_s"] = raw_client(admin, n, concurrency)
            result["raw_client_cluster_cpu_s"] = cpu_since(cpu_before, cluster_cpu(cp))
            checkpoint(result)
            delete_namespace(admin, "bench-raw", patience)

        ns = "bench"
        namespace(admin, ns)
        seen = Watched(cp, ns)
        kubeconfig = cp.pki.kubeconfig(
            Path(tmp) / "operator.kubeconfig", cp.server, AUDITED_USER, "system:masters"
        )

        started_operators: list[OperatorProcess] = []  # stopped whatever ends the run

        def start_operator() -> OperatorProcess:
            process = OperatorProcess(
                kubeconfig, Path(tmp) / "operator.log", standalone="true", watch_namespaces=ns
            )
            started_operators.append(process)
            return process.start()

        stack.callback(lambda: [o.stop(signal.SIGKILL) for o in started_operators])

        operator = start_operator()
        assert operator.process is not None
        result["operator_started"] = proc_usage(operator.process.pid)
        requests = OperatorRequests(cp)
        requests.since_last_read()

        cpu_before = cluster_cpu(cp)
        started = time.monotonic()
        created = create_agents(admin, ns, range(n), concurrency)
        agents_created = time.monotonic() - started
        names = set(created)
        wait("every child", lambda: seen.every_child(names), patience)
        cluster_cpu_to_children = cpu_since(cpu_before, cluster_cpu(cp))
        deployments = seen.last(seen.first["Deployment"], names) - started
        children = max(seen.last(by_name, names) for by_name in seen.first.values()) - started
        wait("every AIAgent Ready", lambda: names <= seen.ready.keys(), patience, 1)
        ready = seen.last(seen.ready, names) - started
        result["create"] = {  # seconds from the first create
            "agents_created_s": round(agents_created, 2),
            "all_deployments_s": round(deployments, 2),
            "all_children_s": round(children, 2),
            "all_ready_s": round(ready, 2),
            "create_to_deployment_busy": latency(created, seen),
            "cluster_cpu_s_to_children": cluster_cpu_to_children,
            **requests.since_last_read(),  # until all are Ready
            "operator": proc_usage(operator.process.pid),
        }
        if raw:
            result["ratio_raw_over_operator"] = round(
                result["raw_client_s"] / result["create"]["all_children_s"], 2
            )
        checkpoint(result)

        time.sleep(5)
        requests.since_last_read()
        time.sleep(rest_seconds)
        at_rest = requests.since_last_read()
        result["at_rest"] = {
            "seconds": rest_seconds,
            **at_rest,
            "writes": writes(at_rest["operator_requests_by_verb"]),
        }
        result["create_to_deployment_idle"] = idle_latency(admin, ns, n, seen)
        time.sleep(5)

        result["operator_before_restart"] = proc_usage(operator.process.pid)
        operator.stop(signal.SIGKILL)
        requests.since_last_read()
        since = time.time()
        log_offset = operator.log_path.stat().st_size
        operator = start_operator()
        assert operator.process is not None
        # Kopf fills its indices from full listings before the first resume handler runs, which
        # at thousands of agents takes longer than `quiet`'s idle window: wait for every resume.
        wait(
            "every AIAgent resumed",
            lambda: resumed(operator, log_offset) >= n,
            timeout=patience,
            interval=0.5,
        )
        busy, restart = quiet(requests, since)
        result["restart"] = {
            **restart,
            "writes": writes(restart["operator_requests_by_verb"]),
            "busy_s": busy,
            "operator": proc_usage(operator.process.pid),
        }

        checkpoint(result)
        seconds = delete_namespace(admin, ns, patience)
        result["delete"] = {"namespace_gone_s": seconds, **requests.since_last_read()}
        result["operator_end"] = proc_usage(operator.process.pid)
        operator.stop()
    return result


def table(results: list[dict[str, Any]]) -> str:
    """The README's table: one column per N."""
    rows: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("raw client: all children (s)", lambda r: r["raw_client_s"]),
        ("operator: all Deployments (s)", lambda r: r["create"]["all_deployments_s"]),
        ("operator: all children (s)", lambda r: r["create"]["all_children_s"]),
        ("ratio raw / operator (target ≥ 0.8)", lambda r: r["ratio_raw_over_operator"]),
        ("control plane CPU until all children, raw / operator (s)", _control_plane_cpu),
        ("all AIAgents Ready (s)", lambda r: r["create"]["all_ready_s"]),
        ("operator requests per agent, creating", lambda r: _per_agent(r, r["create"])),
        (
            "create → Deployment p50 / p99, busy (s)",
            lambda r: _p(r["create"]["create_to_deployment_busy"]),
        ),
        ("create → Deployment p50 / p99, idle (s)", lambda r: _p(r["create_to_deployment_idle"])),
        ("writes at rest, 60 s", lambda r: r["at_rest"]["writes"]),
        ("restart: writes", lambda r: r["restart"]["writes"]),
        ("restart: reads", lambda r: sum(r["restart"]["operator_requests_by_verb"].values())),
        ("restart: busy (s)", lambda r: r["restart"]["busy_s"]),
        ("restart: CPU (s)", lambda r: r["restart"]["operator"]["cpu_s"]),
        ("delete all: namespace gone (s)", lambda r: r["delete"]["namespace_gone_s"]),
        ("operator RSS when all are Ready (MiB)", lambda r: r["create"]["operator"]["rss_mib"]),
        ("operator RSS, peak (MiB)", lambda r: _rss(r)),
        ("operator RSS after the restart (MiB)", lambda r: r["restart"]["operator"]["rss_mib"]),
        ("operator CPU, whole run, both processes (s)", lambda r: _cpu(r)),
    ]
    lines = [
        "| figure | " + " | ".join(f"N = {r['settings']['agents']}" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for name, figure in rows:
        lines.append(f"| {name} | " + " | ".join(_shown(figure, r) for r in results) + " |")
    return "\n".join(lines)


def _shown(figure: Callable[[dict[str, Any]], Any], result: dict[str, Any]) -> str:
    """The figure, or "–" where the run was cut short before measuring it (a .partial.json)."""
    try:
        return str(figure(result))
    except (KeyError, ValueError):
        return "–"


def _control_plane_cpu(r: dict[str, Any]) -> str:
    """etcd, API server, controllers, scheduler and kwok together, in each creating phase."""
    raw, operator = r["raw_client_cluster_cpu_s"], r["create"]["cluster_cpu_s_to_children"]
    return f"{sum(raw.values()):.0f} / {sum(operator.values()):.0f}"


def _per_agent(r: dict[str, Any], phase: dict[str, Any]) -> str:
    verbs = phase["operator_requests_by_verb"]
    n = r["settings"]["agents"]
    return ", ".join(f"{v} {c / n:.1f}" for v, c in verbs.items())


def _p(lat: dict[str, float]) -> str:
    return f"{lat['p50_s']} / {lat['p99_s']}"


def _cpu(r: dict[str, Any]) -> float:
    return round(r["operator_before_restart"]["cpu_s"] + r["operator_end"]["cpu_s"], 2)


def _rss(r: dict[str, Any]) -> float:
    """The higher peak (VmHWM) of the two operator processes: the first, and the restarted."""
    phases = [r[k] for k in ("operator_before_restart", "restart", "operator_end") if k in r]
    phases.append(r["create"])  # a run cut short after creating
    return max(p.get("operator", p)["peak_rss_mib"] for p in phases)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the operator at scale.")
    parser.add_argument("--agents", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rest-seconds", type=float, default=60)
    parser.add_argument(
        "--out", type=Path, default=None, help="write each run's JSON here (operator-<date>-n<N>)"
    )
    parser.add_argument(
        "--no-raw",
        action="store_true",
        help="the operator only (at 10 000 the raw client's phase "
        "and its deletion alone take over half an hour here)",
    )
    parser.add_argument(
        "--table", type=Path, nargs="+", help="print the table of these JSON results, run nothing"
    )
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(path.read_text()) for path in args.table]))
        return
    results = []
    for n in args.agents:
        partial = (
            args.out / f"operator-{datetime.now():%Y-%m-%d}-n{n}.partial.json" if args.out else None
        )

        def checkpoint(result: dict[str, Any], partial: Path | None = partial) -> None:
            if partial:
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(result, indent=2) + "\n")

        result = run(n, args.concurrency, args.rest_seconds, checkpoint, raw=not args.no_raw)
        results.append(result)
        text = json.dumps(result, indent=2)
        print(text, flush=True)
        if args.out and partial:
            (args.out / f"operator-{datetime.now():%Y-%m-%d}-n{n}.json").write_text(text + "\n")
            partial.unlink(missing_ok=True)
    print(table(results))


if __name__ == "__main__":
    main()
