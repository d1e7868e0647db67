"""Tempo, pitch and loudness on real encoded media (``audioproc.samples``: PyAV/FFmpeg), decoded back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import torch
from extractor_testing import settings

from audioproc import samples
from audioproc.extractors.loudness import LoudnessExtractor
from audioproc.extractors.pitch import PitchExtractor
from audioproc.extractors.tempo import TempoExtractor

SOURCE_RATE = 44_100


@pytest.mark.parametrize(("bpm", "ext"), [(87.0, ".mp4"), (128.0, ".mp3"), (143.0, ".m4a")])
def test_tempo_of_encoded_drum_pattern(tmp_path: Path, bpm: float, ext: str) -> None:
    path = tmp_path / f"drums{ext}"
    drums = samples.drum_pattern(20.0, SOURCE_RATE, bpm)
    if ext == ".mp4":
        samples.write_video(path, drums, SOURCE_RATE)
    else:
        samples.write_audio(path, drums, SOURCE_RATE, channels=2)
    audio = torch.from_numpy(samples.read_mono(path, TempoExtractor.sample_rate))
    out = TempoExtractor(settings()).extract(audio, torch.device("cpu"))
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.005)


def test_pitch_of_encoded_vibrato_tone_in_noise(tmp_path: Path) -> None:
    duration = 3.0
    tone = samples.tone(duration, SOURCE_RATE, 196.0, vibrato_hz=5.0, vibrato_cents=60.0)
    samples.write_audio(tmp_path / "tone.mp3", samples.add_noise(tone, 5.0), SOURCE_RATE)
    audio = torch.from_numpy(samples.read_mono(tmp_path / "tone.mp3", PitchExtractor.sample_rate))
    out = PitchExtractor(settings()).extract(audio, torch.device("cpu"))
    n = min(out.artifacts["f0_hz"].size, int(duration * 100) - 5)
    times = np.arange(n) / 100.0
    truth = samples.tone_f0(times, duration, 196.0, vibrato_hz=5.0, vibrato_cents=60.0)
    estimate, voiced = out.artifacts["f0_hz"][:n], out.artifacts["voiced"][:n]
    # MP3 encoder delay shifts the audio by a few ms: compare frames 10 onwards.
    cents = np.abs(1200 * np.log2(np.where(voiced, estimate, 1.0) / truth))[10:]
    assert np.mean(voiced[10:] & (cents < 50)) >= 0.95


def test_loudness_of_encoded_flac_matches_pyloudnorm(tmp_path: Path) -> None:
    tone = samples.add_noise(samples.tone(5.0, 48_000, 330.0), 20.0)
    samples.write_audio(tmp_path / "tone.flac", tone, 48_000)
    audio = samples.read_mono(tmp_path / "tone.flac", 48_000)
    out = LoudnessExtractor(settings()).extract(torch.from_numpy(audio), torch.device("cpu"))
    expected = pyloudnorm.Meter(48_000).integrated_loudness(audio.astype(np.float64))
    assert out.features["integrated_lufs"] == pytest.approx(expected, abs=0.1)


@pytest.mark.skipif(not samples.espeak_available(), reason="espeak-ng is not installed")
def test_pitch_is_sane_on_espeak_speech() -> None:
    speech = samples.speech(
        "The quick brown fox jumps over the lazy dog.", PitchExtractor.sample_rate
    )
    out = PitchExtractor(settings()).extract(torch.from_numpy(speech), torch.device("cpu"))
    assert 0.2 < out.features["voiced_ratio"] < 0.95
    assert 60 < out.features["f0_median_hz"] < 300
