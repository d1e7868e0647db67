"""Shared data models: the manifest, the AudioJob resource and the pod contract
(``pod_contract``: what the operator and its worker pods exchange).

These modules import only pydantic, so the operator and the facade use them without
the pipeline's heavy dependencies.
"""

from audioproc.models.audiojob import (
    AudioJob,
    AudioJobItem,
    AudioJobItemStatus,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    Device,
    ItemPhase,
)
from audioproc.models.manifest import (
    AudioInfo,
    ExtractorRecord,
    Manifest,
    ProcessorInfo,
    SourceAudioInfo,
)

__all__ = [
    "AudioInfo",
    "AudioJob",
    "AudioJobItem",
    "AudioJobPhase",
    "AudioJobSpec",
    "AudioJobStatus",
    "Device",
    "ExtractorRecord",
    "ItemPhase",
    "AudioJobItemStatus",
    "Manifest",
    "ProcessorInfo",
    "SourceAudioInfo",
]
