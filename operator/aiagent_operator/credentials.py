"""Where the operator finds the API server and how it proves who it is: the pod's ServiceAccount
inside a cluster, the kubeconfig (KUBECONFIG, else ~/.kube/config) elsewhere.

One loader serves both clients: `Kube` (the handlers' calls) and Kopf (its watches and patches,
through the `kopf.on.login` handler). It replaces the `kubernetes` package, whose import alone
costs the operator about 55 MB of memory (over 1,200 generated modules), for these few fields.
Exec plugins (cloud CLIs that mint tokens) run only when the caller asks (`allow_exec`): the
`aiagent` command does, for a person's kubeconfig; the operator does not, since it runs in the
cluster and a kubeconfig for it outside names a token or a certificate. Auth-providers (gone from
kubectl since 1.26) are always refused with a clear error.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TOKEN_MARGIN = timedelta(seconds=10)


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
    context: str | None = None  # the kubeconfig context it came from, for messages
    # An exec plugin is run again once the token it gave expires (a long `aiagent chat`).
    exec_plugin: ExecPlugin | None = field(default=None, repr=False)
    token_expires: datetime | None = None
    _token_mtime: float = field(default=0.0, repr=False)

    def bearer_token(self) -> str | None:
        expires = self.token_expires
        if self.exec_plugin is not None and self.token and expires is not None:
            if datetime.now(UTC) >= expires - EXEC_TOKEN_MARGIN:
                fresh = self.exec_plugin.run()
                self.token, self.token_expires = fresh.token, fresh.expires
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


def from_kubeconfig(
    paths: Sequence[str | Path] | None = None,
    *,
    context: str | None = None,
    allow_exec: bool = False,
) -> Credentials:
    """A context of the kubeconfig files (KUBECONFIG's list; the first of a name wins, as with
    kubectl): `context`, else the current one. `allow_exec` runs the user's exec plugin."""
    if paths is None:
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        paths = paths or [Path.home() / ".kube" / "config"]
    current: str | None = None
    named: dict[str, dict[str, Any]] = {"contexts": {}, "clusters": {}, "users": {}}
    for path in (Path(p).expanduser() for p in paths):
        if not path.exists():
            continue
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CredentialsError(f"cannot read the kubeconfig {path}: {exc}") from None
        current = current or config.get("current-context")
        for section, items in named.items():
            singular = section[:-1]
            for item in config.get(section) or []:
                items.setdefault(item["name"], {**(item.get(singular) or {}), "_dir": path.parent})
    current = context or current
    if not current:
        raise CredentialsError(
            f"no current context in the kubeconfig ({os.pathsep.join(map(str, paths))}); "
            "outside a cluster a client needs KUBECONFIG or ~/.kube/config"
        )
    found = _entry(named, "contexts", current)
    cluster = _entry(named, "clusters", found.get("cluster", ""))
    user_name = found.get("user", "")
    user = _entry(named, "users", user_name)
    if "auth-provider" in user or ("exec" in user and not allow_exec):
        plugin = "exec" if "exec" in user else "auth-provider"
        runs = "the operator does not run" if plugin == "exec" else "kubectl dropped in 1.26"
        raise CredentialsError(
            f"kubeconfig user {user_name!r} uses {plugin!r}, which {runs}: "
            "give it a token or a client certificate"
        )
    token_file = user.get("tokenFile")
    credentials = Credentials(
        server=str(cluster.get("server") or ""),
        ca_pem=_pem(cluster, "certificate-authority"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_pem=_pem(user, "client-certificate"),
        key_pem=_pem(user, "client-key"),
        token=user.get("token"),
        token_path=_relative(user, token_file) if token_file else None,
        namespace=found.get("namespace"),
        context=current,
    )
    if "exec" in user:
        exec_plugin = ExecPlugin.from_kubeconfig(user_name, user, cluster, credentials)
        given = exec_plugin.run()
        credentials.exec_plugin = exec_plugin
        credentials.token, credentials.token_expires = given.token, given.expires
        if given.cert_pem:
            credentials.cert_pem, credentials.key_pem = given.cert_pem, given.key_pem
    return credentials


@dataclass(frozen=True)
class ExecCredential:
    """What an exec plugin printed: a token, or a client certificate and key (PEM)."""

    token: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    expires: datetime | None = None


@dataclass(frozen=True)
class ExecPlugin:
    """A kubeconfig user's `exec` section (client.authentication.k8s.io v1 or v1beta1), run as
    kubectl runs it: its env on top of ours, KUBERNETES_EXEC_INFO, and the terminal's stdin only
    when it is interactive (never our piped stdin: `aiagent chat` reads that)."""

    user: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = EXEC_API_VERSIONS[0]
    interactive_mode: str = "IfAvailable"  # Never | IfAvailable | Always
    install_hint: str = ""
    cluster: dict[str, Any] | None = None  # spec.cluster, when provideClusterInfo

    @classmethod
    def from_kubeconfig(
        cls, user: str, entry: dict[str, Any], cluster: dict[str, Any], credentials: Credentials
    ) -> ExecPlugin:
        spec: dict[str, Any] = entry["exec"] or {}
        api_version = spec.get("apiVersion") or ""
        if api_version not in EXEC_API_VERSIONS:
            raise CredentialsError(
                f"kubeconfig user {user!r}: exec apiVersion {api_version!r} is not one of "
                + ", ".join(EXEC_API_VERSIONS)
            )
        command = str(spec.get("command") or "")
        if not command:
            raise CredentialsError(f"kubeconfig user {user!r}: exec has no command")
        if os.sep in command and not Path(command).expanduser().is_absolute():
            command = str(_relative(entry, command))  # as kubectl: relative to the kubeconfig
        mode = spec.get("interactiveMode") or "IfAvailable"
        if mode not in ("Never", "IfAvailable", "Always"):
            raise CredentialsError(f"kubeconfig user {user!r}: unknown interactiveMode {mode!r}")
        info: dict[str, Any] | None = None
        if spec.get("provideClusterInfo"):
            info = {"server": credentials.server, "insecure-skip-tls-verify": credentials.insecure}
            if credentials.ca_pem:
                info["certificate-authority-data"] = base64.b64encode(
                    credentials.ca_pem.encode()
                ).decode()
            for extension in cluster.get("extensions") or []:
                if extension.get("name") == "client.authentication.k8s.io/exec":
                    info["config"] = extension.get("extension")
        return cls(
            user=user,
            command=command,
            args=tuple(str(a) for a in spec.get("args") or ()),
            env=tuple((str(e["name"]), str(e.get("value", ""))) for e in spec.get("env") or ()),
            api_version=api_version,
            interactive_mode=mode,
            install_hint=str(spec.get("installHint") or ""),
            cluster=info,
        )

    def run(self) -> ExecCredential:
        interactive = self.interactive_mode != "Never" and sys.stdin.isatty()
        if self.interactive_mode == "Always" and not interactive:
            raise self._error("needs a terminal (interactiveMode Always) and stdin is not one")
        spec: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            spec["cluster"] = self.cluster
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **dict(self.env), "KUBERNETES_EXEC_INFO": json.dumps(info)}
        executable = shutil.which(self.command) if os.sep not in self.command else self.command
        if executable is None or not Path(executable).exists():
            hint = f": {self.install_hint.strip()}" if self.install_hint.strip() else ""
            raise self._error(f"{self.command!r} is not found{hint}")
        try:
            # Interactive, the plugin talks to the person through our terminal (stdin, stderr);
            # otherwise its stderr is kept for the error message.
            done = subprocess.run(
                [executable, *self.args],
                env=env,
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None if interactive else subprocess.PIPE,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise self._error(f"cannot run {self.command!r}: {exc}") from None
        if done.returncode != 0:
            said = (done.stderr or "").strip().splitlines()
            detail = f": {said[-1]}" if said else ""
            raise self._error(f"{self.command!r} failed with exit status {done.returncode}{detail}")
        return self._parse(done.stdout)

    def _parse(self, output: str) -> ExecCredential:
        try:
            credential = json.loads(output)
        except json.JSONDecodeError:
            raise self._error(f"{self.command!r} printed no ExecCredential JSON") from None
        if not isinstance(credential, dict) or credential.get("kind") != "ExecCredential":
            raise self._error(f"{self.command!r} printed something else than an ExecCredential")
        if credential.get("apiVersion") != self.api_version:
            raise self._error(
                f"{self.command!r} answered {credential.get('apiVersion')!r}, "
                f"not the {self.api_version!r} the kubeconfig asked for"
            )
        status = credential.get("status") or {}
        token = status.get("token") or None
        cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if bool(cert) != bool(key):
            raise self._error(
                "its ExecCredential has a client certificate or key without the other"
            )
        if not token and not cert:
            raise self._error("its ExecCredential has neither a token nor a client certificate")
        expires = None
        if stamp := status.get("expirationTimestamp"):
            try:
                expires = datetime.fromisoformat(str(stamp))
            except ValueError:
                raise self._error(f"bad expirationTimestamp {stamp!r}") from None
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
        return ExecCredential(
            token=token, cert_pem=cert or None, key_pem=key or None, expires=expires
        )

    def _error(self, problem: str) -> CredentialsError:
        return CredentialsError(f"kubeconfig user {self.user!r}: exec plugin {problem}")


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
