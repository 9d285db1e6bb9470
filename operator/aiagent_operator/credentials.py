"""Where the operator finds the API server and how it proves who it is: the pod's ServiceAccount
inside a cluster, the kubeconfig (KUBECONFIG, else ~/.kube/config) elsewhere.

One loader serves both clients: `Kube` (the handlers' calls) and Kopf (its watches and patches,
through the `kopf.on.login` handler). It replaces the `kubernetes` package, whose import alone
costs the operator about 55 MB of memory (over 1,200 generated modules), for these few fields.
Exec plugins and auth-providers (cloud CLIs that mint tokens) are refused with a clear error: the
operator runs in the cluster, and a kubeconfig for it outside names a token or a certificate.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(Exception):
    """No usable credentials: the message says which file or field is wrong."""


@dataclass
class Credentials:
    server: str
    ca_pem: str | None = None  # None: the system's CAs
    insecure: bool = False
    cert_pem: str | None = None
    key_pem: str | None = None
    token: str | None = None
    # A token file is re-read when it changes: the kubelet rotates projected ServiceAccount tokens.
    token_path: Path | None = None
    namespace: str | None = None
    _token_mtime: float = field(default=0.0, repr=False)

    def bearer_token(self) -> str | None:
        if self.token_path is not None:
            try:
                mtime = self.token_path.stat().st_mtime
                if mtime != self._token_mtime:
                    self.token = self.token_path.read_text().strip() or None
                    self._token_mtime = mtime
            except OSError as exc:
                message = f"cannot read the token file {self.token_path}: {exc}"
                raise CredentialsError(message) from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            # ssl loads a client certificate only from files: a private directory, gone at once
            # (the context keeps what it loaded).
            with tempfile.TemporaryDirectory(prefix="aiagent-credentials-") as tmp:
                cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
                cert.write_text(self.cert_pem)
                key.touch(mode=0o600)
                key.write_text(self.key_pem)
                context.load_cert_chain(cert, key)
        return context

    def for_kopf(self) -> dict[str, Any]:
        """The fields of a `kopf.ConnectionInfo` (kept free of Kopf here, for the tools)."""
        token = self.bearer_token()
        return {
            "server": self.server,
            "ca_data": self.ca_pem,
            "insecure": self.insecure or None,
            "certificate_data": self.cert_pem,
            "private_key_data": self.key_pem,
            "scheme": "Bearer" if token else None,
            "token": token,
            "default_namespace": self.namespace,
        }


def load() -> Credentials:
    """The pod's ServiceAccount inside a cluster, the kubeconfig elsewhere."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIR / "token").exists():
        return in_cluster()
    return from_kubeconfig()


def in_cluster(directory: Path = SERVICE_ACCOUNT_DIR) -> Credentials:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT")
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    namespace = directory / "namespace"
    credentials = Credentials(
        server=f"https://{host}:{port or 443}",
        ca_pem=_read(directory / "ca.crt"),
        token_path=directory / "token",
        namespace=namespace.read_text().strip() if namespace.exists() else None,
    )
    credentials.bearer_token()
    return credentials


def from_kubeconfig(paths: Sequence[str | Path] | None = None) -> Credentials:
    """The current context of the kubeconfig files (KUBECONFIG's list; the first of a name
    wins, as with kubectl)."""
    if paths is None:
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        paths = paths or [Path.home() / ".kube" / "config"]
    current: str | None = None
    named: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    for path in (Path(p).expanduser() for p in paths):
        if not path.exists():
            continue
        config = yaml.safe_load(path.read_text()) or {}
        current = current or config.get("current-context")
        for section, items in named.items():
            singular = section[:-1]
            for item in config.get(section) or []:
                items.setdefault(item["name"], {**(item.get(singular) or {}), "_dir": path.parent})
    if not current:
        raise CredentialsError(
            f"no current context in the kubeconfig ({os.pathsep.join(map(str, paths))}); "
            "outside a cluster the operator needs KUBECONFIG or ~/.kube/config"
        )
    context = _entry(named, "contexts", current)
    cluster = _entry(named, "clusters", context.get("cluster", ""))
    user = _entry(named, "users", context.get("user", ""))
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise CredentialsError(
                f"kubeconfig user {context.get('user')!r} uses {plugin!r}, which the operator "
                "does not run: give it a token or a client certificate"
            )
    token_file = user.get("tokenFile")
    return Credentials(
        server=str(cluster.get("server") or ""),
        ca_pem=_pem(cluster, "certificate-authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_pem=_pem(user, "client-certificate"),
        key_pem=_pem(user, "client-key"),
        token=user.get("token"),
        token_path=_relative(user, token_file) if token_file else None,
        namespace=context.get("namespace"),
    )


def _entry(named: dict[str, dict[str, Any]], section: str, name: str) -> dict[str, Any]:
    try:
        entry: dict[str, Any] = named[section][name]
    except KeyError:
        message = f"the kubeconfig names {section[:-1]} {name!r} but has none"
        raise CredentialsError(message) from None
    return entry


def _pem(entry: dict[str, Any], key: str) -> str | None:
    """`key`-data (base64) or `key` (a file, relative to its kubeconfig)."""
    if data := entry.get(f"{key}-data"):
        return base64.b64decode(data).decode()
    if path := entry.get(key):
        return _read(_relative(entry, path))
    return None


def _relative(entry: dict[str, Any], path: str) -> Path:
    return Path(entry["_dir"], Path(path).expanduser())


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc}") from None
