"""Pure functions: task ids, request -> AudioJob, AudioJob -> task view, backend choice."""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audioproc.models import AudioJob
from audioproc.models.audiojob import REQUEST_ID_ANNOTATION, AudioJobItem, Device
from audioproc_api.app import create_app
from audioproc_api.backends.base import SUBMITTER_LABEL, TASK_KIND_LABEL, Submission, new_task_id
from audioproc_api.backends.kubernetes import audiojob_for, item_list_uri, listed_spec, view_of
from audioproc_api.cli import cli
from audioproc_api.routes import build_spec, device_of
from audioproc_api.schemas import BatchItem, ItemStatus, TaskKind, TaskStatus
from audioproc_api.settings import ApiSettings, BackendName, resolve_backend, resolve_output


def test_task_ids_are_dns_names_that_sort_by_creation() -> None:
    ids = [new_task_id(TaskKind.batch) for _ in range(50)]
    assert len(set(ids)) == 50
    import re
    import time

    time.sleep(0.002)
    later = new_task_id(TaskKind.process)
    assert all(
        re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", i) and len(i) <= 22 for i in [*ids, later]
    )
    assert later.split("-")[1] > max(i.split("-")[1] for i in ids)


@pytest.mark.parametrize(
    ("use_gpu", "device"), [(True, Device.gpu), (False, Device.cpu), (None, Device.auto)]
)
def test_use_gpu_maps_to_device(use_gpu: bool | None, device: Device) -> None:
    assert device_of(use_gpu) is device


def _submission(n_items: int = 2, use_gpu: bool | None = True) -> Submission:
    items = [
        BatchItem(
            input_uri=f"s3://media/v{i}.mp4", video_id=f"v{i}", extractors=["mfcc"] if i else None
        )
        for i in range(n_items)
    ]
    spec = build_spec(items, use_gpu, concurrency=3, output="s3://out/prefix")
    return Submission("batc-abc-xyz", TaskKind.batch, spec, "req-1")


def test_audiojob_for_a_submission() -> None:
    obj = audiojob_for(_submission(), "media")

    assert obj["apiVersion"] == "audioproc.io/v1alpha1" and obj["kind"] == "AudioJob"
    assert obj["metadata"]["name"] == "batc-abc-xyz" and obj["metadata"]["namespace"] == "media"
    assert obj["metadata"]["annotations"][REQUEST_ID_ANNOTATION] == "req-1"
    assert obj["metadata"]["labels"][TASK_KIND_LABEL] == "batch"
    spec = obj["spec"]
    assert (
        spec["device"] == "gpu" and spec["concurrency"] == 3 and spec["output"] == "s3://out/prefix"
    )
    assert spec["items"][0] == {"inputUri": "s3://media/v0.mp4", "videoId": "v0"}
    assert spec["items"][1]["extractors"] == ["mfcc"]
    AudioJob.model_validate(obj)  # round-trips through the CRD's own model


def test_the_submitter_is_a_label_of_the_audiojob_and_of_its_view() -> None:
    named = audiojob_for(replace(_submission(), submitter="team-a.batch_1"), "media")
    unnamed = audiojob_for(_submission(), "media")

    assert named["metadata"]["labels"][SUBMITTER_LABEL] == "team-a.batch_1"
    assert SUBMITTER_LABEL not in unnamed["metadata"]["labels"]
    named["metadata"]["creationTimestamp"] = unnamed["metadata"]["creationTimestamp"] = (
        "2026-11-27T12:00:00Z"
    )
    assert view_of(named).submitter == "team-a.batch_1"
    assert view_of(unnamed).submitter is None


def _with_status(status: dict | None, **metadata) -> dict:
    obj = audiojob_for(_submission(3), "media")
    obj["metadata"].update(metadata, resourceVersion="7", creationTimestamp="2026-11-27T12:00:00Z")
    if status is not None:
        obj["status"] = status
    return obj


def test_view_of_a_new_audiojob_is_pending() -> None:
    view = view_of(_with_status(None))
    assert view.status is TaskStatus.pending and view.progress == 0.0
    assert [i.status for i in view.items] == [ItemStatus.pending] * 3
    assert (
        view.request_id == "req-1" and view.kind is TaskKind.batch and view.created_at.year == 2026
    )


def test_view_of_a_partially_completed_audiojob() -> None:
    status = {
        "phase": "PartiallyCompleted",
        "progress": 1.0,
        "counts": {"total": 3, "succeeded": 2, "failed": 1, "active": 0},
        "items": [
            {
                "index": 0,
                "videoId": "v0",
                "phase": "Succeeded",
                "device": "cuda:0",
                "manifestUri": "s3://out/prefix/batc-abc-xyz/v0/manifest.json",
            },
            {"index": 1, "videoId": "v1", "phase": "Failed", "error": "no audio stream"},
            {
                "index": 2,
                "videoId": "v2",
                "phase": "Succeeded",
                "device": "cpu",
                "manifestUri": "s3://out/prefix/batc-abc-xyz/v2/manifest.json",
            },
        ],
    }
    view = view_of(_with_status(status))
    assert view.status is TaskStatus.completed
    assert (view.total, view.succeeded, view.failed) == (3, 2, 1)
    assert "1 of 3 items failed" in view.error and "no audio stream" in view.error
    assert [i.status for i in view.items] == [
        ItemStatus.completed,
        ItemStatus.failed,
        ItemStatus.completed,
    ]
    assert (
        view.items[0].manifest_uri.endswith("/v0/manifest.json")
        and view.items[0].device == "cuda:0"
    )


def test_view_of_a_processing_audiojob_marks_unfinished_items_processing() -> None:
    status = {
        "phase": "Processing",
        "progress": 0.33,
        "items": [{"index": 1, "videoId": "v1", "phase": "Succeeded", "manifestUri": "file:///x"}],
    }
    view = view_of(_with_status(status))
    assert view.status is TaskStatus.processing and view.progress == 0.33
    assert [i.status for i in view.items] == [
        ItemStatus.processing,
        ItemStatus.completed,
        ItemStatus.processing,
    ]


def test_view_of_a_deleting_audiojob_is_cancelled() -> None:
    view = view_of(_with_status({"phase": "Processing"}, deletionTimestamp="2026-11-27T12:01:00Z"))
    assert view.status is TaskStatus.failed and view.error == "cancelled"


def test_backend_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert resolve_backend(ApiSettings()) is BackendName.local
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert resolve_backend(ApiSettings()) is BackendName.kubernetes
    assert resolve_backend(ApiSettings(api_backend="local")) is BackendName.local
    monkeypatch.setenv("API_BACKEND", "local")
    assert resolve_backend(ApiSettings()) is BackendName.local
    assert resolve_output(ApiSettings(), BackendName.kubernetes) == "file:///data/audioproc"
    assert resolve_output(ApiSettings(output_uri="s3://b/p/"), BackendName.local) == "s3://b/p"


def test_items_per_gpu_has_its_own_name_and_reads_the_old_one_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAX_GPU_WORKERS", raising=False)
    monkeypatch.delenv("API_ITEMS_PER_GPU", raising=False)
    assert ApiSettings().api_items_per_gpu == 1
    monkeypatch.setenv("MAX_GPU_WORKERS", "3")
    with pytest.warns(DeprecationWarning, match="API_ITEMS_PER_GPU"):
        assert ApiSettings().api_items_per_gpu == 3
    monkeypatch.setenv("API_ITEMS_PER_GPU", "2")  # the new name wins, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ApiSettings().api_items_per_gpu == 2


def test_kubernetes_backend_not_ready_when_the_api_server_is_unreachable(tmp_path: Path) -> None:
    """/readyz says why (503), and task calls answer 503, not 500, without an API server."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    settings = ApiSettings(
        api_backend="kubernetes", kubeconfig=kubeconfig, allowed_roots=[tmp_path]
    )
    media = tmp_path / "a.wav"
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["backend"] == "kubernetes" and "unreachable" in ready.json()["detail"]
        assert client.get("/status/proc-x").status_code == 503
        body = {"input_uri": str(media), "video_id": "v"}
        response = client.post("/process", json=body)
        assert response.status_code == 503 and response.headers["retry-after"]


def test_serve_command_help() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--backend" in result.output


def test_the_kubernetes_facade_imports_nothing_heavy() -> None:
    """The facade image has no torch: app, routes and the kubernetes backend must not need it."""
    code = (
        "import sys\n"
        "import audioproc_api.app, audioproc_api.backends.kubernetes\n"
        "heavy = sorted(m for m in ('torch', 'torchaudio', 'librosa', 'av', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_view_of_a_large_audiojob_reads_ranges_and_the_manifest_prefix() -> None:
    """Past a thousand results the operator lists only failed items; the rest come from ranges."""
    status = {
        "phase": "PartiallyCompleted",
        "progress": 1.0,
        "counts": {"total": 3, "succeeded": 2, "failed": 1, "active": 0},
        "succeededIndexes": "0,2",
        "failedIndexes": "1",
        "manifestPrefix": "s3://out/prefix/batc-abc-xyz/",
        "items": [{"index": 1, "videoId": "v1", "phase": "Failed", "error": "corrupt"}],
    }
    view = view_of(_with_status(status))
    assert [i.status for i in view.items] == [
        ItemStatus.completed,
        ItemStatus.failed,
        ItemStatus.completed,
    ]
    assert view.items[2].manifest_uri == "s3://out/prefix/batc-abc-xyz/v2/manifest.json"
    assert view.items[1].manifest_uri is None and view.items[1].error == "corrupt"


def test_view_of_an_items_from_audiojob_counts_from_its_status_and_pages_given_items() -> None:
    """An itemsFrom AudioJob holds no items: the view counts from the status, shows the page
    it is given (read from the list by the backend), and derives manifest URIs."""
    submission = _submission(3)
    uri = item_list_uri("file:///data/audioproc/", submission.task_id)
    assert uri == f"file:///data/audioproc/{submission.task_id}.items.jsonl"
    obj = audiojob_for(replace(submission, spec=listed_spec(submission.spec, uri)), "media")
    assert obj["spec"]["itemsFrom"] == {"uri": uri} and "items" not in obj["spec"]
    obj["metadata"]["creationTimestamp"] = "2026-12-07T12:00:00Z"
    obj["status"] = {
        "phase": "PartiallyCompleted",
        "progress": 1.0,
        "counts": {"total": 5000, "succeeded": 4999, "failed": 1, "active": 0},
        "succeededIndexes": "0-6,8-4999",
        "failedIndexes": "7",
        "items": [{"index": 7, "videoId": "v7", "phase": "Failed", "error": "no audio stream"}],
        "manifestPrefix": "file:///data/audioproc/x/",
    }
    assert view_of(obj).items == []  # nothing read unless the backend gives a page
    page = [(i, AudioJobItem(input_uri=f"s3://m/v{i}.mp4", video_id=f"v{i}")) for i in (6, 7)]
    view = view_of(obj, page=page)
    assert (view.total, view.succeeded, view.failed) == (5000, 4999, 1)
    assert [(i.index, i.status) for i in view.items] == [
        (6, ItemStatus.completed),
        (7, ItemStatus.failed),
    ]
    assert view.items[0].manifest_uri == "file:///data/audioproc/x/v6/manifest.json"
    assert "no audio stream" in (view.error or "")
