"""/ui without a browser: status codes, headers, escaping, script weight; the API additions the
pages use (newest-first listing, counts, artifacts) on the local backend with real processing,
and the pages on the kubernetes backend with a stand-in for the API server."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s

from audioproc.models.audiojob import AUDIOJOB_UID_LABEL
from audioproc_api.app import create_app
from audioproc_api.backends.base import Submission
from audioproc_api.backends.kubernetes import KubernetesBackend, audiojob_for
from audioproc_api.routes import build_spec
from audioproc_api.schemas import BatchItem, TaskKind
from audioproc_api.settings import ApiSettings
from audioproc_api.ui import CONTENT_SECURITY_POLICY
from tests.facade_support import (
    FAST_EXTRACTORS,
    Media,
    local_settings,
    make_client,
    wait_finished,
)

PAGES = ["/ui", "/ui/submit", "/ui/tasks/proc-abc", "/ui/tasks/proc-abc/vid-1"]
#: The issue's limit on the script one page loads.
MAX_SCRIPT_BYTES = 300 * 1024


def script_bytes(client: TestClient, page: str) -> int:
    """Bytes of every script the page loads (all are files of /ui/static; none inline)."""
    html = client.get(page).text
    assert "<script>" not in html  # nothing inline: the CSP would block it
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert sources
    total = 0
    for source in sources:
        response = client.get(source)
        assert response.status_code == 200, source
        total += len(response.content)
    return total


@pytest.mark.parametrize("page", PAGES)
def test_each_page_renders_with_a_strict_policy_and_light_scripts(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (
        "script-src 'self'" in CONTENT_SECURITY_POLICY
        and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    )
    assert 'lang="en"' in response.text and 'name="viewport"' in response.text
    assert script_bytes(client, page) < MAX_SCRIPT_BYTES


def test_ids_from_the_path_are_escaped(client: TestClient) -> None:
    response = client.get("/ui/tasks/%3Cscript%3Ex/%22%3E%3Cimg%20src%3Dx%3E")
    assert response.status_code == 200
    assert "<script>x" not in response.text and "<img src=x>" not in response.text
    assert "&lt;script&gt;x" in response.text
    assert 'data-video-id="&#34;&gt;&lt;img src=x&gt;"' in response.text


def test_slash_redirects_and_unknown_static_is_404(client: TestClient) -> None:
    redirect = client.get("/ui/", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui"
    assert client.get("/ui/static/nope.js").status_code == 404
    assert client.get("/ui/static/../app.py").status_code == 404


def test_with_tokens_on_the_pages_hold_no_data_and_the_api_needs_a_token(
    tmp_path: Path, media: Media
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:alice-token\n")
    with make_client(local_settings(tmp_path, media, api_tokens_file=tokens)) as client:
        assert client.get("/ui").status_code == 200  # a shell: the script asks for the token
        assert client.get("/tasks").status_code == 401
        assert client.get("/results/t/v/artifacts/x.npy").status_code == 401


def test_label_for_every_form_control(client: TestClient) -> None:
    for page in ("/ui", "/ui/submit"):
        html = client.get(page).text
        for control in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', html):
            assert f'for="{control}"' in html, (page, control)


# -- the API the pages use, on the local backend ----------------------------------------------


def _process(client: TestClient, media: Media, video_id: str) -> str:
    body = {"input_uri": str(media.good[0]), "video_id": video_id, "extractors": FAST_EXTRACTORS}
    response = client.post("/process", json=body)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def test_newest_first_listing_pages_backwards_with_counts(client: TestClient, media: Media) -> None:
    ids = [_process(client, media, f"n-{i}") for i in range(3)]
    for task_id in ids:
        wait_finished(client, task_id)

    first = client.get("/tasks", params={"order": "newest", "limit": 2}).json()
    second = client.get(
        "/tasks", params={"order": "newest", "limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == ids[::-1]
    assert second["next_cursor"] is None
    summary = first["tasks"][0]
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["running"]) == (
        1,
        1,
        0,
        0,
    )
    assert summary["device"] == "auto"
    assert client.get("/tasks", params={"order": "sideways"}).status_code == 422


def test_an_items_artifacts_are_served_and_nothing_else(client: TestClient, media: Media) -> None:
    task_id = _process(client, media, "art")
    other_task = _process(client, media, "other")
    item = wait_finished(client, task_id)["items"][0]
    wait_finished(client, other_task)
    manifest = client.get(f"/results/{task_id}/art").json()
    [loudness] = [r for r in manifest["extractors"] if r["name"] == "loudness"]
    folder = Path(urlparse(item["manifest_uri"]).path).parent
    base = f"/results/{task_id}/art/artifacts"

    for name in ("peak_envelope", "short_term_lufs"):
        response = client.get(f"{base}/{loudness['artifacts'][name]}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == (folder / loudness["artifacts"][name]).read_bytes()
    envelope = np.load(folder / loudness["artifacts"]["peak_envelope"])
    assert envelope.dtype == np.float32 and envelope.size == int(
        np.ceil(manifest["audio"]["duration_s"] * 10)
    )

    (folder / "unlisted.npy").write_bytes(b"secret")
    for name in (
        "unlisted.npy",
        "manifest.json",
        "..%2F..%2Fother%2Fmanifest.json",
        "%2Fetc%2Fpasswd",
        "%2E%2E",
    ):
        response = client.get(f"{base}/{name}")
        assert response.status_code == 404, name
        assert b"secret" not in response.content
    assert (
        client.get(
            f"/results/{task_id}/nope/artifacts/{loudness['artifacts']['peak_envelope']}"
        ).status_code
        == 404
    )
    assert (
        client.get(
            f"/results/nope/art/artifacts/{loudness['artifacts']['peak_envelope']}"
        ).status_code
        == 404
    )


# -- the kubernetes backend, with a stand-in for the API server ---------------------------------


class FakeCustomObjects:
    """The CustomObjectsApi calls the backend makes for reading, over a dict of AudioJobs."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.api_client = SimpleNamespace(close=lambda: None)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **_: Any
    ) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[name])

    def list_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        limit: int | None = None,
        _continue: str | None = None,
        **_: Any,
    ) -> dict:
        names = sorted(self.objects)
        start = int(_continue or 0)
        end = len(names) if limit is None else start + limit
        return {
            "items": [copy.deepcopy(self.objects[n]) for n in names[start:end]],
            "metadata": {"continue": str(end) if end < len(names) else None},
        }


class FakeBatch:
    """BatchV1Api.list_namespaced_job over a list of Jobs, honouring ``key=value`` selectors."""

    def __init__(self, jobs: list[k8s.V1Job]) -> None:
        self.jobs = jobs

    def list_namespaced_job(self, namespace: str, label_selector: str, **_: Any) -> k8s.V1JobList:
        key, value = label_selector.split("=")
        return k8s.V1JobList(items=[j for j in self.jobs if j.metadata.labels.get(key) == value])


class FakeCore:
    """CoreV1Api.list_namespaced_event, honouring an ``involvedObject.uid=`` field selector."""

    def __init__(self, events: list[k8s.CoreV1Event]) -> None:
        self.events = events

    def list_namespaced_event(
        self, namespace: str, field_selector: str, **_: Any
    ) -> k8s.CoreV1EventList:
        field, uid = field_selector.split("=")
        assert field == "involvedObject.uid"
        return k8s.CoreV1EventList(items=[e for e in self.events if e.involved_object.uid == uid])


def _job(name: str, owner_uid: str, completions: int, **status: int) -> k8s.V1Job:
    return k8s.V1Job(
        metadata=k8s.V1ObjectMeta(name=name, labels={AUDIOJOB_UID_LABEL: owner_uid}),
        spec=k8s.V1JobSpec(
            completions=completions, suspend=False, template=k8s.V1PodTemplateSpec()
        ),
        status=k8s.V1JobStatus(**status),
    )


def _event(
    owner_uid: str, reason: str, message: str, at: str, kind: str = "Normal"
) -> k8s.CoreV1Event:
    """An Event as the API server keeps kopf's: ``lastTimestamp`` in whole seconds,
    ``eventTime`` (``at``) in microseconds."""
    exact = datetime.fromisoformat(at)
    return k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name=f"kopf-event-{reason}"),
        involved_object=k8s.V1ObjectReference(kind="AudioJob", uid=owner_uid),
        reason=reason,
        message=message,
        type=kind,
        count=1,
        last_timestamp=exact.replace(microsecond=0),
        event_time=exact,
    )


def _audiojob(
    name: str, created: str, status: dict[str, Any] | None, submitter: str | None = None
) -> dict[str, Any]:
    items = [BatchItem(input_uri=f"s3://media/v{i}.mp4", video_id=f"v{i}") for i in range(2)]
    spec = build_spec(items, None, concurrency=2, output="s3://out/prefix")
    obj = audiojob_for(Submission(name, TaskKind.batch, spec, "req-1", submitter), "media")
    obj["metadata"].update(resourceVersion="1", creationTimestamp=created, uid=f"uid-{name}")
    if status is not None:
        obj["status"] = status
    return obj


def kubernetes_app(tmp_path: Path, **settings_overrides: Any) -> TestClient:
    """The facade on the kubernetes backend over stand-ins: three AudioJobs (batc-b running
    with two Jobs and three Events, batc-d submitted by bob), a Job and an Event of another
    AudioJob that must not show."""
    running = {
        "phase": "Processing",
        "progress": 0.5,
        "counts": {"total": 2, "succeeded": 1, "failed": 0, "active": 1},
        "items": [
            {
                "index": 0,
                "videoId": "v0",
                "phase": "Succeeded",
                "device": "cuda:0",
                "manifestUri": "s3://out/prefix/batc-b/v0/manifest.json",
            }
        ],
    }
    api = FakeCustomObjects(
        [
            _audiojob("batc-a", "2026-11-27T12:00:00Z", None),
            _audiojob("batc-b", "2026-11-27T12:05:00Z", running),
            _audiojob(
                "batc-c",
                "2026-11-27T12:01:00Z",
                {"phase": "Failed", "progress": 1.0, "message": "no node"},
            ),
            _audiojob("batc-d", "2026-11-27T12:02:00Z", None, submitter="bob"),
        ]
    )
    settings = ApiSettings(
        api_backend="kubernetes",
        allowed_roots=[tmp_path],
        output_uri="s3://out/prefix",
        **settings_overrides,
    )
    backend = KubernetesBackend(settings, settings.output_uri)
    backend.start = lambda: None  # type: ignore[method-assign]  # no cluster: the stand-in instead
    backend._api = api  # type: ignore[assignment]
    backend._batch = FakeBatch(  # type: ignore[assignment]
        [
            _job("batc-b-c1", "uid-batc-b", 1, active=1),
            _job("batc-b-c0", "uid-batc-b", 1, succeeded=1),
            _job("batc-c-c0", "uid-batc-c", 2, failed=2),
        ]
    )
    backend._core = FakeCore(  # type: ignore[assignment]
        [
            # the same second as Placed, listed first: eventTime orders them
            _event("uid-batc-b", "JobCreated", "Job batc-b-c0", "2026-11-27T12:05:01.900+00:00"),
            _event("uid-batc-b", "Placed", "cpu: 2 items", "2026-11-27T12:05:01.500+00:00"),
            _event("uid-batc-b", "JobCreated", "Job batc-b-c1", "2026-11-27T12:05:03+00:00"),
            _event("uid-batc-c", "Waiting", "no node", "2026-11-27T12:01:01+00:00", "Warning"),
        ]
    )
    return TestClient(create_app(settings, backend=backend, output=settings.output_uri))


@pytest.fixture
def kubernetes_client(tmp_path: Path) -> TestClient:
    return kubernetes_app(tmp_path)


def test_the_pages_and_their_data_on_the_kubernetes_backend(kubernetes_client: TestClient) -> None:
    with kubernetes_client as client:
        for page in ("/ui", "/ui/submit", "/ui/tasks/batc-b", "/ui/tasks/batc-b/v0"):
            response = client.get(page)
            assert response.status_code == 200 and 'data-backend="kubernetes"' in response.text
        newest = client.get("/tasks", params={"order": "newest", "limit": 2}).json()
        assert [t["task_id"] for t in newest["tasks"]] == ["batc-b", "batc-d"]
        rest = client.get(
            "/tasks", params={"order": "newest", "cursor": newest["next_cursor"]}
        ).json()
        assert [t["task_id"] for t in rest["tasks"]] == ["batc-c", "batc-a"]
        assert rest["next_cursor"] is None
        failed = client.get("/tasks", params={"order": "newest", "status": "failed"}).json()
        assert [t["task_id"] for t in failed["tasks"]] == ["batc-c"]
        summary = newest["tasks"][0]
        assert (summary["succeeded"], summary["failed"], summary["running"]) == (1, 0, 1)
        status = client.get("/status/batc-b").json()
        assert status["phase"] == "Processing" and status["items"][0]["device"] == "cuda:0"
        assert client.get("/results/batc-b/v1/artifacts/x.npy").status_code == 409  # not finished


def test_one_task_shows_its_audiojobs_jobs_and_events_on_kubernetes(
    kubernetes_client: TestClient,
) -> None:
    with kubernetes_client as client:
        page = client.get("/ui/tasks/batc-b").text
        assert 'id="jobs-section" hidden' in page and 'id="events-section" hidden' in page
        objects = client.get("/tasks/batc-b/backend")
        assert objects.status_code == 200, objects.text
        body = objects.json()
        assert (body["audiojob"], body["namespace"], body["uid"], body["phase"]) == (
            "batc-b",
            "default",  # the facade's namespace (API_NAMESPACE), where it lists
            "uid-batc-b",
            "Processing",
        )
        jobs = {j["name"]: j for j in body["jobs"]}
        assert list(jobs) == ["batc-b-c0", "batc-b-c1"]  # by name; not batc-c's Job
        assert (jobs["batc-b-c0"]["succeeded"], jobs["batc-b-c0"]["active"]) == (1, 0)
        assert (jobs["batc-b-c1"]["active"], jobs["batc-b-c1"]["completions"]) == (1, 1)
        assert jobs["batc-b-c1"]["suspended"] is False
        # oldest first, and only this AudioJob's (batc-c's Waiting is not here)
        assert [(e["reason"], e["message"]) for e in body["events"]] == [
            ("Placed", "cpu: 2 items"),
            ("JobCreated", "Job batc-b-c0"),
            ("JobCreated", "Job batc-b-c1"),
        ]
        pending = client.get("/tasks/batc-a/backend").json()
        assert (pending["phase"], pending["jobs"], pending["events"]) == ("Pending", [], [])
        assert client.get("/tasks/nope/backend").status_code == 404


def test_the_cluster_objects_are_scoped_like_the_status(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice:alice-token\nbob:bob-token\n")
    with kubernetes_app(tmp_path, api_tokens_file=tokens) as client:
        alice = {"Authorization": "Bearer alice-token"}
        bob = {"Authorization": "Bearer bob-token"}
        assert client.get("/tasks/batc-d/backend").status_code == 401
        assert client.get("/status/batc-d", headers=alice).status_code == 404
        assert client.get("/tasks/batc-d/backend", headers=alice).status_code == 404
        assert client.get("/tasks/batc-d/backend", headers=bob).json()["audiojob"] == "batc-d"


def test_the_local_backend_has_no_cluster_objects(client: TestClient, media: Media) -> None:
    task_id = _process(client, media, "local")
    response = client.get(f"/tasks/{task_id}/backend")
    assert response.status_code == 404
    assert response.json()["detail"] == "the local backend has no cluster objects"
    assert 'id="jobs-section"' not in client.get(f"/ui/tasks/{task_id}").text
    wait_finished(client, task_id)
