"""The REST facade's kubernetes backend on the real control plane, with the operator running.

The shared endpoint tests (api_facade/tests/shared_endpoints.py) run here against a facade
whose backend creates, watches and deletes AudioJobs in a fresh namespace; the operator (a
subprocess, as deployed) turns them into Indexed Jobs, kwok runs their pods on fake nodes.

kwok's pods run no code, so the test stands in for them where they would write results: on
each new AudioJob it runs the real pipeline over the AudioJob's items into
``<spec.output>/<name>/<videoId>/manifest.json`` (the pod contract), and the operator records
that location when the simulated pod succeeds. Manifests are therefore real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes import watch
from tests.facade_support import Media, Service, make_media, wait_finished, wait_until
from tests.shared_endpoints import SharedEndpointTests, process_body

from audioproc.models.audiojob import GROUP, MAX_ITEMS, PLURAL, REQUEST_ID_ANNOTATION, VERSION
from audioproc.models.pod_contract import read_item_lines
from audioproc.runner import ItemRequest, process_items
from audioproc.settings import PipelineSettings
from audioproc.storage import open_stream
from audioproc_api.app import create_app
from audioproc_api.backends.kubernetes import KubernetesBackend
from audioproc_api.settings import ApiSettings
from e2e.helpers import OperatorProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    """The media of the facade's own tests (api_facade/tests/conftest.py), made here too."""
    return make_media(tmp_path_factory.mktemp("media"))


def listed_items(uri: str) -> list[dict[str, Any]]:
    """An item list's items (wire form), as the pods of an itemsFrom AudioJob read them."""
    with open_stream(uri) as stream:
        items = read_item_lines(stream, uri, 1, MAX_ITEMS)
    return [item.model_dump(mode="json", by_alias=True) for item in items]


class PodStandIn:
    """Writes each new AudioJob's manifests with the real pipeline, as its pods would."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str, media_root: Path) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.settings = PipelineSettings(allowed_roots=[media_root], use_gpu=False)
        self.done: set[str] = set()
        self.changed = threading.Condition()
        self._watch = watch.Watch()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pod-stand-in", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._watch.stop()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            if not self._stopping:  # stopping closes the watch's connection under it
                raise

    def _serve(self) -> None:
        for event in self._watch.stream(
            self.api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            timeout_seconds=600,
        ):
            if event["type"] != "ADDED":
                continue
            job = event["raw_object"]
            spec = job["spec"]
            items = [
                ItemRequest(
                    i["inputUri"], i["videoId"], i.get("extractors") or spec.get("extractors")
                )
                for i in spec.get("items") or listed_items(spec["itemsFrom"]["uri"])
            ]
            name = job["metadata"]["name"]
            if len(items) <= 20:  # a 10,000-item AudioJob is not this test's business
                process_items(
                    items, output=f"{spec['output']}/{name}", device="cpu", settings=self.settings
                )
            with self.changed:
                self.done.add(name)
                self.changed.notify_all()

    def wait(self, name: str, timeout_s: float = 120) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: name in self.done, timeout_s), (
                f"stand-in never saw {name}"
            )


class KubernetesService(Service):
    name = "kubernetes"

    def __init__(
        self, cluster: Any, namespace: str, media: Media, tmp_path: Path, api_client: k8s.ApiClient
    ) -> None:
        self.media = media
        self.namespace = namespace
        self.cluster = cluster
        self.api_client = api_client
        self.settings = ApiSettings(
            api_backend="kubernetes",
            kubeconfig=cluster.kubeconfig,
            api_namespace=namespace,
            output_uri=(tmp_path / "out").as_uri(),
            allowed_roots=[media.root],
            api_wait_timeout_s=120,
        )
        self.backend = KubernetesBackend(self.settings, self.settings.output_uri)
        self.client = TestClient(
            create_app(self.settings, backend=self.backend, output=self.settings.output_uri)
        )
        self.stand_in = PodStandIn(api_client, namespace, media.root)

    def make_client(self, **settings_overrides) -> TestClient:
        settings = self.settings.model_copy(update=settings_overrides)
        return TestClient(
            create_app(settings, backend=self.backend, output=self.settings.output_uri)
        )

    def wait_finished(self, task_id: str) -> dict:
        self.stand_in.wait(task_id)
        return wait_finished(self.client, task_id)

    def stored_request_id(self, task_id: str) -> str | None:
        job = k8s.CustomObjectsApi(self.api_client).get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, task_id
        )
        return job["metadata"]["annotations"][REQUEST_ID_ANNOTATION]

    def assert_work_stopped(self, task_id: str) -> None:
        batch = k8s.BatchV1Api(self.api_client)

        def children_gone() -> bool:
            jobs = batch.list_namespaced_job(self.namespace).items
            return not [
                j for j in jobs if any(o.name == task_id for o in j.metadata.owner_references or [])
            ]

        wait_until(children_gone, timeout_s=60, what=f"the Jobs of {task_id} to be deleted")


@pytest.fixture
def service(
    cluster: Any,
    namespace: str,
    audiojob_crd: None,
    media: Media,
    tmp_path: Path,
    api_client: k8s.ApiClient,
) -> Iterator[KubernetesService]:
    svc = KubernetesService(cluster, namespace, media, tmp_path, api_client)
    operator = OperatorProcess(cluster.kubeconfig, namespace, tmp_path)
    operator.start()
    svc.stand_in.start()
    try:
        with svc.client:
            yield svc
    finally:
        # AudioJobs go while the operator runs (it removes its finalizer), then the operator.
        cluster.kubectl("delete", PLURAL, "--all", "-n", namespace, "--timeout=30s", check=False)
        operator.stop()
        svc.stand_in.stop()


class TestKubernetesEndpoints(SharedEndpointTests):
    """The shared endpoint tests, on the kubernetes backend (``service`` above)."""


def test_jobs_are_created_by_the_operator_not_the_facade(service: KubernetesService) -> None:
    """The facade creates the AudioJob only; what runs it is the operator's doing."""
    body = {
        "input_uri": str(service.media.good[0]),
        "video_id": "who",
        "extractors": ["loudness"],
        "use_gpu": False,
    }
    task_id = service.client.post("/process", json=body).json()["task_id"]
    status = service.wait_finished(task_id)
    assert status["status"] == "completed" and status["device"] == "cpu"
    jobs = k8s.BatchV1Api(service.api_client).list_namespaced_job(service.namespace).items
    owners = {(o.kind, o.name) for j in jobs for o in j.metadata.owner_references or []}
    assert owners == {("AudioJob", task_id)}


def test_task_backend_shows_the_audiojobs_jobs_and_events(service: KubernetesService) -> None:
    """GET /tasks/{id}/backend: the AudioJob's Jobs (listed by the operator's uid label) and
    its Events as the operator posted them (Placed, then JobCreated naming the Job)."""
    body = {
        "input_uri": str(service.media.good[0]),
        "video_id": "shown",
        "extractors": ["loudness"],
        "use_gpu": False,
    }
    task_id = service.client.post("/process", json=body).json()["task_id"]
    service.wait_finished(task_id)

    def with_events() -> dict[str, Any] | None:
        # kopf posts events in the background: they may trail the status by a moment
        objects: dict[str, Any] = service.client.get(f"/tasks/{task_id}/backend").json()
        reasons = [e["reason"] for e in objects["events"]]
        return objects if {"Placed", "JobCreated"} <= set(reasons) else None

    objects = wait_until(
        with_events, timeout_s=30, what=f"Placed and JobCreated events of {task_id}"
    )
    assert (objects["audiojob"], objects["namespace"]) == (task_id, service.namespace)
    assert objects["phase"] in ("Completed", "PartiallyCompleted")
    [job] = _jobs_of(service, task_id)
    [shown] = objects["jobs"]
    assert shown["name"] == job.metadata.name
    counts = (shown["completions"], shown["succeeded"], shown["failed"], shown["active"])
    assert counts == (1, 1, 0, 0)
    assert shown["suspended"] is False
    reasons = [e["reason"] for e in objects["events"]]
    assert reasons.index("Placed") < reasons.index("JobCreated")  # oldest first
    [created] = [e for e in objects["events"] if e["reason"] == "JobCreated"]
    assert job.metadata.name in created["message"] and created["type"] == "Normal"
    # another task's id, and the same id once the AudioJob is gone, are 404
    assert service.client.delete(f"/tasks/{task_id}").status_code == 200
    wait_until(
        lambda: service.client.get(f"/tasks/{task_id}/backend").status_code == 404,
        timeout_s=60,
        what=f"{task_id} to be gone",
    )


def test_cancel_deletes_in_the_foreground_reads_cancelled_and_keeps_manifests(
    service: KubernetesService,
) -> None:
    """DELETE /tasks/{id}: the AudioJob is deleted with foreground propagation, so its Jobs and
    pods go first while the task reads as cancelled; manifests already written stay. A test
    finalizer holds the AudioJob after its Jobs are gone, so that this is seen without a race."""
    client, media = service.client, service.media
    items = [process_body(media.good[0], f"k-{i}") for i in range(5)]
    task_id = client.post("/batch", json={"items": items, "concurrency": 1}).json()["task_id"]
    custom = k8s.CustomObjectsApi(service.api_client)
    _change_finalizers(custom, service.namespace, task_id, lambda f: [*f, HOLD_FINALIZER])
    wait_until(lambda: _jobs_of(service, task_id), what=f"a Job of {task_id}")
    service.stand_in.wait(task_id)  # the stand-in has written the manifests, as pods would have

    assert client.delete(f"/tasks/{task_id}").status_code == 200

    held = custom.get_namespaced_custom_object(GROUP, VERSION, service.namespace, PLURAL, task_id)
    assert held["metadata"].get("deletionTimestamp")
    wait_until(
        lambda: not _jobs_of(service, task_id), timeout_s=30, what=f"the Jobs of {task_id} deleted"
    )
    pods = (
        k8s.CoreV1Api(service.api_client)
        .list_namespaced_pod(service.namespace, label_selector=f"audioproc.io/audiojob={task_id}")
        .items
    )
    assert pods == []
    status = client.get(f"/status/{task_id}").json()
    assert (status["status"], status["error"]) == ("failed", "cancelled")
    out = Path(service.settings.output_uri.removeprefix("file://")) / task_id
    assert sorted(p.parent.name for p in out.glob("*/manifest.json")) == [
        f"k-{i}" for i in range(5)
    ]

    _change_finalizers(
        custom, service.namespace, task_id, lambda f: [x for x in f if x != HOLD_FINALIZER]
    )
    wait_until(lambda: client.get(f"/status/{task_id}").status_code == 404, what=f"{task_id} gone")
    assert sorted(p.parent.name for p in out.glob("*/manifest.json")) == [
        f"k-{i}" for i in range(5)
    ]


HOLD_FINALIZER = "e2e.audioproc.io/hold"


def _change_finalizers(
    custom: k8s.CustomObjectsApi,
    namespace: str,
    name: str,
    change: Callable[[list[str]], list[str]],
) -> None:
    """Rewrite the AudioJob's finalizers (kopf's may be added meanwhile: retried on a conflict)."""
    for _ in range(10):
        meta = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)[
            "metadata"
        ]
        patch = {
            "metadata": {
                "finalizers": change(meta.get("finalizers") or []),
                "resourceVersion": meta["resourceVersion"],
            }
        }
        try:
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
            return
        except k8s.ApiException as exc:
            if exc.status != 409:
                raise
    raise AssertionError(f"could not change the finalizers of {name}")


def _jobs_of(service: KubernetesService, task_id: str) -> list[k8s.V1Job]:
    jobs = k8s.BatchV1Api(service.api_client).list_namespaced_job(service.namespace).items
    return [j for j in jobs if any(o.name == task_id for o in j.metadata.owner_references or [])]


def test_a_batch_above_the_threshold_becomes_an_item_list(service: KubernetesService) -> None:
    """API_ITEMS_FROM_THRESHOLD=2: a 3-item /batch is written as a JSON Lines list beside its
    outputs and its AudioJob names it in spec.itemsFrom; status pages its items from the list,
    results come from the manifests."""
    settings = service.settings.model_copy(update={"api_items_from_threshold": 2})
    backend = KubernetesBackend(settings, settings.output_uri)
    paths = [service.media.good[0]] * 3
    body = {"items": [process_body(path, f"l{i}") for i, path in enumerate(paths)]}
    with TestClient(create_app(settings, backend=backend, output=settings.output_uri)) as client:
        response = client.post("/batch", json=body)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        job = k8s.CustomObjectsApi(service.api_client).get_namespaced_custom_object(
            GROUP, VERSION, service.namespace, PLURAL, task_id
        )
        uri = f"{settings.output_uri}/{task_id}.items.jsonl"
        assert job["spec"]["itemsFrom"] == {"uri": uri} and "items" not in job["spec"]
        assert [i["videoId"] for i in listed_items(uri)] == ["l0", "l1", "l2"]
        service.stand_in.wait(task_id)
        done = wait_finished(client, task_id)
        assert (done["status"], done["total"], done["succeeded"]) == ("completed", 3, 3)

        first = client.get(f"/status/{task_id}", params={"items_limit": 2}).json()
        assert [i["video_id"] for i in first["items"]] == ["l0", "l1"]
        assert first["items_next_offset"] == 2
        rest = client.get(f"/status/{task_id}", params={"items_offset": 2}).json()
        assert [(i["video_id"], i["status"]) for i in rest["items"]] == [("l2", "completed")]
        assert rest["items"][0]["manifest_uri"].endswith(f"/{task_id}/l2/manifest.json")
        assert rest["items_next_offset"] is None

        manifest = client.get(f"/results/{task_id}/l1")
        assert manifest.status_code == 200 and manifest.json()["video_id"] == "l1"
        assert client.get(f"/results/{task_id}/not-an-item").status_code == 404
