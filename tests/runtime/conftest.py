"""Fixtures for the runtime suite: the fake provider, and the runtime as a real uvicorn process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localcluster.model_server import ModelServer
from localcluster.procs import free_port

API_KEY = "sk-test-9c1d2e3f4a5b6c7d"  # a fake key; the tests check it never leaks
FRAMEWORKS = ["langchain", "crewai", "openai-agents"]


@pytest.fixture(scope="session")
def model_server() -> Iterator[ModelServer]:
    server = ModelServer().start()
    yield server
    server.stop()


@dataclass
class Runtime:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    config_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def agent_config(framework: str, model_server: ModelServer, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": f"{framework}-bot",
        "framework": framework,
        "model": {
            "provider": "openai-compatible",
            "name": "fake-model",
            "baseURL": model_server.base_url,
            "timeoutSeconds": 10,
        },
        "agent": {
            "description": "Answers questions in tests.",
            "instructions": "You are brief.",
            "tools": ["calculator"],
        },
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


# One client for polling: a bare httpx.get() builds a new SSL context on every call (~50 ms of
# CPU), which, every 50 ms while a runtime starts, cost as much CPU as the start itself.
POLL = httpx.Client(timeout=1)


def start_runtime(
    config: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> Runtime:
    config_path = tmp_path / f"agent-{time.monotonic_ns()}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = config_path.with_suffix(".log")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime", "run", str(config_path), "--port", str(port)],
        env={**os.environ, "MODEL_API_KEY": API_KEY, "HOME": str(tmp_path), **(env or {})},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    runtime = Runtime(process, f"http://127.0.0.1:{port}", log_path, config_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the runtime exited with {process.returncode}:\n{runtime.log()}")
        try:
            if POLL.get(f"{runtime.base_url}/readyz").status_code == 200:
                return runtime
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    runtime.stop(signal.SIGKILL)
    raise AssertionError(f"the runtime was not ready within {timeout}s:\n{runtime.log()}")


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def runtime_factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    started: list[Runtime] = []

    def factory(config: dict[str, Any], env: dict[str, str] | None = None) -> Runtime:
        runtime = start_runtime(config, tmp_path, env)
        started.append(runtime)
        return runtime

    yield factory
    for runtime in started:
        if runtime.process.poll() is None:
            runtime.stop(signal.SIGKILL)


@pytest.fixture(scope="session", params=FRAMEWORKS)
def runtime(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    """One runtime per framework, shared by every test that needs no config of its own: a start
    is seconds of imports (CrewAI's most), and the tests measure deltas, never absolutes."""
    config = agent_config(request.param, model_server)
    started = start_runtime(config, tmp_path_factory.mktemp(request.param))
    yield started
    started.stop()


@pytest.fixture(scope="session", params=FRAMEWORKS)
def broken_runtime(
    request: pytest.FixtureRequest,
    model_server: ModelServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Runtime]:
    """A runtime whose provider fails with a 401 that repeats the API key, shared by every
    protocol's failure test; once it has stopped (its log complete), the key must not be in it."""
    config = agent_config(request.param, model_server, model={"name": "broken-model"})
    started = start_runtime(config, tmp_path_factory.mktemp(f"broken-{request.param}"))
    yield started
    started.stop()
    assert API_KEY not in started.log(), "the API key reached the broken runtime's log"


def metric(text: str, sample: str, **labels: str) -> float:
    """The sum of a Prometheus exposition's samples named `sample` whose labels include `labels`
    (every series also carries `agent` and `namespace`); 0 when there is none."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == sample and labels.items() <= found.labels.items()
    )
