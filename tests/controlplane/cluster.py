"""A real, local Kubernetes control plane for end-to-end tests, without Docker.

Runs the binaries that ``build.sh`` compiles (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok) as child processes on free loopback ports, with certificates and an
``admin.kubeconfig`` generated in a per-run work directory. kwok plays the kubelet for a few fake
nodes, so pods scheduled there become Running and Ready without running anything.

    with LocalControlPlane(bin_dir) as cp:
        subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "nodes"])

Every component runs in its own process group and is killed with its group on ``stop()``, on an
exception, on SIGINT/SIGTERM, at interpreter exit, and (Linux) when the starting thread dies.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
DEFAULT_STAGES = HERE / "kwok-stages.yaml"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.1/16"  # kwok hands out fake pod IPs from here; must not overlap SERVICE_CIDR
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
FAKE_NODE_RESOURCES = {"cpu": "32", "memory": "256Gi", "pods": "110"}


def build_binaries(*, timeout: float | None = None) -> Path:
    """Run build.sh (a no-op when the cache is warm) and return its bin dir.

    Progress goes to our stderr; a cold build takes tens of minutes, so callers may want a timeout.
    """
    out = subprocess.run(
        ["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise ControlPlaneError(
            f"build.sh failed with exit code {out.returncode} (see its output above)"
        )
    return Path(out.stdout.strip().splitlines()[-1])


def cached_bin_dir() -> Path:
    """Where build.sh puts (or has put) the binaries for the current pins, without building."""
    out = subprocess.run(
        ["bash", str(HERE / "build.sh"), "--print-dir"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


class ControlPlaneError(RuntimeError):
    """The control plane failed to start or a component died; the message carries its log tail."""


def free_port() -> int:
    """A port nothing listens on right now (a small race remains until the component binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


try:  # loaded here, not in the forked child, where loading a library is not safe
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    """preexec_fn: have Linux SIGKILL the child when the thread that started it dies (even by
    SIGKILL), so a killed test run leaves no apiserver behind."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class _Certs:
    """The PKI of one run: a CA, the apiserver's serving cert, an admin client cert, SA keys."""

    def __init__(self, directory: Path):
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_cert, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.server_cert, self.server_key = directory / "apiserver.crt", directory / "apiserver.key"
        self.admin_cert, self.admin_key = directory / "admin.crt", directory / "admin.key"
        self.sa_pub, self.sa_key = directory / "sa.pub", directory / "sa.key"

        # EC keys: generating RSA keys is the slowest part of the PKI and nothing here needs RSA,
        # except the service-account signer (RS256 is the only algorithm every client accepts).
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiagent-local-ca")])
        ca = self._sign(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
        self._write(self.ca_cert, self.ca_key, ca, ca_key)

        key = ec.generate_private_key(ec.SECP256R1())
        sans = [
            x509.DNSName(n)
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1")]
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        cert = self._sign(name, key.public_key(), ca_name, ca_key, sans=sans, server=True)
        self._write(self.server_cert, self.server_key, cert, key)

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
            ]
        )
        cert = self._sign(name, key.public_key(), ca_name, ca_key)
        self._write(self.admin_cert, self.admin_key, cert, key)

        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key.write_bytes(
            sa.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    @staticmethod
    def _sign(subject, public_key, issuer, issuer_key, *, ca=False, sans=None, server=False):
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            usage = x509.oid.ExtendedKeyUsageOID
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([usage.SERVER_AUTH] if server else [usage.CLIENT_AUTH]),
                critical=False,
            )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    @staticmethod
    def _write(cert_path: Path, key_path: Path, cert, key) -> None:
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)


def _kubeconfig(server: str, ca_cert: Path, user: dict, name: str) -> str:
    """A one-cluster, one-user kubeconfig; JSON is valid YAML and needs no YAML library."""
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    return (
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": name,
                "clusters": [
                    {
                        "name": name,
                        "cluster": {"server": server, "certificate-authority-data": b64(ca_cert)},
                    }
                ],
                "users": [{"name": name, "user": user}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            },
            indent=2,
        )
        + "\n"
    )


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, on loopback.

    Attributes set by ``start()``: ``server`` (https URL), ``kubeconfig`` (admin, system:masters),
    ``ca_cert``, ``workdir``, ``log_dir`` (one ``<component>.log`` each), ``node_names``.
    """

    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

    def __init__(
        self,
        bin_dir: Path | str,
        workdir: Path | str | None = None,
        nodes: int = 3,
        *,
        stages: Path | str = DEFAULT_STAGES,
        startup_timeout: float = 90,
        keep_workdir: bool = False,
    ):
        self.bin_dir = Path(bin_dir)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="aiagent-cp-"))
        self.nodes = nodes
        self.stages = Path(stages)
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir
        self.log_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self.server = ""
        pki = self.workdir / "pki"  # filled by start()
        self.ca_cert, self.ca_key = pki / "ca.crt", pki / "ca.key"
        self.admin_cert, self.admin_key = pki / "admin.crt", pki / "admin.key"
        self.sa_key, self.sa_pub = pki / "sa.key", pki / "sa.pub"
        self._procs: dict[str, subprocess.Popen] = {}
        self._log_files: list = []
        self._ssl: ssl.SSLContext | None = None
        self._old_sigterm = None
        self._started = False

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalControlPlane:
        """Start every component; return once the fake nodes are Ready. Cleans up on failure."""
        if self._started:
            return self
        self._started = True
        missing = [c for c in self.COMPONENTS if not (self.bin_dir / c).is_file()]
        if missing:
            raise ControlPlaneError(f"missing binaries in {self.bin_dir}: {missing}; run build.sh")
        atexit.register(self.stop)
        self._trap_sigterm()
        try:
            self._start()
        except ControlPlaneError as e:
            self.keep_workdir = True  # the full logs are what explains a failed start
            self.stop()
            raise ControlPlaneError(f"{e}\n(all logs kept in {self.log_dir})") from None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every component's process group and wait for it; safe to call more than once."""
        # Clients first, then the apiserver, then its storage: nothing logs errors about a peer
        # that vanished first, and etcd is never killed under a writing apiserver.
        for group in (
            ("kwok", "kube-scheduler", "kube-controller-manager"),
            ("kube-apiserver",),
            ("etcd",),
        ):
            procs = [(n, self._procs.pop(n)) for n in group if n in self._procs]
            for _, proc in procs:
                self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for _, proc in procs:
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
                    proc.wait()
                # Anything the component forked is in its group; make sure none outlives it.
                self._signal(proc, signal.SIGKILL)
        for f in self._log_files:
            f.close()
        self._log_files = []
        if self._old_sigterm is not None:
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except ValueError:
                pass
            self._old_sigterm = None
        atexit.unregister(self.stop)
        if self._own_workdir and not self.keep_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _trap_sigterm(self) -> None:
        """Turn SIGTERM into SystemExit so `with` blocks and atexit run (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):

            def on_sigterm(signum, frame):
                raise SystemExit(128 + signum)

            self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session=True: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass

    def _start(self) -> None:
        # Every start is a fresh cluster, even in a reused workdir: old etcd data would carry
        # objects and tokens signed by the previous run's keys.
        for stale in ("etcd", "logs"):
            shutil.rmtree(self.workdir / stale, ignore_errors=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_files = []
        certs = _Certs(self.workdir / "pki")
        self._ssl = ssl.create_default_context(cafile=str(certs.ca_cert))
        self._ssl.load_cert_chain(certs.admin_cert, certs.admin_key)

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig.write_text(
            _kubeconfig(
                self.server,
                certs.ca_cert,
                {
                    "client-certificate-data": base64.b64encode(
                        certs.admin_cert.read_bytes()
                    ).decode(),
                    "client-key-data": base64.b64encode(certs.admin_key.read_bytes()).decode(),
                },
                "aiagent-local",
            )
        )
        self.kubeconfig.chmod(0o600)
        kc = str(self.kubeconfig)
        deadline = time.monotonic() + self.startup_timeout

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                "--name=default",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data is disposable: skipping fsync makes writes (and startup) much faster.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait(
            "etcd", deadline, lambda: self._get_json(f"{etcd_url}/health").get("health") == "true"
        )

        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver'}",
                f"--tls-cert-file={certs.server_cert}",
                f"--tls-private-key-file={certs.server_key}",
                f"--client-ca-file={certs.ca_cert}",
                "--authorization-mode=Node,RBAC",
                # As in most production clusters: setting blockOwnerDeletion needs the
                # owner's finalizers permission, so the chart's RBAC is tested for it.
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={certs.sa_pub}",
                f"--service-account-signing-key-file={certs.sa_key}",
                "--allow-privileged=true",
                # No kubelet serves the `kubernetes` Service's endpoints; don't reconcile them.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
        )
        self._wait("kube-apiserver", deadline, lambda: self._get(f"{self.server}/readyz") == 200)

        for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
            # No --authentication/authorization-kubeconfig: delegated auth wants a front-proxy CA
            # we don't have, and /healthz, the only endpoint we call, is always allowed.
            args = [
                f"--kubeconfig={kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / name}",
            ]
            if name == "kube-controller-manager":
                args += [
                    "--controllers=*",
                    f"--root-ca-file={certs.ca_cert}",
                    f"--service-account-private-key-file={certs.sa_key}",
                    "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={certs.ca_cert}",
                    f"--cluster-signing-key-file={certs.ca_key}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                ]
            self._spawn(name, args)
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kc}",
                f"--config={self.stages}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{kwok_port}",
                f"--cidr={POD_CIDR}",
                # The fake nodes' InternalIP (and pods' hostIP): loopback, where nothing answers.
                "--node-ip=127.0.0.1",
            ],
        )
        insecure = ssl.create_default_context()  # kcm and scheduler serve self-signed certs
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        self._wait(
            "kube-controller-manager",
            deadline,
            lambda: self._get(f"https://127.0.0.1:{kcm_port}/healthz", insecure) == 200,
        )
        self._wait(
            "kube-scheduler",
            deadline,
            lambda: self._get(f"https://127.0.0.1:{sched_port}/healthz", insecure) == 200,
        )
        self._wait(
            "kwok", deadline, lambda: self._get(f"http://127.0.0.1:{kwok_port}/healthz") == 200
        )

        for name in self.node_names:
            self.request("POST", "/api/v1/nodes", self._node_manifest(name))
        self._wait("kwok", deadline, self._nodes_schedulable, what="fake nodes Ready and untainted")
        # Pods can only be created once the namespace has its default ServiceAccount.
        self._wait(
            "kube-controller-manager",
            deadline,
            lambda: (
                self._get(f"{self.server}/api/v1/namespaces/default/serviceaccounts/default") == 200
            ),
            what="default ServiceAccount",
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")
        self._log_files.append(log)
        self._procs[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _wait(self, component: str, deadline: float, ready, what: str = "ready") -> None:
        """Poll `ready()` until true; fail fast if any component exited, or at the deadline."""
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ControlPlaneError(
                        f"{name} exited with code {proc.returncode} while waiting "
                        f"for {component} {what}\n{self.log_tail(name)}"
                    )
            try:
                if ready():
                    return
            except (OSError, ValueError, KeyError):
                pass  # not listening yet, or a half-started server's answer
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self.startup_timeout:.0f}s waiting for "
                    f"{component} {what}\n{self.log_tail(component)}"
                )
            time.sleep(0.2)

    def _nodes_schedulable(self) -> bool:
        items = self.request("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")["items"]
        ready = {
            n["metadata"]["name"]
            for n in items
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in n.get("status", {}).get("conditions", [])
            )
            # The node lifecycle controller lifts this taint a few seconds after Ready; until then
            # the scheduler would leave pods Pending.
            and not any(
                t["key"] == "node.kubernetes.io/not-ready"
                for t in n.get("spec", {}).get("taints", [])
            )
        }
        return ready >= set(self.node_names)

    @staticmethod
    def _node_manifest(name: str) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/role": "agent",
                },
            },
            "spec": {"taints": [FAKE_NODE_TAINT]},
            "status": {"allocatable": FAKE_NODE_RESOURCES, "capacity": FAKE_NODE_RESOURCES},
        }

    # -- talking to the apiserver ---------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict:
        """One admin call to the apiserver; returns the decoded JSON answer, raises HTTPError.

        For PATCH pass e.g. content_type="application/merge-patch+json".
        """
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, context=self._ssl, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def _get(self, url: str, context: ssl.SSLContext | None = None) -> int:
        try:
            with urllib.request.urlopen(url, context=context or self._ssl, timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    @staticmethod
    def _get_json(url: str) -> dict:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, expiration_seconds: int = 86400
    ) -> Path:
        """Mint a token for an existing ServiceAccount (TokenRequest API) and write a kubeconfig.

        The kubeconfig acts exactly as that ServiceAccount, so RBAC is what the tests exercise.
        """
        token = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )["status"]["token"]
        path = self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(
            _kubeconfig(self.server, self.ca_cert, {"token": token}, f"{namespace}-{name}")
        )
        path.chmod(0o600)
        return path

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """os.environ for a client subprocess: KUBECONFIG set, the built helm/kwok first on PATH."""
        return {
            **os.environ,
            "KUBECONFIG": str(kubeconfig or self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- diagnostics ----------------------------------------------------------------------------

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def log_tail(self, component: str, lines: int = 40) -> str:
        """The last lines of one component's log, headed by its path (for error messages)."""
        path = self.log_path(component)
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = ["(no log)"]
        return f"--- {path} (last {lines} lines) ---\n" + "\n".join(text)

    def logs(self, lines: int = 40) -> str:
        """Log tails of every component, for a failing test to print."""
        return "\n".join(self.log_tail(c, lines) for c in self.COMPONENTS)

    def check_alive(self) -> None:
        """Raise ControlPlaneError if a component has exited since start."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode}\n{self.log_tail(name)}"
                )
