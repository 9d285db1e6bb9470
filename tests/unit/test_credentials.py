"""The credentials loader (kubeconfig, ServiceAccount; exec plugins for `aiagent`), and that the
operator never imports the `kubernetes` package (its import alone is ~55 MB of its memory)."""

from __future__ import annotations

import base64
import json
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


# Exec plugins: real executables (small Python scripts), run as kubectl runs them.

PLUGIN = """#!{python}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
seen = {{"args": sys.argv[1:], "env": os.environ.get("PLUGIN_ENV"), "info": info,
         "stdin": sys.stdin.read()}}
runs = os.path.join(os.path.dirname(sys.argv[0]), "runs")
with open(runs, "a") as f:
    f.write(json.dumps(seen) + "\\n")
count = sum(1 for _ in open(runs))
{body}
"""


def exec_plugin(directory: Path, body: str, name: str = "plugin") -> Path:
    script = directory / name
    script.write_text(PLUGIN.format(python=sys.executable, body=body))
    script.chmod(0o755)
    return script


def runs(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (directory / "runs").read_text().splitlines()]


def print_credential(api_version: str, status: str) -> str:
    return (
        f'print(json.dumps({{"apiVersion": "{api_version}", "kind": "ExecCredential", '
        f'"status": {status}}}))'
    )


V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def test_an_exec_plugin_gives_a_token_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    exec_plugin(tmp_path / "bin", print_credential(V1, '{"token": f"minted-{count}"}'))
    exec_spec = {
        "apiVersion": V1,
        "command": "./bin/plugin",  # relative to the kubeconfig, as kubectl resolves it
        "args": ["get-token", "--cluster", "prod"],
        "env": [{"name": "PLUGIN_ENV", "value": "from-kubeconfig"}],
        "interactiveMode": "Never",
        "provideClusterInfo": True,
    }
    path = kubeconfig(tmp_path / "config", {"exec": exec_spec}, {"insecure-skip-tls-verify": True})
    with pytest.raises(CredentialsError, match="uses 'exec', which the operator does not run"):
        credentials.from_kubeconfig([path])  # the operator's call: refused, as before

    found = credentials.from_kubeconfig([path], allow_exec=True)
    assert found.bearer_token() == "minted-1"
    assert found.bearer_token() == "minted-1"  # no expiry given: run once
    (seen,) = runs(tmp_path / "bin")
    assert seen["args"] == ["get-token", "--cluster", "prod"]
    assert seen["env"] == "from-kubeconfig"
    assert seen["stdin"] == ""  # never our stdin (`aiagent chat` reads it) when not interactive
    assert seen["info"] == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "spec": {
            "interactive": False,
            "cluster": {"server": SERVER, "insecure-skip-tls-verify": True},
        },
    }


def test_an_exec_plugin_can_give_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    cert, key = json.dumps(pki.admin_cert.read_text()), json.dumps(pki.admin_key.read_text())
    status = f'{{"clientCertificateData": {cert}, "clientKeyData": {key}}}'
    script = exec_plugin(tmp_path, print_credential(V1BETA1, status))
    exec_spec = {"apiVersion": V1BETA1, "command": str(script)}  # no interactiveMode: v1beta1
    ca = base64.b64encode(pki.ca_cert.read_bytes()).decode()
    path = kubeconfig(tmp_path / "config", {"exec": exec_spec}, {"certificate-authority-data": ca})
    found = credentials.from_kubeconfig([path], allow_exec=True)
    assert found.token is None and found.cert_pem == pki.admin_cert.read_text()
    found.ssl_context()  # the certificate and key load
    assert runs(tmp_path)[0]["info"] == {
        "apiVersion": V1BETA1,
        "kind": "ExecCredential",
        "spec": {"interactive": False},  # IfAvailable, and stdin is no terminal here
    }


def test_an_expired_exec_token_is_minted_again(tmp_path: Path) -> None:
    expired = '{"token": f"minted-{count}", "expirationTimestamp": "2020-01-01T00:00:00Z"}'
    script = exec_plugin(tmp_path, print_credential(V1, expired))
    exec_spec = {"apiVersion": V1, "command": str(script), "interactiveMode": "IfAvailable"}
    found = credentials.from_kubeconfig(
        [kubeconfig(tmp_path / "config", {"exec": exec_spec}, {})], allow_exec=True
    )
    assert found.token == "minted-1"
    assert found.bearer_token() == "minted-2"
    assert len(runs(tmp_path)) == 2


@pytest.mark.parametrize(
    ("body", "exec_extra", "problem"),
    [
        (
            "sys.stderr.write('token expired, run: cloud login\\n'); sys.exit(3)",
            {},
            r"exec plugin '\S*/plugin' failed with exit status 3: token expired, run: cloud login",
        ),
        ("print('not json')", {}, "printed no ExecCredential JSON"),
        (print_credential(V1BETA1, '{"token": "t"}'), {}, "answered '.*v1beta1', not the '.*/v1'"),
        (print_credential(V1, "{}"), {}, "neither a token nor a client certificate"),
        (
            print_credential(V1, '{"token": "t"}'),
            {"interactiveMode": "Always"},
            "needs a terminal \\(interactiveMode Always\\)",
        ),
    ],
    ids=["fails", "not-json", "other-version", "empty", "always-interactive"],
)
def test_exec_plugin_failures_are_one_clear_line(
    tmp_path: Path, body: str, exec_extra: dict[str, str], problem: str
) -> None:
    exec_plugin(tmp_path, body)
    exec_spec = {"apiVersion": V1, "command": "./plugin", "interactiveMode": "Never", **exec_extra}
    path = kubeconfig(tmp_path / "config", {"exec": exec_spec}, {})
    with pytest.raises(CredentialsError, match=f"^kubeconfig user 'u': .*{problem}"):
        credentials.from_kubeconfig([path], allow_exec=True)


def test_a_missing_exec_command_shows_its_install_hint(tmp_path: Path) -> None:
    exec_spec = {
        "apiVersion": V1,
        "command": "no-such-cloud-cli-4f1e",
        "interactiveMode": "Never",
        "installHint": "install it from https://cloud.example/cli",
    }
    path = kubeconfig(tmp_path / "config", {"exec": exec_spec}, {})
    message = "'no-such-cloud-cli-4f1e' is not found: install it from https://cloud.example/cli"
    with pytest.raises(CredentialsError, match=message):
        credentials.from_kubeconfig([path], allow_exec=True)


def test_a_context_other_than_the_current_one(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {"token": "current"}, {})
    config = yaml.safe_load(path.read_text())
    config["contexts"].append(
        {"name": "staging", "context": {"cluster": "c", "user": "v", "namespace": "team-b"}}
    )
    config["users"].append({"name": "v", "user": {"token": "staging-token"}})
    path.write_text(yaml.safe_dump(config))
    found = credentials.from_kubeconfig([path], context="staging")
    assert (found.token, found.namespace, found.context) == ("staging-token", "team-b", "staging")
    assert credentials.from_kubeconfig([path]).token == "current"
    with pytest.raises(CredentialsError, match="names context 'prod' but has none"):
        credentials.from_kubeconfig([path], context="prod")
