"""Kueue mode: the operator creates an AudioJob's Jobs suspended and Kueue admits them.

An AudioJob is in Kueue mode when it names a LocalQueue (``spec.queueName``) or the operator
has a default one (``OPERATOR_DEFAULT_QUEUE_NAME``); the queue is fixed at placement
(``status.queue.localQueue``). Then the operator's own GPU placement (``MAX_GPU_WORKERS``,
the namespace's GPU quota) is skipped: every Job carries the ``kueue.x-k8s.io/queue-name``
label and starts suspended, and Kueue unsuspends it once its ClusterQueue has quota for it
(per ResourceFlavor: the CPU and GPU pools' node labels select the flavor). While a Job is
suspended by Kueue the AudioJob is Pending, "queued in Kueue", with its position from
Kueue's visibility API (``visibility.kueue.x-k8s.io/v1beta2``, ``pendingworkloads`` of the
LocalQueue) when the cluster serves it.

Everything here is pure except ``pending_workloads``, the one read of the visibility API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from audioproc.models.audiojob import AudioJobSpec, AudioJobStatus, Device, QueueStatus
from audioproc_operator.builder import DeviceKind
from audioproc_operator.events import Event, Reason, normal
from audioproc_operator.settings import OperatorSettings
from audioproc_operator.status import JobView

KUEUE_GROUP: Final = "kueue.x-k8s.io"
KUEUE_VERSION: Final = "v1beta2"
VISIBILITY_GROUP: Final = "visibility.kueue.x-k8s.io"
VISIBILITY_VERSION: Final = "v1beta2"
QUEUED_IN_KUEUE: Final = "queued in Kueue"
#: Seconds one LocalQueue's pending workloads are reused for all its AudioJobs' positions.
PENDING_MAX_AGE_S: Final = 5.0


def queue_name(spec: AudioJobSpec, settings: OperatorSettings) -> str | None:
    """The LocalQueue an AudioJob is submitted to at placement, or None (operator placement)."""
    return spec.queue_name or settings.default_queue_name


def kueue_device(spec: AudioJobSpec) -> DeviceKind:
    """The pool of a Kueue-admitted AudioJob: ``auto`` asks for a GPU and waits in Kueue
    for GPU quota (the operator cannot see Kueue's quotas to fall back to the CPU pool)."""
    return "cpu" if spec.device == Device.cpu else "gpu"


@dataclass(frozen=True)
class Position:
    """A pending workload's place in Kueue's queues (0: admitted next)."""

    in_local_queue: int
    in_cluster_queue: int


def position_of(summary: dict[str, Any] | None, job_name: str) -> Position | None:
    """The position of the workload that ``job_name`` owns in a ``PendingWorkloadsSummary``.

    ``summary`` is the visibility API's answer (``items[].metadata.ownerReferences`` name the
    Job); None when there is none or the Job's workload is not listed (admitted already, or
    not yet queued).
    """
    for item in (summary or {}).get("items") or []:
        owners = (item.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("kind") == "Job" and o.get("name") == job_name for o in owners):
            return Position(
                int(item.get("positionInLocalQueue") or 0),
                int(item.get("positionInClusterQueue") or 0),
            )
    return None


def queue_state(
    local_queue: str, jobs: list[JobView], current: str | None, user_suspended: bool
) -> QueueStatus:
    """Admitted or not, from the current Job (``current``: its name): Kueue unsuspends a Job
    when it admits it and suspends it again when it evicts it (preemption)."""
    job = next((j for j in jobs if j.name == current), None)
    admitted = job is not None and (job.finished or not job.suspend) and not user_suspended
    return QueueStatus(local_queue=local_queue, job=current, admitted=admitted)


def queued_message(queue: QueueStatus) -> str:
    """``queued in Kueue (LocalQueue q), position 2 in the LocalQueue, 5 in the ClusterQueue``."""
    message = f"{QUEUED_IN_KUEUE} (LocalQueue {queue.local_queue})"
    if queue.position_in_local_queue is not None:
        message += (
            f", position {queue.position_in_local_queue} in the LocalQueue, "
            f"{queue.position_in_cluster_queue} in the ClusterQueue"
        )
    return message


def admission_events(seen: AudioJobStatus, status: AudioJobStatus) -> list[Event]:
    """An Admitted event when Kueue admits a Job, a Queued one when Kueue takes the admission
    of the same Job back (preemption, eviction) while the user did not suspend the AudioJob."""
    if status.queue is None:
        return []
    before = seen.queue if seen.queue is not None and seen.queue.job == status.queue.job else None
    was = before is not None and before.admitted
    if status.queue.admitted and not was:
        return [normal(Reason.admitted, f"admitted by Kueue: Job {status.queue.job} runs")]
    queued_again = status.message is not None and status.message.startswith(QUEUED_IN_KUEUE)
    if was and not status.queue.admitted and queued_again:
        return [normal(Reason.queued, f"Kueue took the admission back: {status.message}")]
    return []


def with_position(queue: QueueStatus, position: Position | None) -> QueueStatus:
    if position is None:
        return queue
    return queue.model_copy(
        update={
            "position_in_local_queue": position.in_local_queue,
            "position_in_cluster_queue": position.in_cluster_queue,
        }
    )


def pending_workloads(
    api: client.ApiClient, namespace: str, local_queue: str
) -> dict[str, Any] | None:
    """The LocalQueue's ``PendingWorkloadsSummary`` from Kueue's visibility API, or None where
    the cluster does not serve it (no APIService: 404; its server unreachable: 503) or the
    operator may not read it (403): the position is then left out, admission is unaffected."""
    # A subresource of an aggregated API: the generated clients have no call for it.
    path = (
        f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSION}/namespaces/{namespace}"
        f"/localqueues/{local_queue}/pendingworkloads"
    )
    request = api.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    try:
        response = api.call_api(*request)
        response.read()
        # "object": the JSON as plain dicts (the client's annotation says str)
        summary = cast(dict[str, Any], api.response_deserialize(response, {"200": "object"}).data)
    except ApiException as exc:
        if exc.status in (403, 404, 503):
            return None
        raise
    return summary


def set_workload_active(
    custom: client.CustomObjectsApi, namespace: str, job_name: str, active: bool
) -> bool:
    """(De)activate the Workload Kueue made for the Job ``job_name``: Kueue evicts an inactive
    one (suspends the Job, gives its quota back) and queues it again once active. False when
    Kueue has made none yet. Lists the namespace's Workloads: only on suspend and resume."""
    workloads = cast(
        dict[str, Any],
        custom.list_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"),
    )
    for workload in workloads.get("items") or []:
        meta = workload["metadata"]
        if not any(
            o.get("kind") == "Job" and o.get("name") == job_name
            for o in meta.get("ownerReferences") or []
        ):
            continue
        if (workload.get("spec") or {}).get("active", True) != active:
            custom.patch_namespaced_custom_object(
                KUEUE_GROUP,
                KUEUE_VERSION,
                namespace,
                "workloads",
                meta["name"],
                {"spec": {"active": active}},
            )
        return True
    return False


class PendingWorkloads:
    """Reads of the visibility API, one per LocalQueue per ``max_age_s`` seconds: the answer
    lists every pending workload of the queue, so all its AudioJobs' positions share it.

    ``read`` is ``pending_workloads`` bound to an API client: (namespace, LocalQueue) ->
    summary or None; ``clock`` gives seconds (monotonic).
    """

    def __init__(
        self,
        read: Callable[[str, str], dict[str, Any] | None],
        max_age_s: float = PENDING_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.max_age_s, self.clock = read, max_age_s, clock
        self._lock = threading.Lock()
        self._read: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}

    def summary(self, namespace: str, local_queue: str) -> dict[str, Any] | None:
        key = (namespace, local_queue)
        with self._lock:
            cached = self._read.get(key)
        if cached is not None and self.clock() - cached[0] < self.max_age_s:
            return cached[1]
        summary = self.read(namespace, local_queue)
        with self._lock:
            self._read[key] = (self.clock(), summary)
        return summary
