"""An output that cannot take results (issue 10, item 13): the local backend says so on
``/readyz`` and refuses submissions with 503 before any work, instead of running every
extractor and failing at the end; it recovers when the output is fixed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audioproc_api.backends import local as local_module
from tests.facade_support import Media, local_settings, make_client


@pytest.fixture(autouse=True)
def probe_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_module, "OUTPUT_PROBE_TTL_S", 0.0)


def body(media: Media, video_id: str) -> dict:
    return {"input_uri": str(media.good[0]), "video_id": video_id, "extractors": ["loudness"]}


def test_an_output_blocked_by_a_file_fails_readiness_and_refuses_submissions(
    tmp_path: Path, media: Media
) -> None:
    settings = local_settings(tmp_path, media)
    out = Path(settings.output_uri.removeprefix("file://"))
    with make_client(settings) as client:
        assert client.get("/readyz").status_code == 200
        shutil.rmtree(out, ignore_errors=True)
        out.write_text("a file where the output directory must be")

        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert str(out) in ready.json()["detail"]
        refused = client.post("/process", json=body(media, "v1"))
        assert refused.status_code == 503, refused.text
        assert "cannot be written" in refused.json()["detail"]
        assert refused.headers["Retry-After"]
        assert client.get("/tasks").json()["tasks"] == []  # nothing was recorded

        out.unlink()  # fixed: ready again, and work is accepted
        assert client.get("/readyz").status_code == 200
        assert client.post("/process", json=body(media, "v2")).status_code == 202
