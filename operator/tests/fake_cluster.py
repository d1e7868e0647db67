"""A ``ClusterApi`` in memory for the reconciler's unit tests, and AudioJob bodies.

``FakeCluster`` keeps what is created (a second create of a name is a 409, as on the API
server) and records every call in order, so a test can assert what was asked and when.
The e2e tests run the same reconciler against the real control plane.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from audioproc.models.audiojob import AUDIOJOB_UID_LABEL, AudioJobSpec
from audioproc_operator.cluster import ChildKind
from audioproc_operator.events import Event, Reason
from audioproc_operator.reconcile import AudioJobEntry, audiojob_entry
from audioproc_operator.status import JobView

NAMESPACE = "team-a"


class FakeCluster:
    """Records calls as tuples: ("create", kind, name), ("patch_status", name, status), ..."""

    def __init__(self, quotas: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.quotas = quotas or {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []

    def resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        self.calls.append(("resource_quotas", namespace))
        return self.quotas.get(namespace, [])

    def create_child(self, kind: ChildKind, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self.calls.append(("create", kind, meta["name"]))
        key = (kind, meta["namespace"], meta["name"])
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = manifest

    def child_owner_uid(self, kind: ChildKind, namespace: str, name: str) -> str | None:
        self.calls.append(("read", kind, name))
        labels = self.objects[(kind, namespace, name)]["metadata"].get("labels") or {}
        owner: str | None = labels.get(AUDIOJOB_UID_LABEL)
        return owner

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch_job", name, patch))

    def delete_job(self, namespace: str, name: str) -> None:
        self.calls.append(("delete_job", name))
        if self.objects.pop(("Job", namespace, name), None) is None:
            raise ApiException(status=404, reason="NotFound")

    def patch_audiojob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.calls.append(("patch_status", name, status))

    def pending_workloads(self, namespace: str, local_queue: str) -> dict[str, Any] | None:
        self.calls.append(("pending_workloads", local_queue))
        return None  # no visibility API: positions are left out

    def set_workload_active(self, namespace: str, job_name: str, active: bool) -> bool:
        self.calls.append(("set_workload_active", job_name, active))
        return True

    # ---------------------------------------------------------------- what tests read

    def statuses(self, name: str) -> list[dict[str, Any]]:
        """Every status patched on AudioJob ``name``, in order."""
        return [c[2] for c in self.calls if c[0] == "patch_status" and c[1] == name]

    def created(self, kind: ChildKind) -> list[dict[str, Any]]:
        return [m for (k, _, _), m in self.objects.items() if k == kind]

    def kinds_of_calls(self) -> list[str]:
        return [c[0] if c[0] != "create" else f"create {c[1]}" for c in self.calls]


class Events(list[tuple[dict[str, Any], Event]]):
    """An ``EventSink`` that keeps what is posted."""

    def __call__(self, audiojob: dict[str, Any], event: Event) -> None:
        self.append((audiojob, event))

    def reasons(self, name: str | None = None) -> list[Reason]:
        return [e.reason for obj, e in self if name is None or obj["metadata"]["name"] == name]

    def messages(self, reason: Reason) -> list[str]:
        return [e.message for _, e in self if e.reason is reason]


def audiojob(
    name: str = "aj",
    items: int = 3,
    status: dict[str, Any] | None = None,
    resource_version: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """An AudioJob body as the watch delivers it (camelCase spec and status)."""
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": str(resource_version),
            "creationTimestamp": f"2026-12-01T00:00:0{resource_version % 10}Z",
        },
        # with the CRD's defaults, as the API server stores it
        "spec": AudioJobSpec.model_validate(
            {
                "items": [
                    {"inputUri": f"s3://media/{name}-{i}.mp4", "videoId": f"{name}-v{i}"}
                    for i in range(items)
                ],
                **spec,
            }
        ).model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status or {},
    }


def seen_by_the_watch(body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    """``body`` as the watch shows it once ``status`` (a patch of ours) has come back."""
    meta = body["metadata"]
    version = int(meta["resourceVersion"]) + 1
    return {**body, "metadata": {**meta, "resourceVersion": str(version)}, "status": status}


def entries(*bodies: dict[str, Any]) -> list[AudioJobEntry]:
    return [audiojob_entry(body) for body in bodies]


def job_view(
    body: dict[str, Any],
    chunk: int = 0,
    completed: str = "",
    failed: str = "",
    finished: bool = False,
    suspend: bool = False,
    parallelism: int = 1,
) -> JobView:
    """The slim view of an AudioJob's Job, as the jobs index holds it."""
    meta = body["metadata"]
    return JobView(
        name=f"{meta['name']}-{chunk}",
        owner_uid=meta["uid"],
        chunk=chunk,
        first_index=0,
        completed=completed,
        failed=failed,
        active=0 if finished else parallelism,
        finished=finished,
        failure_message=None,
        suspend=suspend,
        parallelism=parallelism,
    )


def gpu_quota(hard: int, used: int = 0) -> dict[str, Any]:
    """A ResourceQuota on ``requests.nvidia.com/gpu`` as ``ClusterApi.resource_quotas`` gives it."""
    key = "requests.nvidia.com/gpu"
    return {
        "spec": {"hard": {key: str(hard)}},
        "status": {"hard": {key: str(hard)}, "used": {key: str(used)}},
    }
