"""Dapr's control plane on the real node, installed the way a user installs it: Dapr's own Helm
chart (from the dapr module source, at the version we build), with our locally built images.

Only these values differ from the chart's defaults, each for a reason of this one-node cluster:
- the images (``daprbuild.chart_image_values``): built here, there is no registry to pull from;
- ``dapr_placement.cluster.forceInMemoryLog`` and ``dapr_scheduler.cluster.inMemoryStorage``:
  there is no storage provisioner for their PersistentVolumeClaims (the cluster is disposable);
- ``dapr_sidecar_injector.sidecarDropALLCapabilities``: without it the injected daprd keeps the
  default capabilities and the pod fails the ``restricted`` Pod Security Standard (a production
  setting too, documented in the README);
- ``dapr_sidecar_injector.webhookFailurePolicy=Fail``, outside dapr-system and kube-system: with
  the chart's ``Ignore``, a pod created while the injector is slow to answer (a loaded machine)
  runs without its sidecar, silently; with ``Fail`` its creation is refused and its ReplicaSet
  tries again, so every agent pod here has daprd (the injector's own namespace stays out, or it
  could never restart).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import daprbuild
from .controlplane import LocalControlPlane
from .procs import ClusterError, run

NAMESPACE = "dapr-system"
RELEASE = "dapr"


def helm_values(version: str) -> dict[str, str]:
    return {
        **daprbuild.chart_image_values(),
        "global.imagePullPolicy": "Never",  # an image not imported is a bug here, not a pull
        "dapr_placement.cluster.forceInMemoryLog": "true",
        "dapr_scheduler.cluster.inMemoryStorage": "true",
        "dapr_sidecar_injector.sidecarDropALLCapabilities": "true",
        "dapr_sidecar_injector.webhookFailurePolicy": "Fail",
    }


# Values that are objects, for `helm --set-json`.
JSON_VALUES = {
    "dapr_sidecar_injector.namespaceSelector": {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [NAMESPACE, "kube-system"],
            }
        ]
    }
}


class DaprSystem:
    """``helm install dapr`` into dapr-system, and wait until every control-plane pod is ready."""

    def __init__(self, bin_dir: Path, control_plane: LocalControlPlane, chart: Path, version: str):
        self.helm = bin_dir / "helm"
        self.kubectl_env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
        self.cp = control_plane
        self.chart = chart
        self.version = version

    def start(self, timeout: float = 300) -> None:
        if not (self.chart / "Chart.yaml").exists():
            raise ClusterError(f"no Dapr Helm chart at {self.chart}")
        sets = [f"--set={k}={v}" for k, v in helm_values(self.version).items()]
        sets += [f"--set-json={k}={json.dumps(v)}" for k, v in JSON_VALUES.items()]
        result = run(
            [
                str(self.helm),
                "install",
                RELEASE,
                str(self.chart),
                f"--namespace={NAMESPACE}",
                "--create-namespace",
                *sets,
                "--wait",
                f"--timeout={int(timeout)}s",
            ],
            env=self.kubectl_env,
            timeout=timeout + 30,
            check=False,
        )
        if result.returncode != 0:
            raise ClusterError(
                f"helm install of Dapr's chart failed: {(result.stderr or result.stdout)[-2000:]}"
                f"\n{self.pod_report()}"
            )

    def stop(self) -> None:
        """Nothing to undo on the host: the pods go with the node, the objects with etcd."""

    def pod_report(self) -> str:
        """One line per control-plane pod (phase, readiness, last container state), for errors."""
        try:
            pods = self.cp.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
        except Exception as e:  # the report must never hide the error it explains
            return f"(no pod report: {e})"
        lines = []
        for pod in pods:
            statuses = pod.get("status", {}).get("containerStatuses") or []
            states = [
                f"{s['name']} ready={s.get('ready')} restarts={s.get('restartCount')} "
                f"{next(iter(s.get('state') or {}), '?')}"
                for s in statuses
            ]
            phase = pod.get("status", {}).get("phase")
            lines.append(f"{pod['metadata']['name']}: {phase} {'; '.join(states)}")
        return "\n".join(lines) or "(no pods in dapr-system)"
