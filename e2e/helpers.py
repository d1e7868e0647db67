"""Helpers for e2e tests: polling with deadlines, and playing the kubelet for a simulated pod."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from kubernetes import client

T = TypeVar("T")

# Pod-template annotations understood by the kwok stages in e2e/kwok/.
EXIT_CODE_ANNOTATION = "e2e.audioproc.io/exit-code"
RUN_DURATION_ANNOTATION = "e2e.audioproc.io/run-duration"
MANUAL_ANNOTATION = "e2e.audioproc.io/manual"
FAIL_INDEXES_ANNOTATION = "e2e.audioproc.io/fail-indexes"  # "1,3": only these completion indexes fail
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def wait_for(check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.25) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout`` s.

    The failure message includes the last value seen, so a timed-out wait says what it saw.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)


def job_condition(batch: client.BatchV1Api, namespace: str, name: str, condition: str) -> client.V1JobCondition | None:
    """The Job's condition of that type when it is True, else None."""
    job = batch.read_namespaced_job_status(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type == condition and cond.status == "True":
            return cond
    return None


def pods_of_job(core: client.CoreV1Api, namespace: str, job_name: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}").items


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
    now = datetime.now(timezone.utc).isoformat()
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
                {"type": "Ready", "status": "False", "reason": reason_not_ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "False", "reason": reason_not_ready, "lastTransitionTime": now},
            ],
        }
    }
    return core.patch_namespaced_pod_status(name, namespace, body)
