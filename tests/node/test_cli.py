"""`aiagent invoke`, `chat` and `status` as a user runs them: the real command, a kubeconfig, and
agents on real pods reached through the API server's Service proxy."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster import LocalCluster
from localcluster.kubectl import Kubectl, OperatorProcess, wait_for
from localcluster.model_server import ModelServer

from .conftest import example, restricted_namespace, wait_ready

AIAGENT = [sys.executable, "-m", "agent_runtime"]
if (Path(sys.executable).parent / "aiagent").exists():
    AIAGENT = [str(Path(sys.executable).parent / "aiagent")]  # the console script itself


@pytest.fixture(scope="module")
def cli_namespace(
    cluster: LocalCluster, kubectl: Kubectl, operator: OperatorProcess, model: ModelServer
) -> Iterator[str]:
    """Two agents without Dapr (quick to start): one that answers, one whose model sends a word
    and then stalls (so a streamed answer is seen before it ends)."""
    namespace = restricted_namespace(kubectl, prefix="node-cli")
    for name, model_name in (("cli-bot", "fake-model"), ("cli-slow", "slow-model")):
        manifest = example("local-model-agent.yaml", model)
        manifest["metadata"]["name"] = name
        manifest["spec"]["model"]["name"] = model_name
        kubectl.apply(manifest, namespace=namespace)
    for name in ("cli-bot", "cli-slow"):
        wait_ready(kubectl, namespace, name)
    yield namespace
    kubectl.run("delete", "namespace", namespace, "--wait=false", check=False)


def aiagent(
    cluster: LocalCluster, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIAGENT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **(env or {})},
    )


def test_invoke_streams_the_answer_as_it_comes(
    cluster: LocalCluster, cli_namespace: str, model: ModelServer
) -> None:
    # The slow model sends "Thinking..." and then nothing for 30 s: seeing it while the command
    # still runs means the API server's proxy passed the event on at once, not at the end.
    cancelled = model.recorder.cancelled_streams
    process = subprocess.Popen(
        [*AIAGENT, "invoke", "cli-slow", "are you there?", "-n", cli_namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    assert process.stdout is not None
    try:
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while b"Thinking..." not in seen and time.monotonic() < deadline:
                if selector.select(timeout=1):
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    seen += chunk
        assert b"Thinking..." in seen, (seen, process.stderr.read() if process.poll() else "")
        assert process.poll() is None, "the command ended: the answer was not streamed"
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Stopping the command (Ctrl-C) stops the provider's call too: the API server closes its
    # connection to the pod, and the runtime hangs up on the model.
    wait_for(
        "the model's stream cancelled",
        lambda: model.recorder.cancelled_streams > cancelled,
        timeout=30,
    )

    done = aiagent(cluster, "invoke", "cli-bot", "hello from the cli", "-n", cli_namespace)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Echo: hello from the cli (turn 1)\n"


def test_invoke_with_a_session_continues_it(cluster: LocalCluster, cli_namespace: str) -> None:
    for turn in (1, 2):
        done = aiagent(
            cluster, "invoke", "cli-bot", f"turn {turn}", "--session", "s-1", "-n", cli_namespace
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"Echo: turn {turn} (turn {turn})\n"


def test_chat_over_a_pipe_keeps_the_conversation(cluster: LocalCluster, cli_namespace: str) -> None:
    questions = "first question\n\nsecond question\n/exit\nnever asked\n"
    done = aiagent(cluster, "chat", "cli-bot", "-n", cli_namespace, stdin=questions)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Echo: first question (turn 1)",
        "Echo: second question (turn 2)",  # the model got the first turn too
    ]


def test_status_of_a_ready_agent_in_the_contexts_namespace(
    cluster: LocalCluster, cli_namespace: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for context in config["contexts"]:
        context["context"]["namespace"] = cli_namespace  # no -n: the context's namespace
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump(config))

    done = aiagent(cluster, "status", "cli-bot", "--kubeconfig", str(kubeconfig))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"cli-bot in namespace {cli_namespace}: Ready"
    assert "ready:     1/1 replicas" in done.stdout
    assert f"cli-bot.{cli_namespace}.svc" in done.stdout
    assert any(line.split()[:2] == ["Ready", "True"] for line in lines), done.stdout

    as_json = aiagent(cluster, "status", "cli-bot", "-o", "json", "--kubeconfig", str(kubeconfig))
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["phase"] == "Ready" and status["readyReplicas"] == 1
