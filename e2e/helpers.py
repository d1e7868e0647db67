"""Helpers for e2e tests: polling with deadlines, and playing the kubelet for a simulated pod."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from e2e.polling import wait_for as wait_for  # re-exported: the tests poll with it

REPO = Path(__file__).resolve().parents[1]
#: PYTHONPATH for subprocesses, so they run this working tree's code.
SOURCE_PYTHONPATH = os.pathsep.join(
    str(REPO / p) for p in (".", "job_image", "operator", "api_facade")
)
AUDIOJOB_CRD = REPO / "crds" / "audiojob.yaml"
#: The label of the namespaces the ``namespace`` fixture creates (value "true").
NAMESPACE_LABEL = "e2e.audioproc.io/test"

# Pod-template annotations understood by the kwok stages in e2e/kwok/.
EXIT_CODE_ANNOTATION = "e2e.audioproc.io/exit-code"
RUN_DURATION_ANNOTATION = "e2e.audioproc.io/run-duration"
MANUAL_ANNOTATION = "e2e.audioproc.io/manual"
FAIL_INDEXES_ANNOTATION = (
    "e2e.audioproc.io/fail-indexes"  # "1,3": only these completion indexes fail
)
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def job_condition(
    batch: client.BatchV1Api, namespace: str, name: str, condition: str
) -> client.V1JobCondition | None:
    """The Job's condition of that type when it is True, else None."""
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == condition and cond.status == "True":
            return cond
    return None


def pods_of_job(core: client.CoreV1Api, namespace: str, job_name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    ).items


def finish_pod(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    exit_code: int,
    message: str = "",
    reason: str | None = None,
) -> client.V1Pod:
    """Play the kubelet for a pod annotated ``e2e.audioproc.io/manual: "true"``: end its containers.

    Sets every container's ``state.terminated`` (``exitCode``, ``message`` as the termination
    message, ``reason``) and the pod phase (Succeeded for exit code 0, else Failed), as a kubelet
    would after the container exits. Returns the updated pod.
    """
    pod = core.read_namespaced_pod(name, namespace)
    now = datetime.now(UTC).isoformat()
    terminated = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    statuses = [
        {
            "name": container.name,
            "image": container.image,
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": {"terminated": terminated},
        }
        for container in pod.spec.containers
    ]
    phase = "Succeeded" if exit_code == 0 else "Failed"
    reason_not_ready = "PodCompleted" if exit_code == 0 else "PodFailed"
    body = {
        "status": {
            "phase": phase,
            "containerStatuses": statuses,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": reason_not_ready,
                    "lastTransitionTime": now,
                },
                {
                    "type": "ContainersReady",
                    "status": "False",
                    "reason": reason_not_ready,
                    "lastTransitionTime": now,
                },
            ],
        }
    }
    return core.patch_namespaced_pod_status(name, namespace, body)


class OperatorProcess:
    """``python -m audioproc_operator`` as a subprocess watching one namespace, as deployed.

    Each start logs to its own file in ``log_dir``; ``settings`` are extra environment
    variables (operator settings such as ``OPERATOR_ALLOW_POD_ANNOTATIONS``).
    """

    def __init__(
        self, kubeconfig: Path | str, namespace: str, log_dir: Path, **settings: str
    ) -> None:
        self.kubeconfig, self.namespace, self.log_dir = Path(kubeconfig), namespace, log_dir
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": SOURCE_PYTHONPATH,
            "KUBECONFIG": str(self.kubeconfig),
            "OPERATOR_NAMESPACES": json.dumps([self.namespace]),
            "OPERATOR_METRICS_PORT": "0",
            "OPERATOR_RECONCILE_INTERVAL_S": "1",
            **self.settings,
        }
        self.starts += 1
        with open(self.log_dir / f"operator-{self.namespace}-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "audioproc_operator"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patches, exactly like a node dying under it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Kube:
    """kubectl against the test cluster, in one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def run(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def create(
        self, manifest: dict[str, Any], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("create", "-f", "-", input=json.dumps(manifest), check=check)

    def audiojob(self, name: str) -> dict[str, Any]:
        return self.json("get", "audiojob", name)

    def pods(self, audiojob: str) -> list[dict[str, Any]]:
        return self.json("get", "pods", "-l", f"audioproc.io/audiojob={audiojob}")["items"]


def phase_is(kube: Kube, name: str, *phases: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = kube.audiojob(name).get("status") or {}
        return status if status.get("phase") in phases else None

    return probe


def peak_rss_mib(pid: int) -> float:
    """Process ``pid``'s peak resident set (VmHWM of /proc/PID/status), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM in /proc/{pid}/status")


def create_namespace(cluster: Any, name: str) -> str:
    """Namespace ``name``, created and ready for pods: the ServiceAccount admission plugin
    rejects pods until the controller has made ``default``."""
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: (
            cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode
            == 0
        ),
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    return name
