"""Interim stand-in for ``audioproc.runner`` (removed once the pipeline's runner is on main).

Reads the input's WAV header and writes a schema-valid manifest, so the facade's tests run
end to end before the real pipeline is merged.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from audioproc.models import AudioInfo, Manifest, SourceAudioInfo


@dataclass
class ItemRequest:
    input_uri: str
    video_id: str
    extractors: list[str] | None = None


@dataclass
class ItemResult:
    video_id: str
    input_uri: str
    status: str
    manifest_uri: str | None
    device: str | None
    error: str | None
    error_kind: str | None = None
    manifest: Manifest | None = None


def process_item(item: ItemRequest, output: str, device: str = "auto", settings=None) -> ItemResult:
    time.sleep(0.3)  # stands in for the work, so that a test can catch a batch mid-way
    path = Path(urlparse(item.input_uri).path)
    try:
        with wave.open(str(path)) as w:
            rate, channels, frames = w.getframerate(), w.getnchannels(), w.getnframes()
    except (OSError, wave.Error, EOFError) as exc:
        return ItemResult(item.video_id, item.input_uri, "error", None, None, str(exc), "input")
    manifest = Manifest(
        video_id=item.video_id, input_uri=item.input_uri, created_at=datetime.now(UTC),
        audio=AudioInfo(duration_s=frames / rate, sample_rate=rate,
                        source=SourceAudioInfo(codec="pcm_s16le", sample_rate=rate, channels=channels)),
        device="cpu", extractors=[],
    )
    target = Path(urlparse(output).path) / item.video_id
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "manifest.json.tmp"
    tmp.write_text(manifest.to_json())
    tmp.replace(target / "manifest.json")
    return ItemResult(item.video_id, item.input_uri, "ok", (target / "manifest.json").as_uri(), "cpu", None,
                      None, manifest)
