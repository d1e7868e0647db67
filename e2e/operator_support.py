"""Helpers of the operator's e2e tests: AudioJob bodies, GPU quotas, the nodes' pools and the
AudioJob's Events as ``kubectl describe aj`` lists them. Fixtures live in e2e/tests/conftest.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from e2e.helpers import Kube, wait_for

ROOT = Path(__file__).resolve().parents[1]
RBAC = ROOT / "crds" / "rbac.yaml"
RBAC_NAMESPACE = "audioproc-system"  # where crds/rbac.yaml puts the ServiceAccount


def operator_service_account_kubeconfig(cluster: Any, path: Path) -> Path:
    """A kubeconfig at ``path`` with the operator's ServiceAccount token: only the rights of
    crds/rbac.yaml (applied here, as a test may have deleted its namespace)."""
    kube = Kube(cluster, RBAC_NAMESPACE)
    kube.run("apply", "-f", str(RBAC))
    token = wait_for(
        lambda: kube.run(
            "create", "token", "audioproc-operator", "--duration=2h", check=False
        ).stdout.strip(),
        timeout=30,
        what="a ServiceAccount token",
    )
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["users"] = [{"name": "audioproc-operator", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "audioproc-operator"
    path.write_text(yaml.safe_dump(config))
    return path


def audiojob(
    name: str, n_items: int, *, pod_annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    items = [
        {"inputUri": f"s3://media/{name}/v{i}.mp4", "videoId": f"v{i}"} for i in range(n_items)
    ]
    meta: dict[str, Any] = {"name": name}
    if pod_annotations:
        meta["annotations"] = {"audioproc.io/pod-annotations": json.dumps(pod_annotations)}
    return {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": meta,
        "spec": {"items": items, **spec},
    }


def node_pools(kube: Kube) -> dict[str, str]:
    nodes = kube.json("get", "nodes")["items"]
    return {
        n["metadata"]["name"]: n["metadata"]["labels"].get("audioproc.io/pool", "") for n in nodes
    }


def gpu_quota(kube: Kube, gpus: int) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "gpus"},
            "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus)}},
        }
    )


def events_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    """The AudioJob's events, oldest first (as ``kubectl describe`` lists them)."""
    items = kube.json(
        "get",
        "events",
        "--field-selector",
        f"involvedObject.kind=AudioJob,involvedObject.name={name}",
    )["items"]
    return sorted(
        items,
        key=lambda e: (e.get("eventTime") or e.get("firstTimestamp") or "", e["metadata"]["name"]),
    )


def reasons_of(kube: Kube, name: str) -> list[str]:
    return [e["reason"] for e in events_of(kube, name)]


def event_with(kube: Kube, name: str, reason: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        return next((e for e in events_of(kube, name) if e["reason"] == reason), None)

    return probe
