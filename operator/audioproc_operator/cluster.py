"""The Kubernetes API calls the reconciler makes, behind one small interface.

``ClusterApi`` names each call the reconciler needs and nothing else; ``KubernetesApi``
makes them with the kubernetes client (the operator, the e2e tests), and the unit tests pass
a fake that records them (operator/tests/fake_cluster.py). Errors are the client's own
``ApiException``: a create that finds the object already there raises it with status 409,
a delete of an object already gone with 404, and the reconciler decides what each means.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from kubernetes import client

from audioproc.models.audiojob import AUDIOJOB_UID_LABEL, GROUP, PLURAL, VERSION
from audioproc_operator import kueue

ChildKind = Literal["ConfigMap", "Job"]


class ClusterApi(Protocol):
    """What the reconciler asks of the API server."""

    def resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's ResourceQuotas as camelCase dicts (``spec.hard``, ``status.hard``,
        ``status.used``), as ``quota.namespace_room`` reads them."""
        ...

    def create_child(self, kind: ChildKind, manifest: dict[str, Any]) -> None:
        """Create a ConfigMap or Job in ``manifest.metadata.namespace``; 409 if it exists."""
        ...

    def child_owner_uid(self, kind: ChildKind, namespace: str, name: str) -> str | None:
        """The AudioJob uid label of an existing ConfigMap or Job (None: unlabelled)."""
        ...

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None: ...

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete with foreground propagation (the Job's pods go first); 404 if gone."""
        ...

    def patch_audiojob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch an AudioJob's status subresource with ``status`` (wire form)."""
        ...

    def pending_workloads(self, namespace: str, local_queue: str) -> dict[str, Any] | None:
        """Kueue's ``PendingWorkloadsSummary`` of a LocalQueue (None: not served here)."""
        ...

    def set_workload_active(self, namespace: str, job_name: str, active: bool) -> bool:
        """(De)activate the Kueue Workload of Job ``job_name``; False: Kueue made none yet."""
        ...


class KubernetesApi:
    """``ClusterApi`` over the kubernetes client."""

    def __init__(self, api: client.ApiClient) -> None:
        self.client = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def resource_quotas(self, namespace: str) -> list[dict[str, Any]]:
        quotas = self.core.list_namespaced_resource_quota(namespace).to_dict()["items"]
        return [_camel_quota(quota) for quota in quotas]

    def create_child(self, kind: ChildKind, manifest: dict[str, Any]) -> None:
        # The client takes manifests as plain dicts too (it serialises either); its
        # annotations name only the generated models.
        namespace = manifest["metadata"]["namespace"]
        if kind == "ConfigMap":
            self.core.create_namespaced_config_map(namespace, manifest)  # type: ignore[arg-type]
        else:
            self.batch.create_namespaced_job(namespace, manifest)  # type: ignore[arg-type]

    def child_owner_uid(self, kind: ChildKind, namespace: str, name: str) -> str | None:
        if kind == "ConfigMap":
            existing: Any = self.core.read_namespaced_config_map(name, namespace)
        else:
            existing = self.batch.read_namespaced_job(name, namespace)
        owner: str | None = (existing.metadata.labels or {}).get(AUDIOJOB_UID_LABEL)
        return owner

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job(name, namespace, patch)

    def delete_job(self, namespace: str, name: str) -> None:
        self.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground")

    def patch_audiojob_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )

    def pending_workloads(self, namespace: str, local_queue: str) -> dict[str, Any] | None:
        return kueue.pending_workloads(self.client, namespace, local_queue)

    def set_workload_active(self, namespace: str, job_name: str, active: bool) -> bool:
        return kueue.set_workload_active(self.custom, namespace, job_name, active)


def _camel_quota(quota: dict[str, Any]) -> dict[str, Any]:
    """The client's snake_case ResourceQuota dict, reduced to the camelCase fields we read."""
    return {
        "spec": {"hard": (quota.get("spec") or {}).get("hard") or {}},
        "status": {
            "hard": (quota.get("status") or {}).get("hard") or {},
            "used": (quota.get("status") or {}).get("used") or {},
        },
    }
