"""The PKI of one local cluster: a CA, the apiserver's serving cert, client certs for admin, the
apiserver's kubelet client, the node and kube-proxy, a front-proxy CA for the aggregator
(metrics-server), and the service-account signing keys."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

APISERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _name(cn: str, *orgs: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs)


class _Authority:
    """One CA: signs certificates into files of one directory."""

    def __init__(self, directory: Path, name: str):
        self.dir = directory
        # EC keys: generating RSA keys is the slowest part of the PKI and nothing here needs RSA,
        # except the service-account signer (RS256 is the only algorithm every client accepts).
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = self._sign(self.name, self.key.public_key(), ca=True)
        self.cert_path, self.key_path = self._write(name, self.cert, self.key)

    def issue(
        self,
        file: str,
        cn: str,
        *orgs: str,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = self._sign(_name(cn, *orgs), key.public_key(), server=server, sans=sans)
        return self._write(file, cert, key)

    def _sign(
        self,
        subject: x509.Name,
        public_key: Any,
        *,
        ca: bool = False,
        server: bool = False,
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
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
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def _write(self, file: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
        cert_path, key_path = self.dir / f"{file}.crt", self.dir / f"{file}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


class Pki:
    """Every certificate and key of one run, as files under ``directory``."""

    def __init__(self, directory: Path, *, apiserver_ips: tuple[str, ...]):
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.ca = _Authority(directory, "ca")
        self.ca_cert, self.ca_key = self.ca.cert_path, self.ca.key_path
        self.server_cert, self.server_key = self.ca.issue(
            "apiserver", "kube-apiserver", server=True, dns=APISERVER_NAMES, ips=apiserver_ips
        )
        self.admin_cert, self.admin_key = self.ca.issue("admin", "admin", "system:masters")
        # logs/exec/port-forward: the apiserver calls the kubelet with this identity.
        self.kubelet_client_cert, self.kubelet_client_key = self.ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"
        )
        # The aggregator forwards requests to metrics-server with this identity.
        self.front_proxy = _Authority(directory, "front-proxy-ca")
        self.front_proxy_cert, self.front_proxy_key = self.front_proxy.issue(
            "front-proxy-client", "front-proxy-client"
        )
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"
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

    def kubeconfig(self, path: Path, server: str, cn: str, *orgs: str) -> Path:
        """A kubeconfig at ``path`` for a new client cert with this identity."""
        cert, key = self.ca.issue(path.stem, cn, *orgs)
        path.write_text(kubeconfig(server, self.ca_cert, cert_user(cert, key), cn))
        path.chmod(0o600)
        return path


def cert_user(cert: Path, key: Path) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }


def kubeconfig(server: str, ca_cert: Path, user: dict[str, str], name: str) -> str:
    """A one-cluster, one-user kubeconfig; JSON is valid YAML and needs no YAML library."""
    ca = base64.b64encode(ca_cert.read_bytes()).decode()
    name = name.replace(":", "-")
    return (
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": name,
                "clusters": [
                    {"name": name, "cluster": {"server": server, "certificate-authority-data": ca}}
                ],
                "users": [{"name": name, "user": user}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            },
            indent=2,
        )
        + "\n"
    )
