"""The egress guard: no packet for the cluster's address ranges ever leaves this machine.

Service, pod and node addresses are private or virtual ranges that also exist outside. A packet
to a ClusterIP that kube-proxy has not (yet) translated, or to a kwok pod's fake IP, would follow
the default route out of the machine. So, before any component starts, one nftables table:

- ``output``/``forward``: a destination still in the service range after NAT (an untranslated
  ClusterIP) is rejected at once; a pod or node address is allowed only towards the node's
  bridge or loopback. ``output-unallocated`` runs before kube-proxy (which silently drops
  packets for unallocated ClusterIPs, so a client would hang until its timeout) and refuses them
  at once; the set of allocated ClusterIPs it checks is kept current by ``ServiceWatch``.
  Forwarding is allowed only bridge to bridge (pods to pods and Services),
  so pods reach nothing outside either.
- ``postrouting``: the last hook before a wire; anything for these ranges on another interface is
  counted and dropped. The tests read that counter (``leaked()``): it must stay 0.

The table is ours alone (``inet aiagent_guard``) and deleted at teardown.
"""

from __future__ import annotations

import json
import shutil
import threading
from typing import TYPE_CHECKING, Any

from .procs import ClusterError, run

if TYPE_CHECKING:
    from .controlplane import LocalControlPlane

TABLE = "aiagent_guard"


def ruleset(bridge: str, service_cidr: str, private_cidrs: list[str]) -> str:
    """The guard as an nft script (pure, so a unit test can read it)."""
    private = ", ".join(private_cidrs)
    allowed = f'{{ "{bridge}", "lo" }}'
    return f"""
table inet {TABLE} {{
    set services {{ type ipv4_addr; flags interval; elements = {{ {service_cidr} }} }}
    set cluster {{ type ipv4_addr; flags interval; elements = {{ {service_cidr}, {private} }} }}
    set allocated {{ type ipv4_addr; }}
    chain output-unallocated {{
        type filter hook output priority -120; policy accept;
        ip daddr @services ip daddr != @allocated counter reject
    }}
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


def allocate(address: str) -> None:
    run(["nft", "add", "element", "inet", TABLE, "allocated", f"{{ {address} }}"], check=False)


def release(address: str) -> None:
    run(["nft", "delete", "element", "inet", TABLE, "allocated", f"{{ {address} }}"], check=False)


class ServiceWatch:
    """Keeps the guard's set of allocated ClusterIPs equal to the cluster's Services (a watch)."""

    def __init__(self, control_plane: LocalControlPlane):
        self.cp = control_plane
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guard-service-watch", daemon=True)
        self._synced = threading.Event()

    def start(self) -> None:
        self._thread.start()
        if not self._synced.wait(30):
            raise ClusterError("the egress guard could not list the cluster's Services")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.cp.request("GET", "/api/v1/services")
                for svc in listed["items"]:
                    self._apply("ADDED", svc)
                self._synced.set()
                self._watch(listed["metadata"]["resourceVersion"])
            except Exception:  # noqa: BLE001  the apiserver restarts or goes away: list again
                self._stop.wait(1)

    def _watch(self, version: str) -> None:
        path = f"/api/v1/services?watch=1&timeoutSeconds=30&resourceVersion={version}"
        for event in self.cp.stream(path):
            if self._stop.is_set():
                return
            self._apply(event["type"], event["object"])

    @staticmethod
    def _apply(kind: str, svc: dict[str, Any]) -> None:
        for address in (svc.get("spec") or {}).get("clusterIPs") or []:
            if ":" in address or address == "None":
                continue
            (release if kind == "DELETED" else allocate)(address)


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
        if rule and rule["chain"] in ("output-unallocated", "output", "forward"):
            for expr in rule["expr"]:
                if "counter" in expr and isinstance(expr["counter"], dict):
                    total += expr["counter"].get("packets", 0)
    return total
