"""The egress guard: no packet for the cluster's address ranges ever leaves this machine.

Service, pod and node addresses are private or virtual ranges that also exist outside. A packet
to a ClusterIP that kube-proxy has not (yet) translated, or to a kwok pod's fake IP, would follow
the default route out of the machine. So, before any component starts, one nftables table:

- ``output``/``forward``: a destination still in the service range after NAT (an untranslated
  ClusterIP) is rejected at once; a pod or node address is allowed only towards the node's
  bridge or loopback. Forwarding is allowed only bridge to bridge (pods to pods and Services),
  so pods reach nothing outside either.
- ``postrouting``: the last hook before a wire; anything for these ranges on another interface is
  counted and dropped. The tests read that counter (``leaked()``): it must stay 0.

The table is ours alone (``inet aiagent_guard``) and deleted at teardown.
"""

from __future__ import annotations

import json
import shutil

from .procs import ClusterError, run

TABLE = "aiagent_guard"


def ruleset(bridge: str, service_cidr: str, private_cidrs: list[str]) -> str:
    """The guard as an nft script (pure, so a unit test can read it)."""
    private = ", ".join(private_cidrs)
    allowed = f'{{ "{bridge}", "lo" }}'
    return f"""
table inet {TABLE} {{
    set services {{ type ipv4_addr; flags interval; elements = {{ {service_cidr} }} }}
    set cluster {{ type ipv4_addr; flags interval; elements = {{ {service_cidr}, {private} }} }}
    chain output {{
        type filter hook output priority filter; policy accept;
        ip daddr @services counter reject
        ip daddr @cluster oifname != {allowed} counter reject
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{bridge}" oifname "{bridge}" ip daddr != @services accept
        ip daddr @cluster counter reject
        iifname "{bridge}" counter reject
        oifname "{bridge}" counter reject
    }}
    chain postrouting {{
        type filter hook postrouting priority 1000; policy accept;
        ip daddr @cluster oifname != {allowed} counter name leaked drop
    }}
    counter leaked {{ }}
}}
"""


def missing() -> str | None:
    if not shutil.which("nft"):
        return "nft is missing (Debian package nftables)"
    return None


def install(bridge: str, service_cidr: str, private_cidrs: list[str]) -> None:
    """Install the guard (replacing a stale one from a killed run)."""
    remove()
    run(["nft", "-f", "-"], input=ruleset(bridge, service_cidr, private_cidrs))


def remove() -> None:
    run(["nft", "delete", "table", "inet", TABLE], check=False)


def installed() -> bool:
    return run(["nft", "list", "table", "inet", TABLE], check=False).returncode == 0


def leaked() -> int:
    """Packets for the cluster's ranges that reached a wire other than the bridge (must be 0)."""
    out = run(["nft", "--json", "list", "counter", "inet", TABLE, "leaked"]).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            packets: int = item["counter"]["packets"]
            return packets
    raise ClusterError(f"no counter in {out!r}")


def rejected() -> int:
    """Packets the guard refused so far (output and forward rules)."""
    out = run(["nft", "--json", "list", "table", "inet", TABLE]).stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and rule["chain"] in ("output", "forward"):
            for expr in rule["expr"]:
                if "counter" in expr and isinstance(expr["counter"], dict):
                    total += expr["counter"].get("packets", 0)
    return total
