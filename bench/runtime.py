"""Benchmark of the agent runtime: latency and throughput of each protocol's route (invoke, chat
completions, Responses, A2A SendMessage) against a bare FastAPI endpoint calling the same model
server (the ceiling), cold start, and memory. Prints JSON.

    python -m bench.runtime [--requests 300] [--concurrency 8] [--model-latency-ms 0 200]
                            [--frameworks langchain crewai openai-agents] [--routes invoke ...]

Everything runs on this machine: the model server, the servers under test and the load generator
share its cores, so compare the runtime with the ceiling measured in the same run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from localcluster.procs import free_port

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "AIAGENT_LOG_FORMAT": "json", "MODEL_API_KEY": "sk-bench"}


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        # Poll gently: a tight loop would steal the GIL from the agent being built.
        time.sleep(0.05)
    raise SystemExit(f"{url} not ready within {timeout}s")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def start(
    command: list[str], port: int, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        env={**ENV, **(extra_env or {})},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process, time.monotonic() - started


def _a2a_send(i: int) -> dict[str, Any]:
    message = {"messageId": f"m{i}", "role": "ROLE_USER", "parts": [{"text": f"question {i}"}]}
    return {"jsonrpc": "2.0", "id": i, "method": "SendMessage", "params": {"message": message}}


# route name -> (path, request body for request i, headers). One model call per request on each.
ROUTES: dict[str, tuple[str, Callable[[int], dict[str, Any]], dict[str, str]]] = {
    "invoke": ("/v1/invoke", lambda i: {"input": f"question {i}"}, {}),
    "chat": (
        "/v1/chat/completions",
        lambda i: {"messages": [{"role": "user", "content": f"question {i}"}]},
        {},
    ),
    "responses": ("/v1/responses", lambda i: {"input": f"question {i}"}, {}),
    "a2a": ("/a2a", _a2a_send, {"A2A-Version": "1.0"}),
}


def _answered(response: httpx.Response) -> bool:
    """A 200 that carries an answer (JSON-RPC reports its errors inside a 200)."""
    if response.status_code != 200:
        return False
    body = response.json()
    return not (isinstance(body, dict) and body.get("error"))


async def load(
    url: str, requests: int, concurrency: int, route: str = "invoke"
) -> dict[str, float]:
    path, body, headers = ROUTES[route]
    latencies: list[float] = []
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as client:
        for i in range(min(20, requests)):  # warm-up: connections, caches, first-call paths
            await client.post(f"{url}{path}", json=body(-1 - i))

        async def worker() -> None:
            nonlocal failures
            while not queue.empty():
                i = queue.get_nowait()
                began = time.perf_counter()
                response = await client.post(f"{url}{path}", json=body(i))
                latencies.append(time.perf_counter() - began)
                failures += not _answered(response)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": requests,
        "failures": failures,
        "rps": round(requests / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def measure(
    framework: str, model_url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    config = {
        "name": f"bench-{framework}",
        "framework": framework,
        "model": {"provider": "openai-compatible", "name": "fake-model", "baseURL": model_url},
        "agent": {"instructions": "You are brief."},
    }
    path = workdir / f"{framework}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    process, cold_start = start(
        [sys.executable, "-m", "agent_runtime", "run", str(path), "--port", str(port)],
        port,
        {"HOME": str(workdir)},
    )
    url = f"http://127.0.0.1:{port}"
    routes: dict[str, Any] = {}
    try:
        rss = rss_mib(process.pid)
        for route in args.routes:
            routes[route] = {
                "serial": asyncio.run(load(url, args.requests // 3, 1, route)),
                "concurrent": asyncio.run(load(url, args.requests, args.concurrency, route)),
            }
        rss_after = rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait()
    return {
        "cold_start_s": round(cold_start, 2),
        "rss_after_start_mib": rss,
        "rss_after_load_mib": rss_after,
        "routes": routes,
    }


def ceiling(model_url: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    process, _ = start(
        [sys.executable, "-m", "bench.ceiling", str(port)], port, {"CEILING_MODEL_URL": model_url}
    )
    try:
        serial = asyncio.run(load(f"http://127.0.0.1:{port}", args.requests // 3, 1))
        concurrent = asyncio.run(load(f"http://127.0.0.1:{port}", args.requests, args.concurrency))
    finally:
        process.terminate()
        process.wait()
    return {"serial": serial, "concurrent": concurrent}


def overhead(runtime: dict[str, Any], base: dict[str, Any], mode: str) -> dict[str, float]:
    r, c = runtime[mode]["p50_ms"], base[mode]["p50_ms"]
    return {"p50_added_ms": round(r - c, 2), "p50_overhead_pct": round(100 * (r - c) / c, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark the agent runtime against its ceiling.")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--model-latency-ms", type=float, nargs="+", default=[0, 200])
    parser.add_argument("--frameworks", nargs="+", default=["langchain", "crewai", "openai-agents"])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "settings": vars(args),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for latency in args.model_latency_ms:
            model_port = free_port()
            model = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "localcluster.model_server",
                    "--port",
                    str(model_port),
                    "--latency-ms",
                    str(latency),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            model_url = f"http://127.0.0.1:{model_port}/v1"
            try:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        httpx.get(f"{model_url}/models", timeout=1)
                        break
                    except httpx.HTTPError:
                        time.sleep(0.05)
                run: dict[str, Any] = {
                    "model_latency_ms": latency,
                    "ceiling": ceiling(model_url, args),
                }
                for framework in args.frameworks:
                    measured = measure(framework, model_url, args, Path(tmp))
                    for route in measured["routes"].values():
                        route["overhead_vs_ceiling"] = {
                            mode: overhead(route, run["ceiling"], mode)
                            for mode in ("serial", "concurrent")
                        }
                    run[framework] = measured
                results["runs"].append(run)
            finally:
                model.terminate()
                model.wait()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
