"""A real Kubernetes control plane on loopback, run as local processes (no containers).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, all built from Go
modules by ``e2e/controlplane/build-bins.sh`` (cached under ~/.cache/audioprocessor). kwok
plays the kubelet for fake nodes in two pools (see ``e2e.nodes``) using the stages in
``e2e/kwok/``.

    python -m e2e.cluster up      # prints `export KUBECONFIG=...`, leaves the cluster running
    python -m e2e.cluster down    # stops exactly those processes and removes their state

Tests use the ``cluster`` fixture in ``e2e/conftest.py`` instead, which runs a
``LocalCluster`` on free ports in a directory of its own.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from e2e.nodes import NodePools, pool_nodes
from e2e.polling import wait_for
from e2e.realnode import (
    NODE_IP,
    NODE_NAME,
    NodeError,
    RealNode,
    free_ports,
    normalized_ref,
    unavailable_reason,
)
from images.bases import pause_base
from images.engine import DockerEngine, EngineError

E2E_DIR = Path(__file__).resolve().parent
BUILD_SCRIPT = E2E_DIR / "controlplane" / "build-bins.sh"
STAGES_DIR = E2E_DIR / "kwok"
CACHE_DIR = Path(os.environ.get("AUDIOPROC_CACHE", Path.home() / ".cache" / "audioprocessor"))
DEFAULT_STATE_DIR = CACHE_DIR / "cluster"

# Upstream kwok stages, copied from the kwok module by build-bins.sh: nodes become Ready and
# keep their lease; scheduled pods become Running; deleted pods go away. Our own stages in
# e2e/kwok/ finish the Running ones.
UPSTREAM_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-delete.yaml",
)
KWOK_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"
SERVICE_CIDR = "10.96.0.0/16"
NODE_LEASE_SECONDS = 40

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


class ClusterError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


def ensure_binaries() -> Path:
    """Build (or find, when stamped) the control-plane binaries; return their directory.

    build-bins.sh is a no-op when everything is stamped; on a fresh machine it builds from
    the Go module proxy and prints progress to our stderr.
    """
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def cached_binaries() -> Path | None:
    """The binaries' directory if they are built already, else None (builds nothing)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--bin-dir"], capture_output=True, text=True, check=True
    )
    bin_dir = Path(result.stdout.strip())
    return bin_dir if (bin_dir / "kubectl").exists() else None


# --- a cluster reachable through a kubeconfig -------------------------------------------------


class Cluster:
    """Any cluster the tests talk to: a kubeconfig plus kubectl (and logs, when local)."""

    def __init__(self, kubeconfig: Path, bin_dir: Path | None = None, logs_dir: Path | None = None):
        self.kubeconfig = Path(kubeconfig)
        self.bin_dir = bin_dir
        self.logs_dir = logs_dir

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise ClusterError with its stderr if it fails and ``check``."""
        kubectl = self.bin_dir / "kubectl" if self.bin_dir else shutil.which("kubectl")
        if not kubectl:
            raise ClusterError(
                "no kubectl: build the binaries (make cluster-bins) or put kubectl on PATH"
            )
        cmd = [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ClusterError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` for this cluster (imported lazily: the CLI does not need it)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


# --- processes --------------------------------------------------------------------------------


@dataclass
class Ports:
    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def free(cls) -> Ports:
        """Distinct free loopback ports (held open together so that none is picked twice)."""
        return cls(*free_ports(len(fields(cls))))


@dataclass
class ProcessRecord:
    """Enough to find a started process again, and never mistake a recycled PID for it."""

    name: str
    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat

    def is_ours(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    stat_fields = stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces
    if stat_fields[0] == "Z":  # exited, not yet reaped
        return None
    return int(stat_fields[19])


def _die_with_parent() -> None:
    """Runs in the child before exec: kill it when the process that started it dies.

    SIGKILL, not SIGTERM: all components would get the signal at once, and a kube-apiserver
    whose etcd is gone never finishes its graceful shutdown.
    """
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    try:
        return wait_for(check, timeout, what, interval)
    except TimeoutError as timeout_error:
        raise ClusterError(str(timeout_error)) from None


# Health endpoints are probed on loopback before any CA exists; the kubeconfig verifies TLS.
_PROBE_TLS = ssl._create_unverified_context()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=_PROBE_TLS) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# The aggregation layer (extension API servers such as Kueue's visibility API) proxies requests
# with a client certificate that the extension server trusts for the user's name and groups.
FRONT_PROXY_CLIENT = "front-proxy-client"


def _front_proxy_certificates(pki: Path) -> None:
    """``front-proxy-ca.crt`` and the API server's client pair ``front-proxy-client.{crt,key}``."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
        "-keyout", "front-proxy-ca.key", "-out", "front-proxy-ca.crt",
        "-subj", "/CN=front-proxy-ca",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "front-proxy-client.key",
        "-out", "front-proxy-client.csr", "-subj", f"/CN={FRONT_PROXY_CLIENT}",
    )  # fmt: skip
    (pki / "front-proxy-client.ext").write_text("extendedKeyUsage=clientAuth\n")
    openssl(
        "x509", "-req", "-in", "front-proxy-client.csr", "-CA", "front-proxy-ca.crt",
        "-CAkey", "front-proxy-ca.key", "-CAcreateserial", "-days", "7",
        "-extfile", "front-proxy-client.ext", "-out", "front-proxy-client.crt",
    )  # fmt: skip
    for secret in ("front-proxy-ca.key", "front-proxy-client.key"):
        (pki / secret).chmod(0o600)


def _front_proxy_flags(pki: Path) -> list[str]:
    return [
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
    ]


# --- the local control plane ------------------------------------------------------------------


class LocalCluster(Cluster):
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on loopback,
    and, where it can run (root, runc, CNI plugins, a Docker engine), one real node
    (``e2e.realnode``): ``real_node=None`` starts it when possible, True insists, False never.

    Everything lives in ``state_dir`` (etcd data, keys, kubeconfig, ``logs/<component>.log``,
    ``cluster.json`` with ports and PIDs); ``stop()`` kills exactly the recorded processes,
    cleans up after the real node and removes the directory. With the real node the API
    server listens on the node's bridge address (``NODE_IP``) instead of loopback, so that pods
    reach it through the ``kubernetes`` Service.
    """

    STATE_FILE = "cluster.json"

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        bin_dir: Path | None = None,
        pools: NodePools = NodePools(),
        die_with_parent: bool = False,
        log: Log = _stderr_log,
        real_node: bool | None = None,
        engine: DockerEngine | None = None,
    ):
        self.state_dir = Path(state_dir)
        super().__init__(self.state_dir / "kubeconfig", bin_dir, self.state_dir / "logs")
        self.pools = pools
        self.die_with_parent = die_with_parent
        self.log = log
        self.ports: Ports | None = None
        self.processes: list[ProcessRecord] = []
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self.startup_seconds: float | None = None
        self.want_real_node = real_node
        self.engine = engine
        self.node: RealNode | None = None
        #: Why the cluster has no real node (None when it has one, or was told not to).
        self.real_node_missing: str | None = None

    # -- state file ---------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / self.STATE_FILE

    def _save_state(self) -> None:
        state = {
            "bin_dir": str(self.bin_dir),
            "ports": asdict(self.ports) if self.ports else None,
            "processes": [asdict(p) for p in self.processes],
            "real_node": self.node is not None,
        }
        # Atomically: `down` and other test sessions may read it at any time.
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2))
        partial.replace(self.state_file)

    @classmethod
    def from_state(
        cls, state_dir: Path = DEFAULT_STATE_DIR, log: Log = _stderr_log
    ) -> LocalCluster:
        """The cluster recorded in ``state_dir`` (for ``down``); empty if nothing is recorded."""
        cluster = cls(state_dir, log=log)
        if cluster.state_file.exists():
            state = json.loads(cluster.state_file.read_text())
            cluster.bin_dir = Path(state["bin_dir"]) if state.get("bin_dir") else None
            cluster.ports = Ports(**state["ports"]) if state.get("ports") else None
            cluster.processes = [ProcessRecord(**p) for p in state["processes"]]
            if state.get("real_node") and cluster.bin_dir is not None:
                cluster.node = RealNode(cluster.state_dir, cluster.bin_dir, log)
        return cluster

    def running_processes(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.is_ours()]

    def is_dead(self) -> bool:
        """Recorded processes, none of them running: its owner died without stopping it."""
        return bool(self.processes) and not self.running_processes()

    # -- start --------------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every component, create the node pools and wait until pods can be scheduled."""
        if self.state_file.exists() and LocalCluster.from_state(self.state_dir).running_processes():
            raise ClusterError(f"a cluster is already running from {self.state_dir}; stop it first")
        began = time.monotonic()
        if self.bin_dir is None:
            self.bin_dir = ensure_binaries()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        for sub in ("etcd", "pki/apiserver", "logs", "home"):
            (self.state_dir / sub).mkdir(parents=True)
        self.ports = Ports.free()
        try:
            self.node = self._claim_real_node()
            self._write_credentials()
            self._write_kwok_config()
            self._start_etcd()
            self._start_apiserver()
            self._start_controllers()
            if self.node is not None:
                self._start_real_node(self.node)
            self._create_nodes()
            # Pods are only admitted once the serviceaccount controller made `default`.
            _wait_until(
                lambda: (
                    self.kubectl(
                        "get", "serviceaccount", "default", "-n", "default", check=False
                    ).returncode
                    == 0
                ),
                60,
                "the default ServiceAccount",
            )
        except BaseException:
            self.log(f"start-up failed; component logs are in {self.logs_dir}")
            self.stop(keep_logs=True)
            raise
        self.startup_seconds = time.monotonic() - began
        self.log(
            f"control plane ready in {self.startup_seconds:.1f}s (kubeconfig {self.kubeconfig})"
        )
        return self

    @property
    def api_address(self) -> str:
        """Where the API server listens: loopback, or the real node's bridge address."""
        return NODE_IP if self.node is not None else "127.0.0.1"

    def _claim_real_node(self) -> RealNode | None:
        """The real node this cluster will run, or None (with the reason in ``real_node_missing``)."""
        if self.want_real_node is False:
            return None
        assert self.bin_dir is not None
        reason = unavailable_reason(self.bin_dir)
        node = RealNode(self.state_dir, self.bin_dir, self.log)
        if reason is None:
            try:
                node.acquire(
                    lambda state_dir: bool(LocalCluster.from_state(state_dir).running_processes())
                )
                node.prepare_network()
            except NodeError as error:
                reason = str(error)
        if reason is None:
            return node
        if self.want_real_node:
            raise ClusterError(f"no real node: {reason}")
        self.real_node_missing = reason
        self.log(f"no real node: {reason}")
        return None

    def _start_real_node(self, node: RealNode) -> None:
        try:
            if self.engine is None:
                self.engine = DockerEngine.ensure(self.logs_dir)
                if self.engine.started_pid is not None:  # ours: stopped with the cluster
                    self._adopt("dockerd", self.engine.started_pid)
            pause = pause_base(self.engine, self.log)
            node.start_containerd(self._spawn, self.kubeconfig, normalized_ref(pause))
            self.import_images([pause])
        except (EngineError, NodeError) as error:
            raise ClusterError(f"real node: {error}") from None
        node.start_kubelet(self._spawn, self.kubeconfig)
        _wait_until(
            lambda: NODE_NAME in self._schedulable_nodes(),
            90,
            f"the real node {NODE_NAME} to be Ready",
        )
        self.log(f"real node {NODE_NAME} ready (kubelet + containerd, pods in {NODE_IP}/24)")

    def import_images(self, refs: Iterable[str]) -> list[str]:
        """Import Docker images into the real node's containerd (unchanged ones are skipped)."""
        if self.node is None or self.engine is None:
            raise ClusterError(
                f"no real node to import images into ({self.real_node_missing or 'not started'})"
            )
        engine = self.engine
        ids = {}
        for ref in refs:
            image_id = engine.image_id(ref)
            if image_id is None:
                raise ClusterError(f"no image {ref} in the Docker engine (make images)")
            ids[ref] = image_id

        def save(ref: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen([engine.client, "save", ref], stdout=subprocess.PIPE)

        try:
            return self.node.import_images(ids, save)
        except NodeError as error:
            raise ClusterError(str(error)) from None

    def _adopt(self, name: str, pid: int) -> None:
        """Record a process started elsewhere (dockerd) so that ``stop()`` ends it too."""
        ticks = _start_ticks(pid)
        self.processes.append(ProcessRecord(name, pid, ticks if ticks is not None else -1))
        self._save_state()

    def _write_credentials(self) -> None:
        pki = self.state_dir / "pki"
        # Service-account token signing key; the API server reads its public half from the same file.
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(pki / "sa.key"),
            ],
            check=True,
            capture_output=True,
        )
        token = secrets.token_hex(24)
        # A static bearer token for an admin in system:masters (RBAC stays on for everyone else).
        (pki / "tokens.csv").write_text(
            f'{token},audioproc-admin,audioproc-admin,"system:masters"\n'
        )
        assert self.ports is not None
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "audioproc-e2e",
                    "cluster": {
                        "server": f"https://{self.api_address}:{self.ports.apiserver}",
                        # Written by kube-apiserver at start-up: its self-signed serving cert
                        # (SAN 127.0.0.1) followed by the CA that signed it.
                        "certificate-authority": str(pki / "apiserver" / "apiserver.crt"),
                    },
                }
            ],
            "users": [{"name": "audioproc-admin", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "audioproc-e2e",
                    "context": {"cluster": "audioproc-e2e", "user": "audioproc-admin"},
                }
            ],
            "current-context": "audioproc-e2e",
        }
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        for secret in (pki / "sa.key", pki / "tokens.csv", self.kubeconfig):
            secret.chmod(0o600)
        _front_proxy_certificates(pki)

    def _write_kwok_config(self) -> None:
        """kwok reads its stages from --config: the upstream ones plus ours, one YAML stream."""
        assert self.bin_dir is not None
        upstream = [self.bin_dir / "kwok-stages" / name for name in UPSTREAM_STAGES]
        ours = sorted(STAGES_DIR.glob("*.yaml"))
        docs = [path.read_text() for path in [*upstream, *ours]]
        (self.state_dir / "kwok.yaml").write_text("\n---\n".join(docs))

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_file = (self.logs_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the components in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log_file.close()
        ticks = _start_ticks(process.pid)
        self.processes.append(ProcessRecord(name, process.pid, ticks if ticks is not None else -1))
        self._popen[process.pid] = process
        self._save_state()
        return process

    def _wait_healthy(self, name: str, url: str, timeout: float = 90) -> None:
        process = next(self._popen[p.pid] for p in self.processes if p.name == name)

        def healthy() -> bool:
            if process.poll() is not None:
                tail = "\n".join(
                    (self.logs_dir / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
                )
                raise ClusterError(
                    f"{name} exited with code {process.returncode}; last log lines:\n{tail}"
                )
            return _http_ok(url)

        _wait_until(healthy, timeout, f"{name} at {url}")

    def _start_etcd(self) -> None:
        assert self.ports and self.bin_dir
        client = f"http://127.0.0.1:{self.ports.etcd}"
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=audioproc-e2e",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=audioproc-e2e={peer}",
                "--unsafe-no-fsync=true",  # test data: durability is not worth the fsync latency
                "--log-level=warn",
            ],
        )
        self._wait_healthy("etcd", f"{client}/health")
        self.log("etcd up")

    def _start_apiserver(self) -> None:
        assert self.ports and self.bin_dir
        pki = self.state_dir / "pki"
        if self.node is None:
            # The lease reconciler refuses a loopback advertise address; without a real node
            # no pod talks to the in-cluster `kubernetes` Service, so skip it.
            network = [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
            ]
        else:
            # On the bridge: the `kubernetes` Service's endpoint, reached by pods via kube-proxy.
            # The kubelet's address is its InternalIP (its node name resolves nowhere).
            network = [
                f"--bind-address={NODE_IP}",
                f"--advertise-address={NODE_IP}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd}",
                *network,
                f"--secure-port={self.ports.apiserver}",
                f"--cert-dir={pki / 'apiserver'}",  # self-signed serving cert for the bind address
                f"--token-auth-file={pki / 'tokens.csv'}",
                *_front_proxy_flags(pki),
                "--authorization-mode=RBAC",
                # On by default too; named so that nobody turns it off by accident.
                "--enable-admission-plugins=ResourceQuota",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.key'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        # /readyz is public (system:public-info-viewer), so no token is needed to probe it.
        self._wait_healthy(
            "kube-apiserver",
            f"https://{self.api_address}:{self.ports.apiserver}/readyz",
            timeout=120,
        )
        self.log("kube-apiserver ready")

    def _start_controllers(self) -> None:
        """kube-controller-manager, kube-scheduler and kwok start together: they only need the API server."""
        assert self.ports and self.bin_dir
        pki = self.state_dir / "pki"
        kubeconfig = f"--kubeconfig={self.kubeconfig}"
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                kubeconfig,
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.controller_manager}",
                "--leader-elect=false",
                # All default controllers, as in a real cluster: job, garbage-collector,
                # resourcequota, ttl-after-finished, namespace, serviceaccount(-token),
                # node-lifecycle, replicaset, deployment, ...
                "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'apiserver' / 'apiserver.crt'}",
                "--cluster-name=audioproc-e2e",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                kubeconfig,
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports.scheduler}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                kubeconfig,
                f"--config={self.state_dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
                f"--server-address=127.0.0.1:{self.ports.kwok}",
                "--v=info",
            ],
            # kwok merges ~/.kwok/kwok.yaml into its configuration first: give it an empty HOME.
            env={**os.environ, "HOME": str(self.state_dir / "home")},
        )
        self._wait_healthy(
            "kube-controller-manager", f"https://127.0.0.1:{self.ports.controller_manager}/healthz"
        )
        self._wait_healthy("kube-scheduler", f"https://127.0.0.1:{self.ports.scheduler}/healthz")
        self._wait_healthy("kwok", f"http://127.0.0.1:{self.ports.kwok}/healthz")
        self.log("kube-controller-manager, kube-scheduler and kwok up")

    def _create_nodes(self) -> None:
        nodes = pool_nodes(self.pools)
        if not nodes:
            return
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        names = {n["metadata"]["name"] for n in nodes}
        _wait_until(
            lambda: names <= self._schedulable_nodes(), 60, f"nodes {sorted(names)} to be Ready"
        )
        self.log(f"{len(nodes)} nodes ready ({self.pools})")

    def _schedulable_nodes(self) -> set[str]:
        """Nodes that are Ready and no longer carry the not-ready taint the API server adds on create."""
        result = self.kubectl("get", "nodes", "-o", "json", check=False)
        if result.returncode != 0:
            return set()
        ready = set()
        for node in json.loads(result.stdout)["items"]:
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            taints = {t["key"] for t in node["spec"].get("taints", [])}
            if conditions.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints:
                ready.add(node["metadata"]["name"])
        return ready

    # -- stop ---------------------------------------------------------------------------------

    def stop(self, keep_logs: bool = False, grace_seconds: float = 10) -> None:
        """Stop the recorded processes, newest first, then remove the state (logs too unless ``keep_logs``).

        With a real node: kubelet and kube-proxy first, then the node's pods go (through
        containerd, still running), then everything else, then what the node left behind.
        """
        node_agents = [r for r in self.processes if r.name in ("kubelet", "kube-proxy")]
        for record in reversed(node_agents):
            self._stop_process(record, grace_seconds)
        if self.node is not None:
            self.node.cleanup()
        for record in reversed(self.processes):
            if record not in node_agents:
                self._stop_process(record, grace_seconds)
        if self.node is not None:
            self.node.cleanup()  # shims and mounts that went away only with containerd
            self.node = None
        self.processes = []
        self._remove_state(keep_logs)

    def _remove_state(self, keep_logs: bool) -> None:
        if not keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            return
        try:
            leftovers = [path for path in self.state_dir.iterdir() if path != self.logs_dir]
        except FileNotFoundError:
            return
        for path in leftovers:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _stop_process(self, record: ProcessRecord, grace_seconds: float) -> None:
        popen = self._popen.pop(record.pid, None)
        if not record.is_ours():
            if popen:
                popen.poll()  # reap it
            return
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while record.is_ours() and time.monotonic() < deadline:
            if popen:
                popen.poll()
            time.sleep(0.1)
        if record.is_ours():
            self.log(f"{record.name} (pid {record.pid}) ignored SIGTERM; killing it")
            os.kill(record.pid, signal.SIGKILL)
        if popen:
            popen.wait()


# --- command line -----------------------------------------------------------------------------


def project_image_refs() -> list[str]:
    """``name:version`` of each image in images/images.json (what ``make images`` tags)."""
    from images.build import load_specs, project_version

    return [spec.ref(project_version()) for spec in load_specs()]


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m e2e.cluster", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster and print `export KUBECONFIG=...`")
    defaults = NodePools()
    up.add_argument("--cpu-nodes", type=int, default=defaults.cpu_nodes)
    up.add_argument("--gpu-nodes", type=int, default=defaults.gpu_nodes)
    up.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node)
    up.add_argument(
        "--real-node",
        choices=("auto", "yes", "no"),
        default="auto",
        help="a real kubelet + containerd node: when it can run here (auto), or insist, or never",
    )
    up.add_argument(
        "--import-images",
        action="store_true",
        help="import the project's images that `make images` built into the real node",
    )
    sub.add_parser("down", help="stop the cluster started by `up` and remove its state")
    imports = sub.add_parser(
        "import", help="import Docker images into the running cluster's real node"
    )
    imports.add_argument(
        "refs", nargs="*", metavar="IMAGE", help="default: the project's images (make images)"
    )
    sub.add_parser("status", help="say whether a cluster is running")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse_args(argv)
    recorded = LocalCluster.from_state(args.state_dir)
    commands = {"up": _up, "down": _down, "import": _import, "status": _status}
    return commands[args.command](args, recorded)


def _up(args: argparse.Namespace, recorded: LocalCluster) -> int:
    if recorded.running_processes():
        _stderr_log(f"already running from {args.state_dir}")
    else:
        pools = NodePools(args.cpu_nodes, args.gpu_nodes, args.gpus_per_node)
        real_node = {"auto": None, "yes": True, "no": False}[args.real_node]
        try:
            started = LocalCluster(args.state_dir, pools=pools, real_node=real_node).start()
            if args.import_images and started.node is not None and started.engine is not None:
                _import_built_images(started, started.engine)
        except ClusterError as error:
            _stderr_log(str(error))
            return 1
    print(f"export KUBECONFIG={recorded.kubeconfig}")
    return 0


def _import_built_images(cluster: LocalCluster, engine: DockerEngine) -> None:
    """Import the project's images that are built; say which are not."""
    built = [ref for ref in project_image_refs() if engine.image_id(ref)]
    for ref in sorted(set(project_image_refs()) - set(built)):
        _stderr_log(f"{ref} is not built (make images): not imported")
    cluster.import_images(built)


def _down(args: argparse.Namespace, recorded: LocalCluster) -> int:
    if not recorded.processes and not args.state_dir.exists():
        _stderr_log("nothing to stop")
        return 0
    recorded.stop()
    _stderr_log(f"stopped; removed {args.state_dir}")
    return 0


def _import(args: argparse.Namespace, recorded: LocalCluster) -> int:
    if recorded.node is None or not recorded.running_processes():
        _stderr_log(f"no running cluster with a real node in {args.state_dir}")
        return 1
    try:
        recorded.engine = DockerEngine.ensure()
        imported = recorded.import_images(args.refs or project_image_refs())
    except (ClusterError, EngineError) as error:
        _stderr_log(str(error))
        return 1
    _stderr_log(f"imported {len(imported)} image(s); unchanged ones were skipped")
    return 0


def _status(args: argparse.Namespace, recorded: LocalCluster) -> int:
    running = recorded.running_processes()
    for record in running:
        print(f"{record.name}\tpid {record.pid}")
    if running:
        print(f"export KUBECONFIG={recorded.kubeconfig}")
    else:
        _stderr_log("not running")
    return 0 if running else 3


if __name__ == "__main__":
    sys.exit(main())
