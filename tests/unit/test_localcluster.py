"""The local cluster's pure parts: the egress guard's rules, the node's rendered configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localcluster import guard
from localcluster.controlplane import SERVICE_CIDR, LocalControlPlane, with_flags
from localcluster.hostnet import HostNetwork, split_rule
from localcluster.procs import ClusterError


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


# -- cluster DNS (localcluster/dns.py, localcluster/coredns/) -----------------------------------


def cluster_dns(tmp_path: Path, address: str = "10.245.0.1", port: int = 53):  # type: ignore[no-untyped-def]
    from localcluster.dns import ClusterDNS

    dns = ClusterDNS(
        Path("/bin"),
        tmp_path,
        object(),  # type: ignore[arg-type]  the Corefile needs no control plane
        address,
        port,
        reverse_cidrs=[SERVICE_CIDR, "10.244.0.0/16", "10.245.0.0/24"],
    )
    dns.ready_port = 8181
    return dns


def test_reverse_zones_follow_label_boundaries() -> None:
    from localcluster.dns import reverse_zones

    assert reverse_zones("10.0.0.0/24") == ["0.0.10.in-addr.arpa"]
    assert reverse_zones("10.244.0.1/16") == ["244.10.in-addr.arpa"]  # a host address is fine
    assert reverse_zones("10.0.0.0/23") == ["0.0.10.in-addr.arpa", "1.0.10.in-addr.arpa"]
    assert reverse_zones("fd00:10::/32") == ["0.1.0.0.0.0.d.f.ip6.arpa"]


def test_cluster_dns_never_forwards(tmp_path: Path) -> None:
    corefile = cluster_dns(tmp_path).corefile()
    directives = {line.split()[0] for line in corefile.splitlines() if line.startswith("    ")}
    assert "forward" not in directives and "template" in directives
    # Every name outside the cluster's zones: an immediate NXDOMAIN from the catch-all block.
    catch_all = corefile[corefile.index(".:53 {") :]
    assert "template ANY ANY {\n        rcode NXDOMAIN" in catch_all
    # Both blocks bound to the one address; readiness on loopback, never on the pods' side.
    assert corefile.count("bind 10.245.0.1\n") == 2
    assert "ready 127.0.0.1:8181" in corefile


def test_cluster_dns_serves_the_domain_and_reverse_zones(tmp_path: Path) -> None:
    corefile = cluster_dns(tmp_path, "127.0.0.1", 5353).corefile()
    zones = "cluster.local 0.0.10.in-addr.arpa 244.10.in-addr.arpa 0.245.10.in-addr.arpa"
    assert " ".join(f"{z}:5353" for z in zones.split()) + " {" in corefile
    assert f"kubernetes {zones} {{" in corefile
    # Headless StatefulSet names come from EndpointSlice hostnames; pod-IP names only for real pods.
    assert "pods verified" in corefile and "ttl 5" in corefile
    assert f"kubeconfig {tmp_path / 'coredns' / 'coredns.kubeconfig'}" in corefile


def test_cluster_dns_rbac_only_reads() -> None:
    from localcluster.dns import rbac_manifests

    (_, role), (_, binding) = rbac_manifests()
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"list", "watch"}
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}
    ]


def test_coredns_links_only_its_directives_and_the_pinned_version() -> None:
    import re

    from localcluster.binaries import versions
    from localcluster.paths import HERE

    main = (HERE / "coredns" / "main.go").read_text()
    linked = set(re.findall(r'_ "github.com/coredns/coredns/plugin/(\w+)"', main))
    directives = re.search(r"directives = \[\]string\{(.*?)\}", main, re.S)
    assert directives is not None
    assert set(re.findall(r'"(\w+)"', directives.group(1))) == linked
    # Nothing that asks another server: no forward, grpc, etcd, cloud DNS or secondary.
    assert not linked & {"forward", "grpc", "etcd", "route53", "azure", "clouddns", "secondary"}
    gomod = (HERE / "coredns" / "go.mod").read_text()
    assert f"require github.com/coredns/coredns {versions()['COREDNS_VERSION']}\n" in gomod


def test_hoststate_counts_our_descendants_and_orphans(tmp_path: Path) -> None:
    """A cluster binary we started (even through a shell) is ours; so is one left orphaned."""
    import shutil
    import subprocess
    import time

    from localcluster import hoststate

    fake = tmp_path / "kwok"  # a name from hoststate.BINARIES, on a harmless program
    shutil.copy("/bin/sleep", fake)
    child = subprocess.Popen(["bash", "-c", f"{fake} 30; true"])
    subprocess.run(["bash", "-c", f"{fake} 30 &"], check=True)  # bash exits: its child is orphaned
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [p for p in hoststate._our_processes() if p.startswith("kwok ")]
            if len(found) == 2:
                break
            time.sleep(0.05)
        assert len(found) == 2, found
    finally:
        import os
        import signal

        for entry in hoststate._our_processes():
            if entry.startswith("kwok "):  # only the fakes made here: their exe is in tmp_path
                pid = int(entry.split("pid ")[1].rstrip(")"))
                if os.readlink(f"/proc/{pid}/exe") == str(fake):
                    os.kill(pid, signal.SIGKILL)
        child.wait(timeout=10)


def test_audit_events_are_read_on_and_a_rotated_log_is_an_error(tmp_path: Path) -> None:
    cp = LocalControlPlane(tmp_path / "bin", tmp_path)
    line = {"verb": "patch", "user": {"username": "u"}}
    cp.audit_log.write_text(json.dumps(line) + "\n" + json.dumps(line)[:10])  # one half-written
    events, offset = cp.audit_events()
    assert events == [line]
    with cp.audit_log.open("a") as log:
        log.write(json.dumps(line)[10:] + "\n")
    assert cp.audit_events(offset)[0] == [line]  # the rest of that line, read next time
    cp.audit_log.write_text("")  # what a rotation leaves
    with pytest.raises(ClusterError, match="rotated or truncated"):
        cp.audit_events(offset)


def test_with_flags_changes_a_flag_in_place_and_adds_new_ones() -> None:
    args = ["kube-apiserver", "--secure-port=6443", "--profiling=false", "--v"]
    changed = with_flags(args, ["--profiling=true", "--max-requests-inflight=1", "--v=2"])
    assert changed == [
        "kube-apiserver",
        "--secure-port=6443",
        "--profiling=true",
        "--v=2",
        "--max-requests-inflight=1",
    ]
    assert args[2] == "--profiling=false"  # a copy: the original command is kept
    assert with_flags(args, []) == args


def test_a_component_that_never_ran_cannot_be_stopped(tmp_path: Path) -> None:
    cp = LocalControlPlane(tmp_path / "bin", tmp_path)
    with pytest.raises(ClusterError, match="no component 'etcd'"):
        cp.stop_component("etcd")
