"""The local cluster's pure parts: the egress guard's rules, the node's rendered configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster import guard
from localcluster.controlplane import SERVICE_CIDR
from localcluster.hostnet import HostNetwork, split_rule


def test_guard_rejects_untranslated_service_addresses_and_other_interfaces() -> None:
    rules = guard.ruleset("aiagent0", SERVICE_CIDR, ["10.244.0.0/16", "10.245.0.0/24"])
    assert f"elements = {{ {SERVICE_CIDR} }}" in rules
    # An address still in the service range after NAT is refused outright, from here and pods.
    assert rules.count("ip daddr @services counter reject") == 1
    # Pod and node ranges only towards the bridge or loopback; the wire-side counter drops.
    assert 'oifname != { "aiagent0", "lo" } counter reject' in rules
    assert 'oifname != { "aiagent0", "lo" } counter name leaked drop' in rules
    # Forwarding only bridge to bridge: pods reach nothing outside.
    assert 'iifname "aiagent0" counter reject' in rules


def test_node_ip_is_the_first_address_of_its_range() -> None:
    assert HostNetwork("10.245.0.0/24", SERVICE_CIDR).node_ip == "10.245.0.1"


def test_iptables_rules_are_split_like_a_shell() -> None:
    rule = '-A INPUT -m comment --comment "kubernetes firewall" -j KUBE-FIREWALL'
    assert split_rule(rule)[-4:] == ["--comment", "kubernetes firewall", "-j", "KUBE-FIREWALL"]


@pytest.fixture
def real_node(tmp_path: Path):  # type: ignore[no-untyped-def]
    from localcluster.node import RealNode

    class FakePki:
        ca_cert = tmp_path / "ca.crt"

    class FakeControlPlane:
        pki = FakePki()

    return RealNode(
        Path("/bin"), tmp_path, FakeControlPlane(), HostNetwork("10.245.0.0/24", SERVICE_CIDR)
    )  # type: ignore[arg-type]


def test_kubelet_keeps_its_hands_off_the_host(real_node) -> None:  # type: ignore[no-untyped-def]
    config = real_node.kubelet_config()
    # It would otherwise rewrite kernel settings and OOM scores the VM does not let it change.
    assert config["protectKernelDefaults"] is True
    assert config["oomScoreAdj"] == 0
    assert config["cgroupRoot"] == "/aiagent"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["address"] == "10.245.0.1"


def test_cni_never_masquerades_pods_to_the_outside(real_node) -> None:  # type: ignore[no-untyped-def]
    bridge = real_node.cni_config()["plugins"][0]
    assert bridge["ipMasq"] is False and bridge["bridge"] == "aiagent0"
    assert bridge["isDefaultGateway"] is True  # Services are routed through the host
    json.dumps(real_node.cni_config())  # valid JSON for libcni


def test_kube_proxy_leaves_conntrack_settings_alone(real_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = real_node.kube_proxy_config(tmp_path / "kc", 1234)
    assert config["mode"] == "nftables"
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["nodePortAddresses"] == ["10.245.0.1/32"]


def test_containerd_restricts_oom_score_changes(real_node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    toml = real_node.containerd_config(tmp_path)
    assert "restrict_oom_score_adj = true" in toml
    assert "netns_mounts_under_state_dir = true" in toml
