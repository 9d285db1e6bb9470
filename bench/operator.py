"""Benchmark of the operator at scale on the local control plane (kwok's fake nodes). Prints JSON.

    python -m bench.operator [--agents 100] [--concurrency 16] [--rest-seconds 60]

N AIAgents with autoscaling on (4 children each: ConfigMap, Deployment, Service, HPA), created
at the same concurrency two ways in one run: by a raw client that creates each AIAgent and
applies its rendered children itself (the same objects, the same HTTP client as the operator:
the limit), and through the operator. Then: the operator at rest, a restart after kill -9 with
nothing changed, and deleting everything. The operator runs as a user of its own, which the
API server audits on every request (`AUDITED_USER`), so its requests are counted by verb from
the audit log; RSS and CPU come from /proc.

Limits of the launcher for now: its service range holds 253 Services, so N <= 250 (the raw run's
namespace is deleted before the operator's run), and kube-controller-manager's default 20 QPS,
not the operator, sets when the AIAgents are Ready.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client import Configuration

from aiagent_operator import api, render
from aiagent_operator.kube import Kube, KubeError
from aiagent_operator.settings import OperatorSettings
from localcluster import LocalCluster
from localcluster.controlplane import AUDITED_USER, WRITE_VERBS, LocalControlPlane
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


def kube(kubeconfig: Path) -> Kube:
    configuration = Configuration()
    kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    return Kube(configuration)


def namespace(client: Kube, name: str) -> None:
    client.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    client.request(
        "POST",
        f"/api/v1/namespaces/{name}/secrets",
        {"metadata": {"name": "openai"}, "stringData": {"api-key": "sk-bench"}},
    )


def count_children(client: Kube, ns: str) -> dict[str, int]:
    counts = {}
    for api_version, kind in CHILD_KINDS:
        items = client.list(api_version, kind, ns, {render.MANAGED_BY_LABEL: render.FIELD_MANAGER})
        counts[kind] = len(items)
    return counts


def ready_agents(client: Kube, ns: str) -> int:
    items = client.request("GET", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}")["items"]
    return sum(1 for a in items if (a.get("status") or {}).get("phase") == "Ready")


def wait(what: str, done: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return round(time.monotonic() - started, 2)


def proc_usage(pid: int) -> dict[str, float]:
    """RSS (MiB) and CPU seconds (user + system) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {"rss_mib": round(rss, 1), "cpu_s": round(cpu, 2)}


def requests_by_verb(cp: LocalControlPlane, offset: int) -> tuple[dict[str, int], int, float]:
    """The audited user's requests since `offset` by verb, the new offset, and the time of the
    last one (epoch seconds; 0 if none)."""
    events, offset = cp.audit_events(offset)
    mine = [e for e in events if e.get("user", {}).get("username") == AUDITED_USER]
    verbs = collections.Counter(e["verb"] for e in mine)
    last = max((_epoch(e["requestReceivedTimestamp"]) for e in mine), default=0.0)
    return dict(sorted(verbs.items())), offset, last


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def writes(verbs: dict[str, int]) -> int:
    return sum(n for verb, n in verbs.items() if verb in WRITE_VERBS)


def raw_client(client: Kube, n: int, concurrency: int) -> float:
    """The AIAgents and their rendered children, created by a plain client: the limit."""
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
    seconds = round(time.monotonic() - started, 2)
    delete_namespace(client, ns)
    return seconds


def delete_namespace(client: Kube, ns: str) -> float:
    client.request("DELETE", f"/api/v1/namespaces/{ns}")

    def gone() -> bool:
        try:
            client.request("GET", f"/api/v1/namespaces/{ns}")
        except KubeError as exc:
            return exc.status == 404
        return False

    return wait(f"namespace {ns} deleted", gone, timeout=600, interval=0.5)


def quiet(cp: LocalControlPlane, offset: int, since: float, idle: float = 5) -> tuple[float, int]:
    """Seconds from `since` to the audited user's last request, once it has been idle `idle` s."""
    last, offset_now = since, offset
    while True:
        _, offset_now, newest = requests_by_verb(cp, offset_now)
        last = max(last, newest)
        if time.time() - last > idle:
            return round(last - since, 2), offset_now
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the operator at scale.")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rest-seconds", type=float, default=60)
    args = parser.parse_args()
    if args.agents > 250:
        raise SystemExit("the launcher's service range holds 253 Services: --agents 250 at most")
    n = args.agents
    result: dict[str, Any] = {"machine": {"cores": os.cpu_count()}, "settings": vars(args)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            Path(tmp) / "cluster", real_node=False, kwok_nodes=max(3, n // 100 + 1)
        ) as cluster,
    ):
        cp = cluster.control_plane
        admin = kube(cluster.kubeconfig)
        for crd in sorted((Path(__file__).parents[1] / "crds").glob("*.yaml")):
            for document in yaml.safe_load_all(crd.read_text()):
                if document:
                    admin.request(
                        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", document
                    )
        time.sleep(2)  # the CRD established
        result["raw_client_s"] = raw_client(admin, n, args.concurrency)

        ns = "bench"
        namespace(admin, ns)
        kubeconfig = cp.pki.kubeconfig(
            Path(tmp) / "operator.kubeconfig", cp.server, AUDITED_USER, "system:masters"
        )
        operator = OperatorProcess(
            kubeconfig, Path(tmp) / "operator.log", standalone="true", watch_namespaces=ns
        ).start()
        assert operator.process is not None
        result["operator_started"] = proc_usage(operator.process.pid)
        _, offset, _ = requests_by_verb(cp, 0)

        started = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(
                pool.map(
                    lambda i: admin.request(
                        "POST", f"/apis/{api.API_VERSION}/namespaces/{ns}/{api.PLURAL}", agent(i)
                    ),
                    range(n),
                )
            )
        created = time.monotonic() - started
        wait("every Deployment", lambda: count_children(admin, ns)["Deployment"] >= n, 900)
        deployments = time.monotonic() - started
        wait("every child", lambda: min(count_children(admin, ns).values()) >= n, 900)
        children = time.monotonic() - started
        wait("every AIAgent Ready", lambda: ready_agents(admin, ns) >= n, 1800, 1)
        ready = time.monotonic() - started
        verbs, offset, _ = requests_by_verb(cp, offset)
        result["create"] = {  # seconds from the first create
            "agents_created_s": round(created, 2),
            "all_deployments_s": round(deployments, 2),
            "all_children_s": round(children, 2),
            "all_ready_s": round(ready, 2),
            "operator_requests_by_verb": verbs,
            "operator": proc_usage(operator.process.pid),
        }
        result["ratio_raw_over_operator"] = round(
            result["raw_client_s"] / result["create"]["all_children_s"], 2
        )

        time.sleep(5)
        _, offset, _ = requests_by_verb(cp, offset)
        time.sleep(args.rest_seconds)
        verbs, offset, _ = requests_by_verb(cp, offset)
        result["at_rest"] = {"seconds": args.rest_seconds, "operator_requests_by_verb": verbs}

        operator.stop(signal.SIGKILL)
        _, offset, _ = requests_by_verb(cp, offset)
        since = time.time()
        operator = OperatorProcess(
            kubeconfig, Path(tmp) / "operator.log", standalone="true", watch_namespaces=ns
        ).start()
        assert operator.process is not None
        busy, _ = quiet(cp, offset, since)
        verbs, offset, _ = requests_by_verb(cp, offset)
        result["restart"] = {
            "operator_requests_by_verb": verbs,
            "writes": writes(verbs),
            "busy_s": busy,
            "operator": proc_usage(operator.process.pid),
        }

        seconds = delete_namespace(admin, ns)
        verbs, offset, _ = requests_by_verb(cp, offset)
        result["delete"] = {"namespace_gone_s": seconds, "operator_requests_by_verb": verbs}
        result["operator_end"] = proc_usage(operator.process.pid)
        operator.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
