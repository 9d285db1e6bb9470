"""`aiagent status` and `invoke` against a real API server, where they fail: no such agent, a
Pending agent, no ready pods, a user without the permission. Every failure is one line on stderr
and a non-zero exit status. (No pod here answers: agents answering are the real-node suite's.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from localcluster.kubectl import Kubectl, OperatorProcess, load_example, wait_for

AIAGENT = [sys.executable, "-m", "agent_runtime"]
if (Path(sys.executable).parent / "aiagent").exists():
    AIAGENT = [str(Path(sys.executable).parent / "aiagent")]  # the console script itself
# Pods that no node takes, on kwok's nodes or any cluster's: the agent never has a ready pod
# (and the API server's proxy never dials a kwok pod's made-up address).
NOWHERE = {"aiagents.dev/e2e-no-such-node": "true"}


def aiagent(kubeconfig: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIAGENT, *args, "--kubeconfig", str(kubeconfig)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
    )


def phase(kubectl: Kubectl, namespace: str, name: str, wanted: str) -> None:
    def reached() -> bool:
        agent = kubectl.get("aiagent", name, namespace) or {}
        return bool((agent.get("status") or {}).get("phase") == wanted)

    wait_for(f"{name} {wanted}", reached, timeout=60)


def test_status_of_a_missing_agent(
    kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    done = aiagent(kubeconfig, "status", "nobody", "-n", namespace)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"aiagent: no AIAgent 'nobody' in namespace '{namespace}'\n"

    done = aiagent(kubeconfig, "invoke", "nobody", "hello?", "-n", namespace)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"aiagent: no agent 'nobody' in namespace '{namespace}' (it has no Service 'nobody')\n"
    )


def test_status_of_a_pending_agent_says_why(
    kubectl: Kubectl, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    kubectl.apply(load_example("support-bot.yaml"), namespace=namespace)  # no Secret: Pending
    phase(kubectl, namespace, "support-bot", "Pending")

    done = aiagent(kubeconfig, "status", "support-bot", "-n", namespace)
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"support-bot in namespace {namespace}: Pending"
    ready = next(line.split(None, 3) for line in lines if line.strip().startswith("Ready "))
    assert ready[1:3] == ["False", "SecretNotFound"] and "openai" in ready[3], lines

    as_json = aiagent(kubeconfig, "status", "support-bot", "-n", namespace, "-o", "json")
    assert as_json.returncode == 3
    status = json.loads(as_json.stdout)
    assert status["phase"] == "Pending"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "SecretNotFound"


def test_an_agent_without_ready_pods_cannot_be_asked(
    kubectl: Kubectl,
    kubeconfig: Path,
    operator: OperatorProcess,
    namespace: str,
    api_key_secrets: None,
) -> None:
    manifest = load_example("support-bot.yaml", replicas=1, nodeSelector=NOWHERE)
    manifest["spec"].pop("dapr", None)
    kubectl.apply(manifest, namespace=namespace)
    wait_for("support-bot's Service", lambda: kubectl.get("service", "support-bot", namespace))
    no_pods = (
        f"aiagent: agent 'support-bot' in namespace '{namespace}' has no ready pods to answer "
        "(`aiagent status support-bot` says why)\n"
    )

    done = aiagent(kubeconfig, "invoke", "support-bot", "hello?", "-n", namespace)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", no_pods)

    # The chat goes on after a failed turn, and its exit status says one failed.
    chat = aiagent(kubeconfig, "chat", "support-bot", "-n", namespace, stdin="one\ntwo\n")
    assert (chat.returncode, chat.stdout, chat.stderr) == (1, "", no_pods * 2)

    done = aiagent(kubeconfig, "status", "support-bot", "-n", namespace)
    assert done.returncode == 3, done.stderr
    assert "ready:     0/1 replicas" in done.stdout


def service_account_kubeconfig(
    kubectl: Kubectl, kubeconfig: Path, namespace: str, account: str, tmp: Path
) -> Path:
    """A kubeconfig that is this ServiceAccount (a token from the TokenRequest API)."""
    kubectl.run("create", "serviceaccount", account, namespace=namespace)
    token = kubectl.run("create", "token", account, "--duration=1h", namespace=namespace).stdout
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    user = {"name": account, "user": {"token": token.strip()}}
    path = tmp / f"{account}.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [user],
                "contexts": [
                    {
                        "name": account,
                        "context": {
                            "cluster": cluster["name"],
                            "user": account,
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": account,
            }
        )
    )
    path.chmod(0o600)
    return path


def test_a_missing_permission_is_named(
    kubectl: Kubectl,
    kubeconfig: Path,
    operator: OperatorProcess,
    namespace: str,
    api_key_secrets: None,
    tmp_path: Path,
) -> None:
    manifest = load_example("support-bot.yaml", replicas=1, nodeSelector=NOWHERE)
    manifest["spec"].pop("dapr", None)
    kubectl.apply(manifest, namespace=namespace)
    # A viewer may read AIAgents, and nothing else: not the Service proxy.
    viewer = service_account_kubeconfig(kubectl, kubeconfig, namespace, "viewer", tmp_path)
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "aiagent-viewer"},
            "rules": [{"apiGroups": ["aiagents.dev"], "resources": ["aiagents"], "verbs": ["get"]}],
        },
        namespace=namespace,
    )
    kubectl.run(
        "create",
        "rolebinding",
        "aiagent-viewer",
        "--role=aiagent-viewer",
        f"--serviceaccount={namespace}:viewer",
        namespace=namespace,
    )
    wait_for(
        "the viewer's Role in force",
        lambda: aiagent(viewer, "status", "support-bot").returncode != 1,
        timeout=30,
    )
    user = f"system:serviceaccount:{namespace}:viewer"

    done = aiagent(viewer, "invoke", "support-bot", "hello?")  # the context's namespace
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"aiagent: forbidden: user '{user}' may not create services/proxy in namespace "
        f"'{namespace}' (needed: 'create' on 'services/proxy')\n"
    )

    stranger = service_account_kubeconfig(kubectl, kubeconfig, namespace, "stranger", tmp_path)
    done = aiagent(stranger, "status", "support-bot")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"aiagent: forbidden: user 'system:serviceaccount:{namespace}:stranger' may not get "
        f"aiagents in namespace '{namespace}' (needed: 'get' on 'aiagents')\n"
    )
