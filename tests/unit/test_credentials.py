"""The operator's own credentials loader (kubeconfig, ServiceAccount), and that the operator
never imports the `kubernetes` package (its import alone is ~55 MB of the operator's memory)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from aiagent_operator import credentials
from aiagent_operator.credentials import CredentialsError
from localcluster.pki import Pki

SERVER = "https://127.0.0.1:6443"


def kubeconfig(path: Path, user: dict[str, object], cluster: dict[str, object]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "here",
                "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", **cluster}}
                ],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), apiserver_ips=("127.0.0.1",))


def test_a_kubeconfig_with_inline_data_gives_a_working_tls_context(
    tmp_path: Path, pki: Pki
) -> None:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    path = kubeconfig(
        tmp_path / "config",
        {"client-certificate-data": b64(pki.admin_cert), "client-key-data": b64(pki.admin_key)},
        {"certificate-authority-data": b64(pki.ca_cert)},
    )
    found = credentials.from_kubeconfig([path])
    assert found.server == SERVER
    assert found.ca_pem == pki.ca_cert.read_text()
    assert found.cert_pem == pki.admin_cert.read_text()
    context = found.ssl_context()  # loads the CA and the client certificate, or raises
    assert context.verify_mode.name == "CERT_REQUIRED"
    kopf = found.for_kopf()
    assert kopf["certificate_data"] == pki.admin_cert.read_text() and kopf["token"] is None


def test_files_are_read_relative_to_their_kubeconfig(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    path = kubeconfig(tmp_path / "config", {"token": "t0k"}, {"certificate-authority": "ca.crt"})
    found = credentials.from_kubeconfig([path])
    assert found.ca_pem == pki.ca_cert.read_text()
    assert found.bearer_token() == "t0k"
    assert found.for_kopf()["scheme"] == "Bearer"


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    found = credentials.from_kubeconfig(
        [
            kubeconfig(
                tmp_path / "config", {"tokenFile": "token"}, {"insecure-skip-tls-verify": True}
            )
        ]
    )
    assert found.bearer_token() == "first"
    token.write_text("second\n")
    os.utime(token, (time.time() + 5, time.time() + 5))  # a new mtime, however coarse the clock
    assert found.bearer_token() == "second"
    assert found.ssl_context().verify_mode.name == "CERT_NONE"


def test_the_first_kubeconfig_of_the_list_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", {"token": "from-a"}, {})
    second = kubeconfig(tmp_path / "b", {"token": "from-b"}, {})
    assert credentials.from_kubeconfig([first, second]).token == "from-a"


@pytest.mark.parametrize("plugin", ["exec", "auth-provider"])
def test_token_plugins_are_refused_by_name(tmp_path: Path, plugin: str) -> None:
    path = kubeconfig(tmp_path / "config", {plugin: {"command": "aws"}}, {})
    with pytest.raises(CredentialsError, match=f"user 'u' uses '{plugin}'.*token or a client"):
        credentials.from_kubeconfig([path])


def test_no_kubeconfig_says_what_is_needed(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="needs KUBECONFIG or ~/.kube/config"):
        credentials.from_kubeconfig([tmp_path / "absent"])


def test_a_context_naming_a_missing_user_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {}, {})
    config = yaml.safe_load(path.read_text())
    config["users"] = []
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(CredentialsError, match="names user 'u' but has none"):
        credentials.from_kubeconfig([path])


def test_in_cluster_reads_the_service_account(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("aiagent-system")
    (tmp_path / "ca.crt").write_bytes(pki.ca_cert.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    found = credentials.in_cluster(tmp_path)
    assert found.server == "https://[fd00::1]:443"
    assert found.bearer_token() == "sa-token" and found.namespace == "aiagent-system"


def test_the_operator_never_imports_the_kubernetes_package() -> None:
    # The package is installed in the dev environment (Kopf would log in through it): the
    # operator must still not load it.
    probe = (
        "import sys, aiagent_operator.__main__, aiagent_operator.handlers; "
        "print([m for m, mod in sys.modules.items() if mod and m.split('.')[0] == 'kubernetes'])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
