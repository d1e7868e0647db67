"""``audio_manifest_v1``: the document a pipeline run writes for one input.

The JSON Schema exported from :class:`Manifest` is published in ``docs/`` and checked in
tests. A manifest that exists in storage is always complete: storage writes artifacts
first and the manifest last, atomically.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from audioproc import __version__

MANIFEST_SCHEMA: Final = "audio_manifest_v1"


class SourceAudioInfo(BaseModel):
    """The audio stream as it was in the input file, before downmix and resampling."""

    model_config = ConfigDict(extra="forbid")

    codec: str = Field(description="FFmpeg codec name, e.g. 'aac'.")
    sample_rate: int = Field(gt=0, description="Native sample rate in Hz.")
    channels: int = Field(gt=0, description="Native channel count.")
    container: str | None = Field(default=None, description="FFmpeg container (format) name.")


class AudioInfo(BaseModel):
    """The audio the extractors saw: mono, at ``sample_rate`` Hz."""

    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(ge=0, description="Duration in seconds.")
    sample_rate: int = Field(
        gt=0,
        description="Highest analysis sample rate in Hz; each extractor's own rate is in its record.",
    )
    channels: Literal[1] = 1
    source: SourceAudioInfo


class ProcessorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["audioprocessor"] = "audioprocessor"
    version: str = __version__


class ExtractorRecord(BaseModel):
    """What one extractor produced for one input, or why it could not."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    device: str = Field(description="Device the extractor ran on: 'cpu' or 'cuda:N'.")
    sample_rate: int | None = Field(
        default=None, gt=0, description="Sample rate in Hz of the audio it analysed."
    )
    status: Literal["ok", "error"]
    duration_ms: float = Field(ge=0, description="Wall time of this extractor for this input.")
    features: dict[str, Any] = Field(default_factory=dict)
    artifacts: dict[str, str] = Field(
        default_factory=dict,
        description="Artifact name -> file name relative to the manifest (.npy).",
    )
    error: str | None = None
    notes: list[str] = Field(
        default_factory=list,
        description="Things a reader should know, e.g. a CUDA OOM that fell back to CPU.",
    )


class Manifest(BaseModel):
    """``audio_manifest_v1``: features of one input's audio."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["audio_manifest_v1"] = Field(default=MANIFEST_SCHEMA, alias="schema")
    video_id: str
    input_uri: str
    created_at: datetime
    processor: ProcessorInfo = Field(default_factory=ProcessorInfo)
    audio: AudioInfo
    device: str = Field(description="Device the item ran on: 'cpu' or 'cuda:N'.")
    extractors: list[ExtractorRecord]
    errors: list[str] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.model_json_schema(by_alias=True)
        schema["$id"] = "https://audioproc.io/schemas/audio_manifest_v1.json"
        schema["title"] = MANIFEST_SCHEMA
        return schema
