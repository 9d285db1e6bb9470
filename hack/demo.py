"""`make demo`: the whole product in one command, on a local control plane (or $KUBECONFIG).

Builds or reuses the Kubernetes binaries, starts a control plane with fake kwok nodes, installs
the CRDs, runs the operator, applies every example, waits until each AIAgent is Ready, shows
what the operator made, and scales one agent from 1 to 5 replicas while you watch.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.kube import EXAMPLES, REPO, Kubectl, OperatorProcess, load_example, wait_for

NAMESPACE = "aiagent-demo"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


@contextlib.contextmanager
def cluster() -> Iterator[tuple[Path, bool]]:
    """(kubeconfig, local): the user's cluster when KUBECONFIG names one, else a local one."""
    given = os.environ.get("KUBECONFIG")
    if given and Path(given).exists():
        say(f"using the cluster in KUBECONFIG={given}")
        yield Path(given), False
        return
    from tests.controlplane.cluster import LocalControlPlane, build_binaries

    say("building (or reusing) etcd, kube-apiserver, controller-manager, scheduler, kwok, helm")
    bin_dir = build_binaries()
    say(
        "starting a local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    )
    started = time.monotonic()
    with LocalControlPlane(bin_dir) as control_plane:
        print(f"    up in {time.monotonic() - started:.1f}s; KUBECONFIG={control_plane.kubeconfig}")
        yield Path(control_plane.kubeconfig), True


def show(kubectl: Kubectl, *args: str) -> None:
    print(kubectl.run(*args, namespace=NAMESPACE).stdout.rstrip(), flush=True)


def main() -> int:
    with cluster() as (kubeconfig, local), tempfile.TemporaryDirectory() as tmp:
        kubectl = Kubectl(kubeconfig)
        say("installing the CRDs (kubectl apply -f crds/)")
        print(kubectl.run("apply", "-f", str(REPO / "crds")).stdout.rstrip())
        kubectl.run("wait", "--for=condition=Established", "crd/aiagents.aiagents.dev")
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        for secret in ("openai", "anthropic"):  # placeholders: nothing here calls a provider
            kubectl.apply(
                kubectl.run(
                    "create",
                    "secret",
                    "generic",
                    secret,
                    "--from-literal=api-key=sk-demo",
                    "--dry-run=client",
                    "-o",
                    "yaml",
                    namespace=NAMESPACE,
                ).stdout,
                namespace=NAMESPACE,
            )

        say("starting the operator (python -m aiagent_operator)")
        log = Path(tmp) / "operator.log"
        operator = OperatorProcess(kubeconfig, log, standalone="true", watch_namespaces=NAMESPACE)
        operator.start()
        try:
            say("kubectl apply -f examples/")
            for path in sorted(EXAMPLES.glob("*.yaml")):
                # Local kwok nodes are tainted; on a real cluster the examples go in as they are.
                manifest = load_example(path.name) if local else None
                print(kubectl.apply(manifest or path.read_text(), namespace=NAMESPACE).rstrip())

            say("waiting until every AIAgent is Ready")
            for path in sorted(EXAMPLES.glob("*.yaml")):
                name = load_example(path.name)["metadata"]["name"]
                wait_for(
                    f"{name} Ready",
                    lambda n=name: (
                        (a := kubectl.get("aiagent", n, NAMESPACE))
                        and a.get("status", {}).get("phase") == "Ready"
                    ),
                    timeout=180,
                )
            show(kubectl, "get", "aiagents,deploy,svc,hpa")

            say("scaling support-bot: kubectl scale aiagent support-bot --replicas=5")
            kubectl.run("scale", "aiagent", "support-bot", "--replicas=1", namespace=NAMESPACE)
            wait_for("1 replica", lambda: _ready(kubectl, "support-bot") == (1, "Ready"), 90)
            show(kubectl, "get", "aiagent", "support-bot")
            kubectl.run("scale", "aiagent", "support-bot", "--replicas=5", namespace=NAMESPACE)
            seen: set[tuple[int, str]] = set()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                state = _ready(kubectl, "support-bot")
                if state not in seen:
                    seen.add(state)
                    show(kubectl, "get", "aiagent", "support-bot", "--no-headers")
                if state == (5, "Ready"):
                    break
                time.sleep(0.3)
            else:
                print(
                    "support-bot did not reach 5 ready replicas; operator log:\n"
                    + operator.log_tail()
                )
                return 1
            show(kubectl, "get", "pods", "-l", "aiagents.dev/agent=support-bot")
        except AssertionError as exc:
            print(f"demo failed: {exc}\noperator log:\n{operator.log_tail()}", file=sys.stderr)
            show(kubectl, "get", "aiagents,deploy,pods", "-o", "wide")
            return 1
        finally:
            operator.stop()
        say("done. `make cluster` keeps a control plane up; `make test` runs every test.")
    return 0


def _ready(kubectl: Kubectl, name: str) -> tuple[int, str]:
    status = (kubectl.get("aiagent", name, NAMESPACE) or {}).get("status") or {}
    return status.get("readyReplicas", 0), status.get("phase", "")


if __name__ == "__main__":
    sys.exit(main())
