"""A snapshot of the host state a local cluster may touch, to prove it is left as found.

What a real node changes while it runs: network interfaces, addresses and routes, firewall rules
(nftables and both iptables backends), mounts, kernel settings, cgroups, processes of its
binaries, and a few well-known directories. ``diff(before, after)`` names what differs.
"""

from __future__ import annotations

import os
from pathlib import Path

from .procs import run

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
PATHS = (
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/etc/cni",
    "/etc/kubernetes",
    "/run/aiagent-localcluster",
    "/run/lock/aiagent-localcluster.lock",
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
)
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubelet",
    "kube-proxy",
    "metrics-server",
    "coredns",
    "redis-server",
    "daprd",
    "containerd",
    "containerd-shim-runc-v2",
    "dockerd",
    "runc",
    "pause",
)


def _text(cmd: list[str]) -> str:
    result = run(cmd, check=False)
    return result.stdout if result.returncode == 0 else f"({' '.join(cmd)}: unavailable)"


def _without_counters(ruleset: str) -> str:
    # Packet counters move with any traffic; the rules themselves are what must not change.
    import re

    return re.sub(r"counter packets \d+ bytes \d+", "counter", ruleset)


def snapshot() -> dict[str, object]:
    state: dict[str, object] = {
        "links": sorted(
            line.split()[1].split("@")[0].rstrip(":")
            for line in _text(["ip", "-o", "link", "show"]).splitlines()
        ),
        "addresses": _text(["ip", "-o", "addr", "show"]),
        "routes": _text(["ip", "route", "show", "table", "all"]),
        "nftables": _without_counters(_text(["nft", "list", "ruleset"])),
        "iptables-legacy": _text(["iptables-legacy-save"])
        if os.path.exists("/usr/sbin/iptables-legacy-save")
        else "",
        "mounts": sorted(
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ),
        "netns": _text(["ip", "netns", "list"]),
        "sysctls": {k: _read(Path("/proc/sys") / k) for k in SYSCTLS},
        "paths": {p: os.path.lexists(p) for p in PATHS},
        "cgroups": sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/aiagent*")),
        "processes": sorted(_our_processes()),
    }
    return state


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _our_processes() -> list[str]:
    """Processes of the cluster's binaries that are ours to account for: this process's
    descendants, and orphans (reparented to init: what outlives its launcher). Another session's
    cluster running beside this one (its parent alive, not ours) is not this one's leftover."""
    parents: dict[int, int] = {}
    exes: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            exes[pid] = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])  # comm may hold spaces
    me = os.getpid()

    def ours(pid: int) -> bool:
        if parents.get(pid) == 1:
            return True  # an orphan (or a daemon: the same before and after, so no difference)
        seen = set()
        while pid not in seen and pid > 1:
            seen.add(pid)
            pid = parents.get(pid, 0)
            if pid == me:
                return True
        return False

    return [f"{exe} (pid {pid})" for pid, exe in exes.items() if exe in BINARIES and ours(pid)]


def diff(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """One line per difference, empty when the host is as it was."""
    changes = []
    for key in before:
        if before[key] != after.get(key):
            changes.append(f"{key}: before={before[key]!r}\n      after={after.get(key)!r}")
    return changes


if __name__ == "__main__":  # `python -m localcluster.hoststate`: print the snapshot
    import json

    print(json.dumps(snapshot(), indent=2))
