"""Load and soak of one agent on the real node: N clients stream `/v1/chat/completions` through
the agent's Service, back to back, for D seconds, while the runtime container's RSS is sampled
from the host. Writes bench/results/soak-<date>.json.

    python -m bench.soak [--clients 100] [--seconds 300] [--warmup 60] [--out bench/results]
    python -m bench.soak --url http://CLUSTER-IP [--pid HOST-PID]   # an agent already running

Without --url it starts the local cluster with the real node, a model server on the node's
address, the operator, and one LangChain AIAgent (one replica, `spec.limits.concurrentRequests`
below the clients, so some requests are refused with 429 and retried after Retry-After).
RSS is the sum of VmRSS (/proc/PID/status) over the processes of the agent container's memory
cgroup, its host PID found through containerd; the cgroup's working set (usage minus inactive
file pages, what the kubelet reports) is recorded beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "soak"
AGENT = "soak-agent"
CONCURRENT_LIMIT = 80  # below the 100 clients: the limit answers some of them 429
STABLE_WINDOW = 5.0  # seconds of RSS samples whose median stands for "at warm-up end" / "at end"
RSS_METHOD = (
    "sum of VmRSS (/proc/PID/status) over the processes in the agent container's memory cgroup "
    "(host PID from containerd's task list); cgroup working set = memory usage minus "
    "inactive file pages"
)


# -- the agent under load ------------------------------------------------------------------------


def agent_manifest(
    model_base_url: str, concurrent_limit: int | None = CONCURRENT_LIMIT, name: str = AGENT
) -> dict[str, Any]:
    """One LangChain replica without Dapr: the runtime container is the only thing serving."""
    spec: dict[str, Any] = {
        "framework": "langchain",
        "model": {
            "provider": "openai",
            "name": "gpt-4o-mini",
            "baseURL": model_base_url,
            "apiKeySecretRef": {"name": "openai", "key": "api-key"},
        },
        "agent": {"instructions": "You answer questions about our product. Be brief."},
        "replicas": 1,
    }
    if concurrent_limit:
        spec["limits"] = {"concurrentRequests": concurrent_limit}
    return {
        "apiVersion": "aiagents.dev/v1alpha1",
        "kind": "AIAgent",
        "metadata": {"name": name},
        "spec": spec,
    }


def container_pid(ctr_tasks: str, container_id: str) -> int:
    """The host PID of a container, from `ctr tasks list` (TASK PID STATUS)."""
    for line in ctr_tasks.splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == container_id:
            return int(parts[1])
    raise LookupError(f"container {container_id} not among containerd's tasks")


class ContainerMemory:
    """The memory of the container whose process is ``pid`` (a host PID), read from the host."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cgroup = memory_cgroup(pid)

    def sample(self) -> dict[str, float]:
        pids = [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
        rss = sum(vm_rss_kib(p) for p in pids) / 1024
        return {"rss_mib": round(rss, 1), "working_set_mib": round(working_set_mib(self.cgroup), 1)}


def memory_cgroup(pid: int) -> Path:
    """The memory cgroup directory of ``pid``: cgroup v1's memory hierarchy, or v2's one."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/")
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / path.lstrip("/")
    raise LookupError(f"no memory cgroup for PID {pid}")


def vm_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:  # exited between the listing and the read
        pass
    return 0


def working_set_mib(cgroup: Path) -> float:
    v1 = (cgroup / "memory.usage_in_bytes").exists()
    usage = int((cgroup / ("memory.usage_in_bytes" if v1 else "memory.current")).read_text())
    lines = (cgroup / "memory.stat").read_text().splitlines()
    stat = {k: int(v) for k, v in (line.split() for line in lines)}
    inactive = stat.get("total_inactive_file" if v1 else "inactive_file", 0)
    return max(0, usage - inactive) / 2**20


# -- the clients ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request: its status (0: no response), when it started (s into the run), time to the
    first event and to the end, whether its stream ended cleanly, and what went wrong."""

    status: int
    started: float
    ttft: float | None = None
    total: float | None = None
    clean: bool = False
    error: str | None = None
    retry_after: float = 0.0


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[dict[str, float]] = field(default_factory=list)  # {"t", "rss_mib", ...}
    memory_errors: list[str] = field(default_factory=list)


async def stream_once(client: httpx.AsyncClient, url: str, question: str, t0: float) -> Outcome:
    """One streaming chat completion; clean means a 200 event stream whose answer carries the
    question (the model echoes it: no stream got another's answer), no error event, and
    `data: [DONE]` as its last event."""
    began = time.perf_counter()
    outcome = Outcome(status=0, started=began - t0)
    body = {"model": "soak", "stream": True, "messages": [{"role": "user", "content": question}]}
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            outcome.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                with contextlib.suppress(ValueError):
                    outcome.retry_after = float(response.headers.get("retry-after", "0"))
                if response.status_code != 429:
                    outcome.error = f"status {response.status_code}: {response.text[:200]}"
                return outcome
            text, done, after_done = [], False, False
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if outcome.ttft is None:
                    outcome.ttft = time.perf_counter() - began
                data = line.removeprefix("data: ")
                if done:
                    after_done = True
                elif data == "[DONE]":
                    done = True
                else:
                    event = json.loads(data)
                    if "error" in event:
                        outcome.error = f"error event: {json.dumps(event)[:200]}"
                    for choice in event.get("choices") or []:
                        text.append(choice.get("delta", {}).get("content") or "")
            outcome.total = time.perf_counter() - began
            answer = "".join(text)
            if outcome.error is None and not done:
                outcome.error = "stream ended without [DONE]"
            elif outcome.error is None and after_done:
                outcome.error = "events after [DONE]"
            elif outcome.error is None and question not in answer:
                outcome.error = f"answer without the question: {answer[:200]!r}"
            outcome.clean = outcome.error is None
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        outcome.error = f"{type(e).__name__}: {e}"[:300]
    return outcome


async def client_loop(url: str, n: int, deadline: float, t0: float, run: Run) -> None:
    """One client on a connection of its own, asking back to back until the deadline; after a
    429 it waits the Retry-After it was given (at most until the deadline)."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        i = 0
        while time.perf_counter() < deadline:
            outcome = await stream_once(client, url, f"soak client {n} question {i}", t0)
            run.outcomes.append(outcome)
            i += 1
            if outcome.status == 429:
                await asyncio.sleep(min(outcome.retry_after or 1, deadline - time.perf_counter()))
            elif outcome.status == 0:
                await asyncio.sleep(0.2)  # a refused connection must not spin


async def sample_memory(
    memory: ContainerMemory, t0: float, stop: asyncio.Event, run: Run, interval: float
) -> None:
    while not stop.is_set():
        try:
            run.memory.append({"t": round(time.perf_counter() - t0, 2), **memory.sample()})
        except OSError as e:  # the container restarted or is gone: say so, keep going
            run.memory_errors.append(f"{time.perf_counter() - t0:.1f}s: {e}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def soak(
    url: str,
    clients: int = 100,
    seconds: float = 300,
    warmup: float | None = None,
    memory: ContainerMemory | None = None,
    sample_interval: float = 1.0,
) -> dict[str, Any]:
    """Run the load and return the summary (see `summarize`)."""
    warmup = default_warmup(seconds) if warmup is None else warmup
    run = Run()
    stop = asyncio.Event()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    sampler = (
        asyncio.create_task(sample_memory(memory, t0, stop, run, sample_interval))
        if memory
        else None
    )
    await asyncio.gather(*(client_loop(url, n, t0 + seconds, t0, run) for n in range(clients)))
    elapsed = time.perf_counter() - t0
    stop.set()
    if sampler:
        await sampler
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    summary = summarize(run, clients, seconds, warmup, elapsed)
    summary["load_generator_cpu_s"] = round(cpu, 1)
    return summary


def default_warmup(seconds: float) -> float:
    return min(60.0, seconds / 4)


# -- the figures ---------------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in milliseconds (None without at least two values)."""
    if len(values) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {k: round(q[i] * 1000, 1) for k, i in (("p50_ms", 49), ("p95_ms", 94), ("p99_ms", 98))}


def median_around(samples: list[dict[str, float]], key: str, end: float) -> float | None:
    """Median of ``key`` over the samples of the STABLE_WINDOW seconds up to ``end``."""
    values = [s[key] for s in samples if end - STABLE_WINDOW <= s["t"] <= end]
    return round(statistics.median(values), 1) if values else None


def growth_pct(start: float | None, end: float | None) -> float | None:
    return round(100 * (end - start) / start, 2) if start and end is not None else None


def summarize(
    run: Run, clients: int, seconds: float, warmup: float, elapsed: float
) -> dict[str, Any]:
    """Counts over the whole run; latencies over the requests that started after warm-up;
    memory at warm-up end and at the end of the load (medians of STABLE_WINDOW seconds)."""
    outcomes = run.outcomes
    statuses = Counter(str(o.status) for o in outcomes)
    errors = Counter((o.error or "").split(":")[0] or "?" for o in outcomes if o.error is not None)
    measured = [o for o in outcomes if o.started >= warmup and o.clean]
    memory: dict[str, Any] = {"method": RSS_METHOD}
    if run.memory:
        end = max(s["t"] for s in run.memory)
        for key in ("rss_mib", "working_set_mib"):
            name = key.removesuffix("_mib")
            at_warmup = median_around(run.memory, key, warmup)
            at_end = median_around(run.memory, key, end)
            memory[key] = {
                "first": run.memory[0][key],
                "at_warmup_end": at_warmup,
                "at_end": at_end,
                "peak": max(s[key] for s in run.memory),
                "growth_after_warmup_pct": growth_pct(at_warmup, at_end),
            }
            memory[f"{name}_slope_mib_per_min"] = slope_per_minute(
                [(s["t"], s[key]) for s in run.memory if s["t"] >= warmup]
            )
        memory["samples"] = [[s["t"], s["rss_mib"], s["working_set_mib"]] for s in run.memory]
        memory["samples_columns"] = ["t_s", "rss_mib", "working_set_mib"]
    memory["errors"] = run.memory_errors
    return {
        "clients": clients,
        "seconds": seconds,
        "warmup_s": warmup,
        "elapsed_s": round(elapsed, 1),
        "requests": len(outcomes),
        "clean_streams": sum(o.clean for o in outcomes),
        "statuses": dict(sorted(statuses.items())),
        "errors": {
            "total": sum(errors.values()),
            "by_kind": dict(errors.most_common()),
            "examples": [o.error for o in outcomes if o.error][:5],
        },
        "streams_per_s_after_warmup": round(len(measured) / max(elapsed - warmup, 1e-9), 1),
        "latency_after_warmup": {
            "requests": len(measured),
            "ttft": percentiles([o.ttft for o in measured if o.ttft is not None]),
            "total": percentiles([o.total for o in measured if o.total is not None]),
        },
        "windows": windows(run, seconds),
        "memory": memory,
    }


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) in MiB per minute."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if not var:
        return None
    return round(60 * sum((t - mx) * (v - my) for t, v in points) / var, 3)


def windows(run: Run, seconds: float) -> list[dict[str, Any]]:
    """The run in ten slices by start time: what each served, refused, failed, and its memory."""
    width = max(seconds / 10, 1.0)
    out = []
    for k in range(int(seconds // width + (seconds % width > 0))):
        lo, hi = k * width, (k + 1) * width
        part = [o for o in run.outcomes if lo <= o.started < hi]
        rss = [s["rss_mib"] for s in run.memory if lo <= s["t"] < hi]
        out.append(
            {
                "from_s": round(lo, 1),
                "clean": sum(o.clean for o in part),
                "429": sum(o.status == 429 for o in part),
                "errors": sum(o.error is not None for o in part),
                "total_p99_ms": percentiles([o.total for o in part if o.clean and o.total])[
                    "p99_ms"
                ],
                "rss_mib_max": max(rss) if rss else None,
            }
        )
    return out


def result_path(out: Path, day: date | None = None) -> Path:
    """bench/results/soak-<date>.json, with b, c, ... when that day already has one."""
    stem = f"soak-{(day or date.today()).isoformat()}"
    for suffix in ["", *"bcdefghijklmnopqrstuvwxyz"]:
        path = out / f"{stem}{suffix}.json"
        if not path.exists():
            return path
    raise FileExistsError(f"too many soak results for {stem} in {out}")


# -- the whole run on the local cluster ----------------------------------------------------------

MODEL_SERVER = (
    "import sys, threading\n"
    "from localcluster.model_server import ModelServer\n"
    "server = ModelServer(host=sys.argv[1], latency_ms=float(sys.argv[2])).start()\n"
    "print(server.base_url, flush=True)\n"
    "threading.Event().wait()\n"
)


@contextlib.contextmanager
def model_server(host: str, latency_ms: float) -> Iterator[str]:
    """The fake provider in a process of its own (not sharing the load generator's GIL) on
    ``host``; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", MODEL_SERVER, host, str(latency_ms)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        if not base_url:
            raise RuntimeError(f"the model server did not start (exit {process.wait()})")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        time.sleep(0.3)
        return False


def run_on_local_cluster(args: argparse.Namespace) -> dict[str, Any]:
    from localcluster import LocalCluster, hoststate
    from localcluster.kubectl import Kubectl, OperatorProcess, wait_for

    before = hoststate.snapshot()
    with (
        tempfile.TemporaryDirectory(prefix="aiagent-soak-") as tmp,
        LocalCluster(real_node=True) as cluster,
    ):
        assert cluster.node is not None
        kubectl = Kubectl(cluster.kubeconfig)
        kubectl.run("apply", "-f", str(REPO / "crds"))
        kubectl.run(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/aiagents.aiagents.dev"
        )
        operator = OperatorProcess(
            cluster.kubeconfig,
            Path(tmp) / "operator.log",
            standalone="true",
            watch_namespaces=NAMESPACE,
        ).start()
        try:
            with model_server(cluster.node_ip, args.model_latency_ms) as model_url:
                kubectl.run("create", "namespace", NAMESPACE)
                kubectl.run(
                    "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
                )
                wait_for(
                    "the default ServiceAccount",
                    lambda: kubectl.get("serviceaccount", "default", NAMESPACE),
                )
                kubectl.run(
                    "create",
                    "secret",
                    "generic",
                    "openai",
                    "--from-literal=api-key=sk-soak",
                    namespace=NAMESPACE,
                )
                kubectl.apply(agent_manifest(model_url, args.concurrent_limit), namespace=NAMESPACE)

                def ready() -> dict[str, Any] | None:
                    agent = kubectl.get("aiagent", AGENT, NAMESPACE) or {}
                    status = agent.get("status") or {}
                    return agent if status.get("phase") == "Ready" else None

                wait_for(f"{AGENT} Ready", ready, timeout=240, interval=1)
                svc = kubectl.get("service", AGENT, NAMESPACE) or {}
                url = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
                wait_for(f"{AGENT}'s Service answering", lambda: _answers(url), timeout=60)
                pod = kubectl.list("pods", NAMESPACE, f"aiagents.dev/agent={AGENT}")[0]
                container = pod["status"]["containerStatuses"][0]["containerID"].split("//")[1]
                pid = container_pid(cluster.node.ctr("tasks", "list").stdout, container)
                result = asyncio.run(
                    soak(url, args.clients, args.seconds, args.warmup, ContainerMemory(pid))
                )
                after = kubectl.get("pod", pod["metadata"]["name"], NAMESPACE) or {}
                result["container_restarts"] = after["status"]["containerStatuses"][0][
                    "restartCount"
                ]
        finally:
            operator.stop()
    result["host_left_as_found"] = not hoststate.diff(before, hoststate.snapshot())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warmup", type=float, help="seconds (default: a quarter, at most 60)")
    parser.add_argument("--model-latency-ms", type=float, default=200)
    parser.add_argument("--concurrent-limit", type=int, default=CONCURRENT_LIMIT)
    parser.add_argument("--url", help="an agent already running (its Service); no local cluster")
    parser.add_argument("--pid", type=int, help="with --url: the host PID of its runtime")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = default_warmup(args.seconds)
    if args.url:
        memory = ContainerMemory(args.pid) if args.pid else None
        result = asyncio.run(soak(args.url, args.clients, args.seconds, args.warmup, memory))
    else:
        result = run_on_local_cluster(args)
    result = {
        "date": date.today().isoformat(),
        "machine": {"cores": os.cpu_count()},
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if v is not None and not (args.url and k in ("model_latency_ms", "concurrent_limit"))
        },
        "agent": "one LangChain replica (no Dapr), the default resources, on the real node"
        if not args.url
        else args.url,
        **result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = result_path(args.out)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("windows", "memory")}, indent=1))
    rss = result["memory"].get("rss_mib", {})
    print(f"RSS: {rss}\nwritten to {path}")


if __name__ == "__main__":
    main()
