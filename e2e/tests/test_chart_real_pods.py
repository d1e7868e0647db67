"""The Helm chart on the real node: operator and facade run as pods of the images `make images`
built, with the values the Tiltfile deploys (ci/dev-values.yaml) plus the real node's overlay
(ci/real-node-values.yaml). A batch goes in through the facade's Service (kube-proxy), real
pods process real media, results come back through the facade, both components' /metrics
are scraped over the pod network, and deleting the operator pod mid-batch neither repeats nor
loses an item.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from audioproc import samples
from chart_support import CHART, REAL_NODE_VALUES, RELEASE, helm
from e2e.helpers import COMPLETION_INDEX_ANNOTATION, Kube, wait_for
from e2e.realnode import RealNode, host_volume

pytestmark = [pytest.mark.e2e, pytest.mark.real_node]

CLAIM = "audioproc-data"  # storage.pvc.existingClaim in ci/real-node-values.yaml
ITEMS = 6
BPM = 120.0


@pytest.fixture(scope="module")
def release(
    cluster: Any,
    real_node: RealNode,
    project_images: dict[str, str],
    audiojob_crd: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """The chart installed in a namespace of its own, with media on its data volume."""
    namespace = f"e2e-chart-real-{secrets.token_hex(3)}"
    data = tmp_path_factory.mktemp("chart-real-data")
    data.chmod(0o777)
    (data / "media").mkdir()
    drums = samples.drum_pattern(8.0, 44100, BPM)
    for i in range(ITEMS):
        samples.write_video(data / "media" / f"clip-{i}.mp4", np.stack([drums, drums]), 44100)
    cluster.kubectl("create", "namespace", namespace)
    kube = Kube(cluster, namespace)
    kube.run(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": host_volume(CLAIM, namespace, data)}
        ),
    )
    args = [
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kubeconfig",
        str(cluster.kubeconfig),
        "--wait",
        "--timeout",
        "5m",
    ]
    for values in REAL_NODE_VALUES:
        args += ["-f", str(values)]
    helm(*args)
    try:
        yield {"namespace": namespace, "kube": kube, "data": data}
    finally:
        kube.run("delete", "audiojobs", "--all", "--timeout=60s", check=False)
        helm(
            "uninstall",
            RELEASE,
            "--namespace",
            namespace,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--wait",
            check=False,
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"{namespace}-{CLAIM}"[:63], "--wait=false", check=False)


def service_url(kube: Kube, name: str) -> str:
    service = kube.json("get", "service", name)
    return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"


def component_pods(kube: Kube, component: str) -> list[dict[str, Any]]:
    return kube.json("get", "pods", "-l", f"app.kubernetes.io/component={component}")["items"]


def test_components_run_as_pods_of_the_built_images(
    release: dict[str, Any], project_images: dict[str, str]
) -> None:
    kube = release["kube"]
    for component, image in (("operator", "audioproc-operator"), ("api", "audioproc-api")):
        (pod,) = [p for p in component_pods(kube, component) if p["status"]["phase"] == "Running"]
        assert pod["spec"]["nodeName"] == "audioproc-real-0"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["image"].endswith(project_images[image])


def test_batch_through_the_facade_survives_the_operator_pod_being_deleted(
    release: dict[str, Any],
) -> None:
    """POST /batch to the facade's Service; delete the operator pod once the first items are
    done; every item ends with exactly one manifest (written once: its created_at never
    changes), each Job is created once, and each index ran in one pod."""
    kube, data = release["kube"], release["data"]
    api = service_url(kube, f"{RELEASE}-audioprocessor-api")
    items = [
        {"input_uri": f"file:///data/media/clip-{i}.mp4", "video_id": f"clip-{i}"}
        for i in range(ITEMS)
    ]
    response = httpx.post(f"{api}/batch", json={"items": items, "concurrency": 2}, timeout=30)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]

    jobs_seen: dict[str, set[str]] = {}
    created_at: dict[str, str] = {}
    output = data / "audioproc"
    deleted_operator: list[str] = []

    def observe() -> dict[str, Any] | None:
        for job in kube.json("get", "jobs")["items"]:
            jobs_seen.setdefault(job["metadata"]["name"], set()).add(job["metadata"]["uid"])
        for manifest in output.glob("*/*/manifest.json"):
            created_at.setdefault(
                manifest.parent.name, json.loads(manifest.read_text())["created_at"]
            )
        if created_at and not deleted_operator and len(created_at) < ITEMS:
            (operator,) = component_pods(kube, "operator")
            kube.run("delete", "pod", operator["metadata"]["name"], "--wait=false")
            deleted_operator.append(operator["metadata"]["name"])
        status = httpx.get(f"{api}/status/{task_id}", timeout=10).json()
        return status if status["status"] in ("completed", "failed") else None

    status = wait_for(observe, timeout=600, interval=0.5, what="the batch to finish")
    assert status["status"] == "completed", status
    assert deleted_operator, "the batch finished before the operator pod could be deleted"
    new_operator = [
        p for p in component_pods(kube, "operator") if p["metadata"]["name"] not in deleted_operator
    ]
    assert new_operator and new_operator[0]["status"]["phase"] == "Running"

    manifests = sorted(output.glob("*/*/manifest.json"))
    assert sorted(m.parent.name for m in manifests) == sorted(i["video_id"] for i in items)
    for manifest in manifests:
        assert json.loads(manifest.read_text())["created_at"] == created_at[manifest.parent.name], (
            manifest
        )
    assert all(len(uids) == 1 for uids in jobs_seen.values()), jobs_seen
    pods = kube.json("get", "pods", "-l", "audioproc.io/audiojob")["items"]
    indexes = [p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] for p in pods]
    assert sorted(indexes) == sorted(set(indexes)), "an item ran in more than one pod"

    for item in items:
        result = httpx.get(f"{api}/results/{task_id}/{item['video_id']}", timeout=10)
        assert result.status_code == 200, result.text
        tempo = {e["name"]: e for e in result.json()["extractors"]}["tempo"]
        assert tempo["features"]["bpm"] == pytest.approx(BPM, rel=0.005)


def test_metrics_are_scraped_over_the_pod_network(release: dict[str, Any]) -> None:
    kube = release["kube"]
    api = httpx.get(f"{service_url(kube, f'{RELEASE}-audioprocessor-api')}/metrics", timeout=10)
    assert api.status_code == 200 and "audioproc_api_requests_total" in api.text
    # The operator's metrics Service, and its pod's address on the bridge (what Prometheus scrapes).
    url = service_url(kube, f"{RELEASE}-audioprocessor-operator-metrics")
    operator = wait_for(lambda: _get(f"{url}/metrics"), timeout=60, what="the operator's /metrics")
    assert "audioproc_operator_" in operator
    (pod,) = [p for p in component_pods(kube, "operator") if p["status"]["phase"] == "Running"]
    direct = httpx.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10)
    assert direct.status_code == 200 and "audioproc_operator_" in direct.text


def _get(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        time.sleep(0.5)
        return None
    return response.text if response.status_code == 200 else None
