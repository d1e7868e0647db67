"""One real node beside the kwok pools: kubelet + containerd v2 + runc + a CNI bridge + kube-proxy.

Pods bound to it really run: the project's images (imported from the Docker engine into its
containerd), volumes, exit codes, termination messages, logs. It joins the local control plane
(``e2e.cluster.LocalCluster(real_node=True)``) and is tainted ``audioproc.io/real-node`` so that
pods without the toleration stay on kwok. Everything needs root; ``unavailable_reason()`` says
why it cannot run here, and callers skip with that reason.

Layout (all under the cluster's state directory unless said otherwise):

- network: the bridge ``audioproc0`` with ``NODE_IP`` (made before the API server starts, so that
  the API server can listen there and pods reach it through the ``kubernetes`` Service); pods
  get addresses in ``POD_SUBNET`` from the CNI bridge + host-local plugins (Debian's
  containernetworking-plugins); kube-proxy (iptables mode) implements Services.
- containerd: its own config, socket and state; its root, where imported images live, is kept in
  the cache (``CONTAINERD_ROOT``) with a record of the image IDs imported, so an unchanged image
  is never imported twice.
- kubelet: ``failCgroupV1: false`` (this machine has cgroup v1), the cgroupfs driver, anonymous
  AlwaysAllow on its API (the local API server has no kubelet client certificate), its own
  root and pod-logs directories.

One real node runs per machine at a time (a lock), since the bridge, the kube-proxy rules and
the ``kubepods`` cgroups are the machine's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.polling import wait_for

CACHE_DIR = Path(os.environ.get("AUDIOPROC_CACHE", Path.home() / ".cache" / "audioprocessor"))
NODE_CACHE = CACHE_DIR / "node"
CONTAINERD_ROOT = NODE_CACHE / "containerd-root"
IMPORTED_RECORD = NODE_CACHE / "imported-images.json"
LOCK_FILE = NODE_CACHE / "real-node.lock"

NODE_NAME = "audioproc-real-0"
POOL_LABEL = "audioproc.io/pool"
POOL = "real"
TAINT = {"key": "audioproc.io/real-node", "value": "true", "effect": "NoSchedule"}
TOLERATION = {
    "key": TAINT["key"],
    "operator": "Equal",
    "value": TAINT["value"],
    "effect": "NoSchedule",
}
BRIDGE = "audioproc0"
POD_SUBNET = ipaddress.ip_network("10.85.0.0/24")
NODE_IP = str(POD_SUBNET[1])  # the bridge's address: the node's InternalIP, the API server's too

RUNC = Path("/usr/sbin/runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI (kubelet) images and containers
CGROUP_ROOT = Path("/sys/fs/cgroup")

Log = Callable[[str], None]
Spawn = Callable[..., subprocess.Popen[bytes]]  # (name, argv, env=None), as LocalCluster._spawn


class NodeError(RuntimeError):
    """The real node could not be started, or an image not imported; the message says why."""


def unavailable_reason(bin_dir: Path | None) -> str | None:
    """Why a real node cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the real node needs root (kubelet, containerd, network and cgroups)"
    missing = [
        str(p) for p in (RUNC, *(CNI_BIN_DIR / name for name in CNI_PLUGINS)) if not p.exists()
    ]
    missing += [tool for tool in ("ip", "iptables", "iptables-restore") if not shutil.which(tool)]
    if bin_dir is not None:
        missing += [
            str(bin_dir / b)
            for b in ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr")
            if not (bin_dir / b).exists()
        ]
    if missing:
        return (
            "the real node needs "
            + ", ".join(missing)
            + " (apt-get install runc containernetworking-plugins iptables; make cluster-bins)"
        )
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together so that none is picked twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _run(
    *args: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(args, capture_output=True, input=input, check=False)
    if check and result.returncode != 0:
        raise NodeError(
            f"{' '.join(args[:4])} failed ({result.returncode}): {result.stderr.decode(errors='replace').strip()}"
        )
    return result


# --- configuration (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class NodePaths:
    """Where one run's node keeps its configuration and state."""

    base: Path  # <cluster state dir>/node

    @property
    def containerd_state(self) -> Path:
        return self.base / "containerd-state"

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.base / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.base / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.base / "cni-ipam"

    @property
    def kube_proxy_config(self) -> Path:
        return self.base / "kube-proxy.yaml"


def containerd_config(paths: NodePaths, pause_image: str, root: Path = CONTAINERD_ROOT) -> str:
    """containerd v2's config (version 3): its own root/state/socket, runc, our CNI, our pause."""
    return f"""version = 3
root = '{root}'
state = '{paths.containerd_state}'
# NRI would listen on a machine-wide socket; nothing here uses it.
disabled_plugins = ['io.containerd.nri.v1.nri']

[grpc]
  address = '{paths.socket}'

[ttrpc]
  address = '{paths.socket}.ttrpc'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause_image}'

  [plugins.'io.containerd.cri.v1.runtime']
    # Without CAP_SYS_RESOURCE the sandbox's oom_score_adj of -998 cannot be set, and runc
    # fails every pod ("can't get final child's PID from pipe: EOF"): clamp it instead.
    restrict_oom_score_adj = true
    # Pod network namespaces under our state, not the machine's /var/run/netns.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{RUNC}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{CNI_BIN_DIR}']
      conf_dir = '{paths.cni_conf_dir}'
      max_conf_num = 1
"""


def cni_conflist(paths: NodePaths) -> dict[str, Any]:
    """A bridge network of our own (own bridge name and subnet), addresses from host-local."""
    return {
        "cniVersion": "1.0.0",
        "name": "audioproc-real",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(POD_SUBNET), "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(paths: NodePaths, port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1, which kubelet >= 1.35 refuses unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{paths.socket}",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        # The local API server has no client certificate for kubelets: anyone on the node's
        # address may use the kubelet API (logs, exec), as on a single-user test machine.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        # Its KUBE-FIREWALL rules would be the machine's; kube-proxy makes what Services need.
        "makeIPTablesUtilChains": False,
        # The disk is shared with everything else here (image builds come and go): evict only
        # when it is nearly full, and never collect the imported images (they cannot be pulled
        # back). Below these, kubelet deletes every image no pod uses, whatever the GC says.
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "1Gi",
            "imagefs.available": "1Gi",
            "nodefs.inodesFree": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "registerWithTaints": [dict(TAINT)],
        "podLogsDir": str(paths.pod_logs),
        "maxPods": 30,
        "serializeImagePulls": False,
        "resolvConf": "/etc/resolv.conf",
    }


def kube_proxy_config(kubeconfig: Path, metrics_port: int, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": str(POD_SUBNET),
        # No br_netfilter here: a pod calling a Service backed by a pod on the same bridge only
        # gets its replies back through the host when every Service connection is masqueraded.
        "iptables": {"masqueradeAll": True},
        "conntrack": {"maxPerCore": 0},  # leave the machine's conntrack table size alone
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
    }


# --- the node ---------------------------------------------------------------------------------


class RealNode:
    """The node of one local cluster. ``prepare_network()`` before the API server starts,
    ``start()`` once it is up, ``import_images()`` whenever, ``cleanup()`` at the end (also
    from a state directory left by a killed run)."""

    def __init__(self, cluster_state_dir: Path, bin_dir: Path, log: Log) -> None:
        self.paths = NodePaths(Path(cluster_state_dir) / "node")
        self.bin_dir = bin_dir
        self.log = log

    # -- start ---------------------------------------------------------------------------------

    def acquire(self, holder_running: Callable[[Path], bool]) -> None:
        """Claim the machine's real node for this cluster; NodeError if a running cluster has it.

        The lock file names the claiming cluster's state directory; ``holder_running(dir)``
        says whether that cluster still runs. A killed one's claim is stale: what its node left
        on the machine (pods, rules, the bridge, cgroups) is cleaned up, and the claim taken over.
        """
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        holder = self._claim_holder()
        if holder is not None and holder != self.paths.base.parent and holder_running(holder):
            raise NodeError(
                f"the local cluster in {holder} runs the real node; stop it first (make cluster-down)"
            )
        LOCK_FILE.write_text(str(self.paths.base.parent))
        if holder is not None:
            self._clean_machine()

    def _claim_holder(self) -> Path | None:
        return Path(LOCK_FILE.read_text().strip()) if LOCK_FILE.exists() else None

    def release(self) -> None:
        if self._claim_holder() == self.paths.base.parent:
            LOCK_FILE.unlink()

    def prepare_network(self) -> None:
        """The bridge with NODE_IP, so that the API server can listen on it before any pod exists."""
        self.paths.base.mkdir(parents=True, exist_ok=True)
        if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
        addresses = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout.decode()
        if f" {NODE_IP}/" not in addresses:
            _run("ip", "addr", "add", f"{NODE_IP}/{POD_SUBNET.prefixlen}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")

    def start_containerd(self, spawn: Spawn, kubeconfig: Path, pause_image: str) -> None:
        """containerd with our configuration (through ``spawn``, which records the process).

        Then import the pause image, and ``start_kubelet()``.
        """
        p = self.paths
        for d in (
            p.containerd_state,
            p.kubelet_root,
            p.pod_logs,
            p.cni_conf_dir,
            p.cni_ipam_dir,
            CONTAINERD_ROOT,
        ):
            d.mkdir(parents=True, exist_ok=True)
        (p.base / "containerd.toml").write_text(containerd_config(p, pause_image))
        (p.cni_conf_dir / "10-audioproc.conflist").write_text(json.dumps(cni_conflist(p), indent=2))
        kubelet_port, kubelet_healthz, proxy_metrics, proxy_healthz = free_ports(4)
        (p.base / "kubelet.yaml").write_text(
            yaml.safe_dump(kubelet_config(p, kubelet_port, kubelet_healthz))
        )
        p.kube_proxy_config.write_text(
            yaml.safe_dump(kube_proxy_config(kubeconfig, proxy_metrics, proxy_healthz))
        )
        # containerd starts its shims by name: they must be on its PATH.
        path_env = f"{self.bin_dir}:{os.environ.get('PATH', '')}"
        containerd = spawn(
            "containerd",
            [str(self.bin_dir / "containerd"), f"--config={p.base / 'containerd.toml'}"],
            env={**os.environ, "PATH": path_env},
        )

        def answers() -> bool:
            if containerd.poll() is not None:
                raise NodeError(f"containerd exited with code {containerd.returncode}; see its log")
            return self.ctr("version", check=False).returncode == 0

        try:
            wait_for(answers, timeout=30, what="containerd to answer on its socket")
        except TimeoutError as error:
            raise NodeError(str(error)) from None
        self._remove_containers()
        self.log("containerd up")

    def start_kubelet(self, spawn: Spawn, kubeconfig: Path) -> None:
        """kubelet and kube-proxy; the node registers itself (tainted) and becomes Ready."""
        p = self.paths
        spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={p.base / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={p.kubelet_root}",
                f"--cert-dir={p.kubelet_root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={POOL_LABEL}={POOL},audioproc.io/real-node=true",
                "--v=1",
            ],
        )
        spawn(
            "kube-proxy",
            [str(self.bin_dir / "kube-proxy"), f"--config={p.kube_proxy_config}", "--v=1"],
        )

    # -- images --------------------------------------------------------------------------------

    def ctr(
        self, *args: str, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return _run(
            str(self.bin_dir / "ctr"),
            f"--address={self.paths.socket}",
            "--namespace",
            K8S_NAMESPACE,
            *args,
            check=check,
            input=input,
        )

    def import_images(
        self, images: dict[str, str], save: Callable[[str], subprocess.Popen[bytes]]
    ) -> list[str]:
        """Import ``{ref: image id}`` into containerd unless already imported with that ID.

        ``save(ref)`` starts ``docker save ref`` with its stdout piped. Returns the refs imported.
        """
        record: dict[str, str] = (
            json.loads(IMPORTED_RECORD.read_text()) if IMPORTED_RECORD.exists() else {}
        )
        present = set(self.ctr("images", "list", "--quiet").stdout.decode().split())
        imported = []
        for ref, image_id in images.items():
            full = normalized_ref(ref)
            if record.get(full) == image_id and full in present:
                continue
            began = time.monotonic()
            saver = save(ref)
            assert saver.stdout is not None
            result = subprocess.run(
                [
                    str(self.bin_dir / "ctr"),
                    f"--address={self.paths.socket}",
                    "--namespace",
                    K8S_NAMESPACE,
                    "images",
                    "import",
                    "--no-unpack=false",
                    "-",
                ],
                stdin=saver.stdout,
                capture_output=True,
                check=False,
            )
            saver.stdout.close()
            if saver.wait() != 0 or result.returncode != 0:
                raise NodeError(
                    f"importing {ref} failed: {result.stderr.decode(errors='replace').strip()}"
                )
            record[full] = image_id
            IMPORTED_RECORD.write_text(json.dumps(record, indent=2))
            imported.append(ref)
            self.log(
                f"imported {ref} into the node's containerd in {time.monotonic() - began:.0f}s"
            )
        self._remove_replaced_images(set(record.values()))
        return imported

    def _remove_replaced_images(self, current_ids: set[str]) -> None:
        """Remove images whose tag has moved on to a newer build.

        The CRI plugin keeps every imported image under its ID (``sha256:<image id>``) as well
        as its tag, so a re-import leaves the old build behind (gigabytes for the job image) and
        the cached root would grow with every build. ``--sync`` waits for the garbage collection.
        """
        refs = self.ctr("images", "list", "--quiet").stdout.decode().split()
        stale = [ref for ref in refs if ref.startswith("sha256:") and ref not in current_ids]
        if stale:
            self.ctr("images", "rm", "--sync", *stale, check=False)
            self.log(f"removed {len(stale)} replaced image(s) from the node's containerd")

    # -- stop ------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Leave nothing behind: pods' containers and processes, shims, mounts, rules, the bridge,
        the ``kubepods`` cgroups, the claim.

        Idempotent, and works from the state directory alone (a killed run left it). Call it
        after kubelet and kube-proxy have stopped (nothing restarts the pods then), and before
        containerd stops if it still runs (its containers are deleted through it). What is the
        machine's (cgroups, rules, the bridge) is only touched while this cluster holds the
        claim: a dead run's cleanup must not take down another cluster's node.
        """
        if self.paths.socket.exists() and self.ctr("version", check=False).returncode == 0:
            self._remove_containers()
        self._kill_shims()
        _unmount_under(self.paths.base)
        if self._claim_holder() in (None, self.paths.base.parent):
            self._clean_machine()
            self.release()

    def _clean_machine(self) -> None:
        """What a real node leaves on the machine: pod processes, rules, the bridge, cgroups."""
        _kill_cgroup_processes("kubepods")
        proxy = [str(self.bin_dir / "kube-proxy"), "--cleanup"]
        if self.paths.kube_proxy_config.exists():
            proxy.append(f"--config={self.paths.kube_proxy_config}")
        if (self.bin_dir / "kube-proxy").exists():
            _run(*proxy, check=False)
        _remove_kubelet_chains()
        _run("ip", "link", "delete", BRIDGE, check=False)
        _remove_cgroups("kubepods")

    def _remove_containers(self) -> None:
        """Kill and delete every container (and task) in containerd's CRI namespace.

        At the end of a run, and at the start of the next one: containerd's root is kept in the
        cache for its images, so a run killed before its cleanup leaves its containers there.
        """
        for task in self.ctr("tasks", "list", "--quiet", check=False).stdout.decode().split():
            self.ctr("tasks", "delete", "--force", task, check=False)
        for container in (
            self.ctr("containers", "list", "--quiet", check=False).stdout.decode().split()
        ):
            self.ctr("containers", "delete", container, check=False)

    def _kill_shims(self) -> None:
        """containerd's shims outlive it (they are re-parented to init): end ours by socket."""
        marker = str(self.paths.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def normalized_ref(ref: str) -> str:
    """``name:tag`` as containerd names a ``docker save``d image: ``docker.io/library/name:tag``."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if "/" in ref else f"docker.io/library/{ref}"


# Chains kubelet makes even without its utility chains (a canary that detects flushed tables).
KUBELET_CHAINS = ("KUBE-KUBELET-CANARY", "KUBE-FIREWALL", "KUBE-IPTABLES-HINT")


def _remove_kubelet_chains() -> None:
    """Delete kubelet's iptables chains (kube-proxy --cleanup removes its own)."""
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            for hook in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"):
                for chain in KUBELET_CHAINS:
                    _run(tool, "-t", table, "-D", hook, "-j", chain, check=False)
            for chain in KUBELET_CHAINS:
                _run(tool, "-t", table, "-F", chain, check=False)
                _run(tool, "-t", table, "-X", chain, check=False)


def _unmount_under(base: Path) -> None:
    """Unmount everything mounted below ``base`` (kubelet volumes, netns, rootfs), deepest first."""
    prefix = str(base.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        _run("umount", "--lazy", target.replace("\\040", " "), check=False)


def _kill_cgroup_processes(name: str) -> None:
    """SIGKILL every process in the ``name`` cgroup tree: pod processes outlive a killed shim."""
    pids = set()
    for procs in (
        (CGROUP_ROOT / "pids" / name).rglob("cgroup.procs")
        if (CGROUP_ROOT / "pids" / name).is_dir()
        else ()
    ):
        pids.update(int(pid) for pid in procs.read_text().split())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _remove_cgroups(name: str, roots: Iterable[Path] | None = None) -> None:
    """rmdir the ``name`` cgroup tree in every v1 controller (children first); busy ones stay."""
    for controller in roots if roots is not None else CGROUP_ROOT.iterdir():
        top = controller / name
        if not top.is_dir():
            continue
        for directory in sorted(
            (d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True
        ):
            try:
                directory.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


# --- what runs on it (pure builders, shared by the tests and bench/operator.py) ---------------


def host_volume(name: str, namespace: str, path: Path, size: str = "10Gi") -> list[dict[str, Any]]:
    """A hostPath PersistentVolume at ``path`` and the claim ``name`` in ``namespace`` bound to it.

    The node is this machine, so the test sees what the pods write. hostPath ignores fsGroup:
    make ``path`` writable by the pods' user (10001) yourself.
    """
    pv_name = f"{namespace}-{name}"[:63]
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "labels": {"audioproc.io/test-namespace": namespace}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(path), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": name},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": POOL_LABEL, "operator": "In", "values": [POOL]}
                                ]
                            }
                        ]
                    }
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": size}},
            },
        },
    ]


def operator_env(job_image: str, claim: str, mount_path: str = "/data") -> dict[str, str]:
    """Operator settings (environment) that put its CPU pods on the real node, with ``claim`` mounted.

    The node has 2 cores and the machine's memory: small requests, so that two pods fit.
    """
    return {
        "OPERATOR_JOB_IMAGE": job_image,
        "OPERATOR_IMAGE_PULL_POLICY": "Never",  # imported, never pulled (no registry here)
        "OPERATOR_CPU_NODE_SELECTOR": json.dumps({POOL_LABEL: POOL}),
        "OPERATOR_CPU_TOLERATIONS": json.dumps([TOLERATION]),
        "OPERATOR_CPU_REQUESTS": json.dumps({"cpu": "250m", "memory": "512Mi"}),
        "OPERATOR_CPU_LIMITS": json.dumps({"memory": "4Gi"}),
        "OPERATOR_OUTPUT_VOLUME_CLAIM": claim,
        "OPERATOR_OUTPUT_MOUNT_PATH": mount_path,
    }


def container_pid(node: RealNode, container_id: str) -> int | None:
    """The host PID of a running container (``containerStatuses[].containerID``), or None."""
    wanted = container_id.removeprefix("containerd://")
    for line in node.ctr("tasks", "list", check=False).stdout.decode().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[0] == wanted and fields[2] == "RUNNING":
            return int(fields[1])
    return None
