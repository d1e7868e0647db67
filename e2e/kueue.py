"""Kueue's controller manager as a host process against the local control plane.

Built from Go modules by ``e2e/controlplane/build-kueue.sh`` (``make kueue-bin``), which keeps
Kueue's CRDs from the module source beside the binary. ``KueueController.start()``:

1. applies those CRDs (server-side: they are too big for the last-applied annotation);
2. makes a CA and a serving certificate for 127.0.0.1 (openssl) and writes Kueue's
   Configuration: webhooks on loopback with that certificate (``internalCertManagement`` off),
   ``integrations.frameworks: [batch/job]``, ``manageJobsWithoutQueueName: false``, no leader
   election;
3. starts ``kueue --config ... --kubeconfig ...`` and registers its webhooks with
   ``clientConfig.url: https://127.0.0.1:PORT/...`` and the CA bundle: Kueue's own resources,
   and batch/v1 Jobs only in namespaces labelled ``JOB_NAMESPACE_LABEL`` (so a stopped Kueue
   cannot block the Jobs of other tests; with ``failurePolicy: Fail`` it would);
4. serves the visibility API (``visibility.kueue.x-k8s.io``) through the API server's
   aggregation layer: an APIService whose Service is an ExternalName for localhost.

With its own certificate management off, Kueue v0.17 reads the certificates of its metrics
and visibility servers from fixed paths (``FIXED_CERT_DIRS``, hard-coded in cmd/kueue and
pkg/visibility): the serving pair is copied there, which needs root (``kueue_missing`` says
so otherwise).

``stop()`` removes the webhook configurations and the APIService first, then stops Kueue.
"""

from __future__ import annotations

import base64
import copy
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from e2e.cluster import E2E_DIR, Cluster, ClusterError, _die_with_parent, _http_ok
from e2e.polling import wait_for
from e2e.realnode import free_ports

BUILD_SCRIPT = E2E_DIR / "controlplane" / "build-kueue.sh"
#: Namespaces whose Jobs go through Kueue's webhooks (label key and value).
JOB_NAMESPACE_LABEL = ("e2e.audioproc.io/kueue", "true")
KUEUE_NAMESPACE = "kueue-system"
#: Where Kueue v0.17 reads tls.crt/tls.key of its metrics and visibility servers.
FIXED_CERT_DIRS = (Path("/etc/kueue/metrics/certs"), Path("/visibility"))
WEBHOOK_NAMES = {
    "MutatingWebhookConfiguration": "audioproc-e2e-kueue",
    "ValidatingWebhookConfiguration": "audioproc-e2e-kueue",
}
VISIBILITY_VERSIONS = ("v1beta1", "v1beta2")


def kueue_dir() -> Path:
    """Where build-kueue.sh puts (or would put) the binary and the CRDs; builds nothing."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def kueue_missing() -> str | None:
    """Why Kueue cannot be started here, or None."""
    root = kueue_dir()
    if not (root / "bin" / "kueue").exists() or not (root / ".stamp-config").exists():
        return f"kueue is not built in {root} (make kueue-bin)"
    if os.geteuid() != 0:
        dirs = ", ".join(str(d) for d in FIXED_CERT_DIRS)
        return f"kueue v0.17 reads certificates from {dirs}, which only root may write"
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> None:
    """``ca.crt`` and a serving pair ``tls.crt``/``tls.key`` for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=audioproc-e2e-kueue-ca",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
        "-subj", "/CN=127.0.0.1", cwd=directory,
    )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "tls.crt",
        cwd=directory,
    )  # fmt: skip


def configuration(
    webhook_port: int, health_port: int, visibility_port: int, cert_dir: Path
) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for a host process."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        "fairSharing": {
            "preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]
        },
        "visibilityServer": {"bindAddress": "127.0.0.1", "bindPort": visibility_port},
    }


def webhook_configurations(
    manifests: list[dict[str, Any]], port: int, ca_bundle: str
) -> list[dict[str, Any]]:
    """Kueue's webhook configurations (config/components/webhook/manifests.yaml), reduced to
    Kueue's own resources and batch/v1 Jobs, pointed at ``https://127.0.0.1:port``."""
    bundle = base64.b64encode(ca_bundle.encode()).decode()
    configs = []
    for manifest in manifests:
        config = copy.deepcopy(manifest)
        config["metadata"] = {"name": WEBHOOK_NAMES[config["kind"]]}
        kept = []
        for hook in config["webhooks"]:
            groups = {g for rule in hook.get("rules", []) for g in rule.get("apiGroups", [])}
            if not groups <= {"kueue.x-k8s.io", "batch"}:
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle}
            if "batch" in groups:
                key, value = JOB_NAMESPACE_LABEL
                hook["namespaceSelector"] = {"matchLabels": {key: value}}
            kept.append(hook)
        config["webhooks"] = kept
        configs.append(config)
    return configs


def visibility_objects(port: int) -> list[dict[str, Any]]:
    """The visibility API's APIServices and their Service: an ExternalName for 127.0.0.1, which
    the aggregator dials at the APIService's port (no kube-proxy needed)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "visibility-server", "namespace": KUEUE_NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": "localhost"},
    }
    apiservices = [
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": f"{version}.visibility.kueue.x-k8s.io"},
            "spec": {
                "group": "visibility.kueue.x-k8s.io",
                "version": version,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "insecureSkipTLSVerify": True,  # as Kueue's own manifests
                "service": {
                    "name": "visibility-server",
                    "namespace": KUEUE_NAMESPACE,
                    "port": port,
                },
            },
        }
        for version in VISIBILITY_VERSIONS
    ]
    return [service, *apiservices]


class KueueController:
    """One Kueue controller manager for ``cluster``; state and log in ``state_dir``."""

    def __init__(self, cluster: Cluster, state_dir: Path) -> None:
        self.cluster, self.state_dir = cluster, state_dir
        self.root = kueue_dir()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "kueue.log"
        self.webhook_port, self.health_port, self.visibility_port = free_ports(3)

    def _apply(self, objects: list[dict[str, Any]]) -> None:
        self.cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(objects),
        )  # fmt: skip

    def start(self) -> KueueController:
        crds = sorted((self.root / "crds").glob("*.yaml"))
        self.cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", *[f"-f={p}" for p in crds]
        )
        names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in crds]
        self.cluster.kubectl(
            "wait", "--for=condition=Established", *[f"crd/{n}" for n in names], "--timeout=60s"
        )
        self._apply(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}}]
        )
        certs = self.state_dir / "certs"
        make_certificates(certs)
        for directory in FIXED_CERT_DIRS:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in ("tls.crt", "tls.key"):
                (directory / name).write_bytes((certs / name).read_bytes())
            (directory / "tls.key").chmod(0o600)
        config_path = self.state_dir / "kueue-config.yaml"
        config_path.write_text(
            yaml.safe_dump(
                configuration(self.webhook_port, self.health_port, self.visibility_port, certs)
            )
        )
        args = [
            str(self.root / "bin" / "kueue"),
            f"--config={config_path}",
            f"--kubeconfig={self.cluster.kubeconfig}",
            f"--visibility-server-port={self.visibility_port}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready()
            webhooks = self.root / "webhook-manifests.yaml"  # from the module, by build-kueue.sh
            manifests = list(yaml.safe_load_all(webhooks.read_text()))
            self._apply(
                webhook_configurations(manifests, self.webhook_port, (certs / "ca.crt").read_text())
            )
            self._apply(visibility_objects(self.visibility_port))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
                raise ClusterError(f"kueue exited with {self.process.returncode}:\n{tail}")
            return _http_ok(f"http://127.0.0.1:{self.health_port}/readyz")

        try:
            wait_for(ready, timeout=120, what="kueue's readyz", interval=0.5)
        except TimeoutError as error:
            raise ClusterError(f"{error}; log: {self.log_path}") from None

    def stop(self) -> None:
        """Webhooks and the APIService go first (a stopped Kueue must block nothing), then Kueue."""
        kinds = [
            *(f"{kind.lower()}/{name}" for kind, name in WEBHOOK_NAMES.items()),
            *(f"apiservice/{v}.visibility.kueue.x-k8s.io" for v in VISIBILITY_VERSIONS),
        ]
        self.cluster.kubectl("delete", "--ignore-not-found", "--wait=false", *kinds, check=False)
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
