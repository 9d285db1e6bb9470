"""A small JSON client for the few API calls the operator makes: urllib3 and `credentials`.

Server-side apply is the heart of it: the operator states the fields it owns (field manager
`aiagent-operator`) and the API server merges, so drift in those fields is undone by the next
apply while fields owned by others (the HPA's replica count, defaults) are left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3

from . import __version__, api, components, metrics
from .credentials import Credentials, from_kubeconfig, load
from .render import FIELD_MANAGER, Manifest

# Who is asking, in the API server's audit log and metrics (Kopf's own calls say kopf/...).
USER_AGENT = f"aiagent-operator/{__version__}"
# apiVersion/kind → URL segment; the operator touches only these kinds.
_PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    (api.API_VERSION, api.MODEL_CONFIG_KIND): api.MODEL_CONFIG_PLURAL,
    (components.API_VERSION, components.KIND): components.PLURAL,
    (api.API_VERSION, api.KIND): api.PLURAL,
}


@dataclass
class KubeError(Exception):
    """An API call that failed; `message` is the API server's own explanation."""

    status: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted, or is gone already (a child deleted
        with its namespace can be seen before its owner is): nothing to repair there."""
        gone = self.status == 404 and self.details.get("kind") == "namespaces"
        return gone or (self.status == 403 and "being terminated" in self.message)

    @property
    def no_such_api(self) -> bool:
        """404 for the kind itself, not for one object: its CRD is not installed (a missing
        object's 404 names it in `details`)."""
        return self.status == 404 and not self.details.get("name")

    @property
    def is_permanent(self) -> bool:
        """Retrying cannot help: the request itself is wrong (bad field, refused by admission)."""
        return self.status in (400, 422)


def object_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{_PLURALS[(api_version, kind)]}"
    return f"{path}/{name}" if name else path


class Kube:
    """Plain HTTPS to the API server with the credentials `credentials` found.

    No generated client: these few JSON calls do not change shape between releases.
    """

    def __init__(self, credentials: Credentials, *, connections: int = 8) -> None:
        self.credentials = credentials
        self._server = credentials.server.rstrip("/")
        # `connections`: as many as the threads that call at once (Kopf's sync handler workers).
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=connections, ssl_context=credentials.ssl_context()
        )

    @classmethod
    def from_environment(cls, *, connections: int = 8) -> Kube:
        """In-cluster credentials inside a pod, the kubeconfig (KUBECONFIG) elsewhere."""
        return cls(load(), connections=connections)

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> Kube:
        return cls(from_kubeconfig([path]))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {
            "Content-Type": content_type,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if token := self.credentials.bearer_token():  # re-read when the kubelet rotates it
            headers["Authorization"] = f"Bearer {token}"
        url = self._server + path
        if query:
            url += "?" + urlencode(query)
        try:
            response = self._pool.request(
                method,
                url,
                # As UTF-8, not \uXXXX escapes: the API server decodes apply patches as YAML,
                # which refuses an escaped surrogate pair (any character beyond the BMP).
                body=json.dumps(body, ensure_ascii=False).encode() if body is not None else None,
                headers=headers,
                timeout=urllib3.Timeout(connect=10, read=30),
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            metrics.api_request("operator", method, path, "unreachable", content_type)
            raise KubeError(status=0, reason="Unreachable", message=str(exc)) from None
        metrics.api_request("operator", method, path, response.status, content_type)
        if not 200 <= response.status < 300:
            raise _kube_error(response.status, response.reason or "", response.data)
        return json.loads(response.data) if response.data else {}

    def apply(self, manifest: Manifest) -> dict[str, Any]:
        """Server-side apply with force: our fields are ours, whoever edited them since."""
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        return self.request(
            "PATCH",
            path,
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def create(self, manifest: Manifest) -> dict[str, Any]:
        """Create, failing with 409 if the object exists: unlike an apply, never takes over one."""
        meta = manifest["metadata"]
        return self.request(
            "POST",
            object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"]),
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER)],
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (KubeError when its kind does not)."""
        try:
            return self.request("GET", object_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404 and not exc.no_such_api:
                return None
            raise

    def delete_if_controlled_by(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete a child only if it is this owner's (never a same-named object of someone else)."""
        existing = self.get(api_version, kind, namespace, name)
        if existing is None or not is_controlled_by(existing, owner_uid):
            return False
        preconditions = {"uid": existing["metadata"]["uid"]}
        try:
            self.request(
                "DELETE",
                object_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": preconditions},
            )
        except KubeError as exc:
            if exc.status in (404, 409):  # gone already, or replaced meanwhile
                return False
            raise
        return True

    def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return self.list("v1", "Pod", namespace, labels)

    def list(
        self, api_version: str, kind: str, namespace: str, labels: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace, selected by labels on the server."""
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        answer = self.request(
            "GET",
            object_path(api_version, kind, namespace),
            query=[("labelSelector", selector)],
        )
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    def patch_status(
        self, agent: api.AIAgent, status: dict[str, Any], *, if_unchanged: bool = False
    ) -> str:
        """Merge-patch the status; returns the new resourceVersion. `if_unchanged`: only if the
        AIAgent still is at `agent.resource_version` (else KubeError 409), for a patch computed
        from a view that may be stale."""
        path = object_path(api.API_VERSION, api.KIND, agent.namespace, agent.name) + "/status"
        body: dict[str, Any] = {"status": status}
        if if_unchanged:
            body["metadata"] = {"resourceVersion": agent.resource_version}
        answer = self.request("PATCH", path, body=body, content_type="application/merge-patch+json")
        return str((answer.get("metadata") or {}).get("resourceVersion", ""))

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The keys of a Secret (None: no such Secret). Its values are neither kept nor logged."""
        secret = self.get("v1", "Secret", namespace, name)
        return None if secret is None else frozenset(secret.get("data") or {})


def is_controlled_by(obj: dict[str, Any], owner_uid: str) -> bool:
    return any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def _kube_error(status: int, reason: str, body: bytes) -> KubeError:
    """The API server explains itself in a Status object; fall back to the raw text."""
    details: dict[str, Any] = {}
    try:
        answer = json.loads(body)
        message = str(answer.get("message", ""))
        details = dict(answer.get("details") or {})
    except (ValueError, AttributeError, TypeError):
        message = body.decode(errors="replace")
    return KubeError(status=status, reason=reason, message=message or reason, details=details)
