"""Fixtures of the pipeline tests: generated media and settings that allow them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_params import TONE_F0, TONE_SECONDS

from audioproc import samples
from audioproc.settings import PipelineSettings

SR = 44100


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of real encoded media: the same 3 s tone in many containers, and broken files."""
    root = tmp_path_factory.mktemp("media")
    tone = samples.tone(TONE_SECONDS, SR, TONE_F0)
    for ext in (".wav", ".flac", ".mp3", ".m4a", ".ogg"):
        samples.write_audio(root / f"tone{ext}", tone, SR, channels=2)
    for ext in (".mp4", ".mkv", ".webm", ".mov"):
        samples.write_video(root / f"tone{ext}", tone, SR)
    samples.write_no_audio(root / "video_only.mp4")
    samples.write_truncated(root / "tone.mp4", root / "truncated.mp4", 0.6)
    samples.write_truncated(root / "tone.flac", root / "truncated.flac", 0.5)
    samples.write_garbage(root / "garbage.mp4")
    samples.write_zero_length_audio(root / "empty.wav")
    return root


@pytest.fixture
def settings(media: Path, tmp_path: Path) -> PipelineSettings:
    return PipelineSettings(allowed_roots=[media, tmp_path], use_gpu=False)


@pytest.fixture
def tone_signal() -> np.ndarray:
    return samples.tone(TONE_SECONDS, SR, TONE_F0)
