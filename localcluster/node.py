"""The real node: containerd + runc, the CNI plugins, the kubelet and kube-proxy, on this host.

It joins the control plane beside the kwok nodes, runs our images for real, and leaves nothing
behind. The facts this follows were found on this machine (design/TESTING.md, "A real node"):

- containerd (Debian's, with a root, state and socket of its own) restricts OOM score changes and
  the kubelet keeps ``oomScoreAdj: 0``: the VM withholds CAP_SYS_RESOURCE.
- cgroup v1 with the cgroupfs driver; every pod cgroup lives under ``/aiagent`` in each hierarchy,
  removed at teardown.
- The kubelet runs in a mount namespace of its own where the kernel settings it wants are masked
  to its wanted values (``protectKernelDefaults``), so it never rewrites the host's; its root dir
  is a shared mount, so the volumes it mounts there are seen by containerd.
- kube-proxy in nftables mode keeps its rules in its own tables; ``masqueradeAll`` lets pods reach
  Services on the same bridge without br_netfilter (a host-global module).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .controlplane import LocalControlPlane, schedulable
from .hostnet import BRIDGE, HostNetwork
from .mounts import unmount_under
from .paths import CACHE_ROOT
from .procs import ClusterError, Processes, free_port, run, signal_group

NODE_NAME = "aiagent-node"
NODE_LABEL = "aiagents.dev/real-node"
CGROUP_ROOT = "aiagent"
CGROUP_FS = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
# Host directories whose paths are fixed in the binaries (no flag moves them): made by the node
# when missing, and then removed at teardown. Everything else it writes lives in its own dirs.
FIXED_HOST_DIRS = (
    Path("/var/lib/cni"),  # libcni's result cache; not configurable through containerd 1.6
    Path("/var/lib/kubelet"),  # the device-plugin socket's dir (pluginapi.DevicePluginPath)
    Path("/var/log/containers"),  # the kubelet's links to container logs (ContainerLogsDir)
    Path("/run/containerd"),  # the runc shim's sockets (/run/containerd/s) in containerd 1.6
)
RUN_ROOT = Path("/run/aiagent-localcluster")
# What the kubelet would write into the host's kernel settings (pkg/kubelet/cm): masked instead.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
HOST_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "nft": "nftables",
    "iptables": "iptables",
    "ip": "iproute2",
    "unshare": "util-linux",
    "mount": "mount",
    "conntrack": "conntrack",
}


def missing() -> str | None:
    """Why a real node cannot run here (one line), or None."""
    if os.uname().sysname != "Linux":
        return f"a real node needs Linux (this is {os.uname().sysname})"
    if os.geteuid() != 0:
        return "a real node needs root (it creates a bridge, cgroups and firewall rules)"
    for tool, package in HOST_TOOLS.items():
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            return f"{tool} is missing (Debian package {package}; `make host-deps` installs it)"
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN / plugin).exists():
            return f"CNI plugin {plugin} is missing (Debian package containernetworking-plugins)"
    if not (CGROUP_FS / "cpu").is_dir() and not (CGROUP_FS / "cgroup.controllers").exists():
        return "no cgroup filesystem at /sys/fs/cgroup"
    return None


def _cgroup_hierarchies() -> list[Path]:
    """The v1 hierarchies (cpu, memory, ..., name=systemd): the cgroupfs driver uses all."""
    return [
        p
        for p in sorted(CGROUP_FS.iterdir())
        if p.is_dir()
        and not p.is_symlink()
        and (p / "cgroup.procs").exists()
        and p.name != "unified"
    ]


class RealNode:
    """containerd, kubelet and kube-proxy for one control plane, on the host network's bridge."""

    def __init__(
        self, bin_dir: Path, workdir: Path, control_plane: LocalControlPlane, net: HostNetwork
    ):
        self.bin_dir = bin_dir
        self.dir = workdir / "node"
        self.cp = control_plane
        self.net = net
        self.procs = Processes(workdir / "logs")
        self.run_dir = RUN_ROOT / "node"
        self.socket = self.run_dir / "containerd.sock"
        # Images stay between runs (the import of a 1.3 GB image is what a warm start avoids).
        self.containerd_root = CACHE_ROOT / "node" / "containerd"
        self.kubelet_dir = self.dir / "kubelet"
        self.kubelet_port = 0
        self._made_host_dirs = self._missing_host_dirs()

    # -- life cycle ---------------------------------------------------------------------------

    def start_runtime(self) -> None:
        """containerd (its own root, state and socket) with the CNI config for the bridge."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._made_host_dirs = self._missing_host_dirs()
        cni_conf = self.dir / "cni"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-aiagent.conflist").write_text(json.dumps(self.cni_config(), indent=2))
        config = self.dir / "containerd.toml"
        config.write_text(self.containerd_config(cni_conf))
        self.procs.spawn("containerd", ["containerd", "--config", str(config)], env=self._env())
        self.procs.wait(
            "containerd",
            lambda: self.ctr("version", check=False).returncode == 0,
            timeout=30,
            log_of="containerd",
        )
        self._remove_leftover_containers()

    def start_kubelet(self) -> None:
        self._make_cgroup_root()
        self.kubelet_dir.mkdir(parents=True, exist_ok=True)
        # A shared mount: the kubelet's volume mounts, made in its own namespace, reach the host's
        # (and containerd's) view of this directory.
        run(["mount", "--bind", str(self.kubelet_dir), str(self.kubelet_dir)])
        run(["mount", "--make-shared", str(self.kubelet_dir)])
        kubeconfig = self.cp.pki.kubeconfig(
            self.dir / "kubelet.kubeconfig",
            self.cp.server,
            f"system:node:{NODE_NAME}",
            "system:nodes",
        )
        self.kubelet_port = free_port(self.net.node_ip)
        config = self.dir / "kubelet.yaml"
        config.write_text(json.dumps(self.kubelet_config(), indent=2))
        (self.dir / "resolv.conf").write_text("options ndots:1\n")
        masks = self.dir / "sysctl-masks"
        masks.mkdir(exist_ok=True)
        binds = []
        for key, value in KUBELET_SYSCTLS.items():
            mask = masks / key.replace("/", ".")
            mask.write_text(value + "\n")
            binds.append(f"mount --bind {mask} /proc/sys/{key}")
        kubelet = " ".join(
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_dir}",
                f"--cert-dir={self.kubelet_dir / 'pki'}",  # not under the root dir by default
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.net.node_ip}",
                f"--node-labels={NODE_LABEL}=true",
                "--v=1",
            ]
        )
        script = "set -e; " + "; ".join(binds) + f"; exec {kubelet}"
        self.procs.spawn(
            "kubelet",
            ["unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c", script],
            env=self._env(),
        )
        self.procs.wait("the real node Ready", self._node_ready, timeout=60, log_of="kubelet")

    def start_kube_proxy(self) -> None:
        kubeconfig = self.cp.pki.kubeconfig(
            self.dir / "kube-proxy.kubeconfig", self.cp.server, "system:kube-proxy"
        )
        config = self.dir / "kube-proxy.yaml"
        health_port = free_port()
        config.write_text(json.dumps(self.kube_proxy_config(kubeconfig, health_port), indent=2))
        self.procs.spawn(
            "kube-proxy",
            [str(self.bin_dir / "kube-proxy"), f"--config={config}", "--v=1"],
            env=self._env(),
        )
        import urllib.request

        self.procs.wait(
            "kube-proxy",
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2).status
                == 200
            ),
            timeout=60,
            log_of="kube-proxy",
        )

    def stop(self) -> None:
        """Undo everything, in reverse: proxies and kubelet, the pods' processes, containerd and its
        shims, mounts, cgroups, CNI state. Safe on a half-started node."""
        pod_links = _bridge_ports()
        self.procs.stop("kube-proxy", "kubelet")
        if "containerd" in self.procs.procs:
            self._remove_leftover_containers()
        self.procs.stop("containerd")
        self._kill_shims()
        self._kill_cgroup_processes()
        # Everything below these dirs, the kubelet dir's own shared bind mount included.
        unmount_under(self.kubelet_dir, self.run_dir)
        self._remove_cgroup_root()
        for made in self._made_host_dirs:
            shutil.rmtree(made, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        _wait_gone(pod_links)
        try:
            RUN_ROOT.rmdir()  # shared with the build engine's run dir: only when neither uses it
        except OSError:
            pass

    # -- images ---------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 600) -> Any:
        return run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            check=check,
            timeout=timeout,
        )

    def needs_image(self, name: str, key: str) -> bool:
        """Whether the image ``name`` at version ``key`` (a Docker image ID) is not imported yet."""
        stamps = self.containerd_root / "aiagent-imported.json"
        seen = json.loads(stamps.read_text()) if stamps.exists() else {}
        return bool(seen.get(name) != key)

    def load_image(self, archive: Path, key: str) -> None:
        """Import a `docker save` archive and remember which version it was."""
        self.ctr("images", "import", str(archive), timeout=1800)
        stamps = self.containerd_root / "aiagent-imported.json"
        seen = json.loads(stamps.read_text()) if stamps.exists() else {}
        seen[archive.name] = key
        stamps.write_text(json.dumps(seen, indent=2))

    def images(self) -> list[str]:
        return list(self.ctr("images", "list", "--quiet").stdout.split())

    # -- rendered configs (pure) ----------------------------------------------------------------

    def cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": "aiagent",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # Pods reach Services (and the apiserver) through the host; the egress
                    # guard lets nothing through it to the outside.
                    "isDefaultGateway": True,
                    # Pods must reach nothing outside the machine: no NAT to the default route.
                    "ipMasq": False,
                    # A pod calling its own Service is sent back to itself through the bridge.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.net.node_cidr, "gateway": self.net.node_ip}]],
                        "dataDir": str(self.dir / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def containerd_config(self, cni_conf: Path) -> str:
        from .images import PAUSE_IMAGE

        return f"""version = 2
root = "{self.containerd_root}"
state = "{self.run_dir / "state"}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.containerd_root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This VM withholds CAP_SYS_RESOURCE: without this, every pod sandbox fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{self.run_dir / "runc"}"
"""

    def kubelet_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.net.node_ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.cp.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{CGROUP_ROOT}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "protectKernelDefaults": True,
            # Pods ask the cluster DNS (localcluster/dns.py, on the node's address) and nothing
            # else: the host's resolver is outside, so it is not passed on.
            "resolvConf": str(self.dir / "resolv.conf"),
            "clusterDomain": "cluster.local",
            "clusterDNS": [self.net.node_ip],
            "staticPodPath": "",
            "podLogsDir": str(self.dir / "pod-logs"),  # not /var/log/pods
            "serializeImagePulls": False,
            # Our images are imported, not pulled: never garbage-collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "2%",
                "imagefs.available": "2%",
            },
            "maxPods": 110,
            "podPidsLimit": 4096,
            "registerNode": True,
            "localStorageCapacityIsolation": True,
            "shutdownGracePeriod": "0s",
        }

    def kube_proxy_config(self, kubeconfig: Path, health_port: int) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": self.net.node_ip,
            "healthzBindAddress": f"127.0.0.1:{health_port}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            "clusterCIDR": self.net.node_cidr,
            "masqueradeAll": True,
            "nodePortAddresses": [f"{self.net.node_ip}/32"],
            # Zeros: leave the host's conntrack settings as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
        }

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _env() -> dict[str, str]:
        return {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

    def _node_ready(self) -> bool:
        node = self.cp.request("GET", f"/api/v1/nodes/{NODE_NAME}")
        return schedulable(node)

    def _remove_leftover_containers(self) -> None:
        """Kill and delete every container containerd knows (pods of this or a killed run)."""
        for task in self.ctr("tasks", "list", "--quiet", check=False).stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 10
        while self.ctr("tasks", "list", "--quiet", check=False).stdout.split():
            for task in self.ctr("tasks", "list", "--quiet", check=False).stdout.split():
                self.ctr("tasks", "delete", "--force", task, check=False)
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        containers = self.ctr("containers", "list", "--quiet", check=False).stdout.split()
        if containers:
            self.ctr("containers", "delete", *containers, check=False)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it by design; find ours by the socket they were given."""
        needle = str(self.socket).encode()
        for pid in _pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                signal_group(pid, 9)
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass

    @staticmethod
    def _missing_host_dirs() -> list[Path]:
        return [d for d in FIXED_HOST_DIRS if not d.exists()]

    def _make_cgroup_root(self) -> None:
        for hierarchy in _cgroup_hierarchies():
            path = hierarchy / CGROUP_ROOT
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # empty in a new v1 cpuset: copy them
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((hierarchy / name).read_text())

    def _cgroup_dirs(self) -> list[Path]:
        found: list[Path] = []
        # On a hybrid host runc also puts each container in the v2 ("unified") hierarchy.
        for hierarchy in [*_cgroup_hierarchies(), CGROUP_FS / "unified"]:
            root = hierarchy / CGROUP_ROOT
            if root.is_dir():
                found += [Path(d) for d, _, _ in os.walk(root)]
        return found

    def _kill_cgroup_processes(self) -> None:
        for _ in range(50):
            pids = set()
            for d in self._cgroup_dirs():
                try:
                    pids |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
                except OSError:
                    pass
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise ClusterError(f"processes left in the node's cgroups: {sorted(pids)}")

    def _remove_cgroup_root(self) -> None:
        for d in sorted(self._cgroup_dirs(), key=lambda p: len(p.parts), reverse=True):
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _bridge_ports() -> list[str]:
    """The pods' host-side veth devices (the ports of our bridge)."""
    sysfs = Path(f"/sys/class/net/{BRIDGE}/brif")
    return sorted(p.name for p in sysfs.iterdir()) if sysfs.is_dir() else []


def _wait_gone(links: list[str], timeout: float = 60) -> None:
    """A pod's veth goes when the kernel destroys its network namespace, which it does in the
    background after the last process and mount of it are gone: on a busy machine, seconds later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/sys/class/net/{link}").exists() for link in links):
            return
        time.sleep(0.2)
