"""docs/manifest.schema.json is the Manifest model's schema, and real manifests validate against it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pipeline_fakes
import pytest

from audioproc.models.manifest import Manifest
from audioproc.runner import ItemRequest, process_item
from audioproc.settings import PipelineSettings

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json"


def test_published_schema_is_in_sync_with_the_model() -> None:
    published = json.loads(SCHEMA_FILE.read_text())
    assert published == Manifest.json_schema(), (
        "docs/manifest.schema.json is stale: run `python -m audioproc.models > docs/manifest.schema.json`"
    )


def test_real_manifest_validates(
    media: Path, tmp_path: Path, settings: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline_fakes.register(monkeypatch)
    result = process_item(
        ItemRequest(str(media / "tone.mkv"), "v", ["test_rms", "test_failing"]),
        str(tmp_path),
        device="cpu",
        settings=settings,
    )
    document = json.loads(Path(result.manifest_uri.removeprefix("file://")).read_text())
    schema = json.loads(SCHEMA_FILE.read_text())

    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    assert document["schema"] == "audio_manifest_v1"

    broken = {**document, "extractors": [{**document["extractors"][0], "status": "maybe"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
