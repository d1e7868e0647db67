"""Fetch and decode one input, in this process or in a worker process.

Worker processes (``jobs > 1``) decode in parallel without the GIL and without importing
torch. They hand the decoded audio over as ``.npy`` files in a scratch directory
(``TMPDIR``; point it at ``/dev/shm`` where that is large enough) that the main process maps
(``mmap_mode="c"``: no copy, no pickling of hundreds of MB) and unlinks at once, so the
files disappear with the last reference to the arrays.

Errors come back as :class:`FetchFailure` values, not exceptions: the typed errors take
constructor arguments that pickling would not restore.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from audioproc.decode import DecodedAudio, decode_audio
from audioproc.errors import InputError
from audioproc.models.manifest import SourceAudioInfo
from audioproc.sources import open_input

if TYPE_CHECKING:
    from audioproc.settings import PipelineSettings


@dataclass
class SpilledAudio:
    """Decoded audio written to files: sample rate in Hz -> ``.npy`` path of the mono signal."""

    paths: dict[int, str]
    duration_s: float
    source: SourceAudioInfo
    notes: list[str] = field(default_factory=list)
    decode_s: float | None = None


@dataclass
class FetchFailure:
    message: str
    kind: Literal["input", "internal"]


def fetch_and_decode(uri: str, rates: set[int], settings: PipelineSettings) -> DecodedAudio:
    """Open ``uri`` (downloading it if remote) and decode it to mono at each of ``rates`` Hz."""
    with open_input(uri, settings) as path:
        started = time.perf_counter()
        decoded = decode_audio(path, rates, max_duration_s=settings.max_duration_s, uri=uri)
        decoded.decode_s = time.perf_counter() - started
        return decoded


def fetch_to_files(
    uri: str, rates: set[int], settings: PipelineSettings
) -> SpilledAudio | FetchFailure:
    """:func:`fetch_and_decode` for a worker process: the audio goes to scratch files."""
    try:
        decoded = fetch_and_decode(uri, rates, settings)
    except InputError as exc:
        return FetchFailure(str(exc), "input")
    except Exception as exc:  # reported as the item's internal error
        return FetchFailure(f"{type(exc).__name__}: {exc}", "internal")
    scratch = Path(tempfile.gettempdir())
    paths: dict[int, str] = {}
    try:
        for rate, signal in decoded.signals.items():
            path = scratch / f"audioproc-{os.getpid()}-{uuid.uuid4().hex}-{rate}.npy"
            paths[rate] = str(path)
            np.save(path, signal, allow_pickle=False)
    except OSError as exc:
        discard(paths)
        return FetchFailure(
            f"cannot hand decoded audio over through {scratch} (TMPDIR): {exc}", "internal"
        )
    return SpilledAudio(
        paths=paths,
        duration_s=decoded.duration_s,
        source=decoded.source,
        notes=decoded.notes,
        decode_s=decoded.decode_s,
    )


def load_spilled(spilled: SpilledAudio) -> DecodedAudio:
    """Map the spilled files (copy-on-write) and unlink them; the arrays stay valid."""
    try:
        signals = {
            rate: np.load(path, mmap_mode="c", allow_pickle=False)
            for rate, path in spilled.paths.items()
        }
    finally:
        discard(spilled.paths)
    return DecodedAudio(
        signals=signals,
        duration_s=spilled.duration_s,
        source=spilled.source,
        notes=spilled.notes,
        decode_s=spilled.decode_s,
    )


def discard(paths: dict[int, str]) -> None:
    for path in paths.values():
        Path(path).unlink(missing_ok=True)
