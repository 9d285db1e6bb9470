"""The real node's host networking: its bridge, the routes to it, forwarding, and the firewall
chains the kubelet and CNI plugins leave behind. Everything set up here is undone by ``down()``.

The node gets a bridge of its own (the kubelet refuses a loopback node IP): the node IP is the
bridge's address, pods are attached to the same bridge by the CNI bridge plugin, and the service
range is routed to the bridge too, so that a ClusterIP's packet takes the bridge before and after
kube-proxy translates it (and the egress guard sees one consistent interface).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

from .procs import run

BRIDGE = "aiagent0"
FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")
# Chains the kubelet (KUBE-FIREWALL, canaries) and the CNI portmap/bridge plugins create.
LEFTOVER_CHAINS = re.compile(r"^(KUBE-|CNI-)")


@dataclasses.dataclass
class HostNetwork:
    node_cidr: str  # e.g. 10.245.0.0/24: the node IP is its first address, pods get the rest
    service_cidr: str
    saved_forwarding: str | None = None

    @property
    def node_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.node_cidr).hosts()))

    def up(self) -> None:
        self.down_bridge()  # a stale bridge from a killed run
        prefix = ipaddress.ip_network(self.node_cidr).prefixlen
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{self.node_ip}/{prefix}", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        run(["ip", "route", "add", self.service_cidr, "dev", BRIDGE, "src", self.node_ip])
        # Pod -> ClusterIP -> pod is routed through the host. The guard allows forwarding only
        # bridge to bridge, so turning this on opens nothing else.
        self.saved_forwarding = FORWARD_SYSCTL.read_text().strip()
        FORWARD_SYSCTL.write_text("1")

    def down(self) -> None:
        self.down_bridge()
        if self.saved_forwarding is not None:
            FORWARD_SYSCTL.write_text(self.saved_forwarding)
            self.saved_forwarding = None
        remove_leftover_chains()

    @staticmethod
    def down_bridge() -> None:
        # Deleting the device takes its address and the service route with it.
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run(["ip", "link", "delete", BRIDGE], check=False)


def remove_leftover_chains() -> None:
    """Flush and delete every KUBE-*/CNI-* iptables chain (IPv4 and IPv6, nft and legacy backends),
    with the rules that jump to them."""
    for save in (
        "iptables-save",
        "ip6tables-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ):
        binary = save.replace("-save", "")
        dump = run([save], check=False)
        if dump.returncode != 0:
            continue
        table = ""
        jumps: list[tuple[str, str]] = []
        chains: list[tuple[str, str]] = []
        for line in dump.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":") and LEFTOVER_CHAINS.match(line[1:]):
                chains.append((table, line[1:].split()[0]))
            elif line.startswith("-A "):
                parts = line.split()
                target = parts[parts.index("-j") + 1] if "-j" in parts else ""
                if LEFTOVER_CHAINS.match(target) and not LEFTOVER_CHAINS.match(parts[1]):
                    jumps.append((table, line[3:]))
        for table, rule in jumps:
            run([binary, "-t", table, "-D", *split_rule(rule)], check=False)
        for table, chain in chains:
            run([binary, "-t", table, "-F", chain], check=False)
        for table, chain in chains:
            run([binary, "-t", table, "-X", chain], check=False)


# Tables that iptables-nft, kube-proxy (nftables mode) and the kubelet create on first use.
OWNED_TABLES = re.compile(r"^(ip|ip6|inet) (filter|nat|mangle|raw|security|kube-proxy|kubelet)$")


def nft_tables() -> set[str]:
    """`family name` of every nftables table on the host."""
    out = run(["nft", "list", "tables"], check=False).stdout
    return {line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()}


def remove_new_tables(before: set[str]) -> None:
    """Delete the tables the node's components created (those absent before it started)."""
    for table in sorted(nft_tables() - before):
        if OWNED_TABLES.match(table):
            run(["nft", "delete", "table", *table.split()], check=False)


def split_rule(rule: str) -> list[str]:
    """iptables-save quotes comments; shlex-like split that keeps quoted words together."""
    import shlex

    return shlex.split(rule)
