"""Tempo and beats on drum patterns of known tempo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audioproc.extractors.tempo import TempoExtractor
from extractor_testing import DEVICES, add_white_noise, as_tensor, drum_pattern, settings

SR = 16_000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bpm", [87, 100, 120, 128, 143])
def test_steady_tempo_within_half_a_percent(bpm: float, device: str) -> None:
    duration = 20.0
    out = TempoExtractor(settings()).extract(as_tensor(drum_pattern(bpm, duration, SR), device), torch.device(device))
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.005)
    assert out.features["tempo_stability"] > 0.95
    beats = out.artifacts["beats"]
    truth = np.arange(0, duration, 60 / bpm)
    assert out.features["beat_count"] == beats.size >= 0.9 * truth.size
    distance = np.abs(beats[:, None] - truth[None, :]).min(axis=1)
    assert np.mean(distance < 0.035) > 0.9  # beats sit on the kicks and snares
    json.dumps(out.features, allow_nan=False)


def test_tempo_in_noise_and_with_a_gap() -> None:
    bpm, duration = 110.0, 24.0
    drums = drum_pattern(bpm, duration, SR)
    t = np.arange(drums.size) / SR
    drums[(t > 10) & (t < 13)] = 0.0  # three seconds of silence in the middle
    out = TempoExtractor(settings()).extract(as_tensor(add_white_noise(drums, 10.0), "cpu"), torch.device("cpu"))
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.005)


def test_accelerating_track_is_less_stable_than_steady() -> None:
    steady = TempoExtractor(settings()).extract(as_tensor(drum_pattern(120, 20, SR), "cpu"), torch.device("cpu"))
    # Concatenated sections at 110, 120 and 130 BPM.
    sections = np.concatenate([drum_pattern(b, 8, SR) for b in (110, 120, 130)])
    changing = TempoExtractor(settings()).extract(as_tensor(sections, "cpu"), torch.device("cpu"))
    assert changing.features["tempo_stability"] < steady.features["tempo_stability"]
    assert 110 <= changing.features["bpm"] <= 130


def test_silence_and_short_input_have_no_tempo() -> None:
    extractor = TempoExtractor(settings())
    silent = extractor.extract(torch.zeros(5 * SR), torch.device("cpu"))
    assert silent.features["bpm"] is None and silent.features["beat_count"] == 0
    short = extractor.extract(torch.ones(SR), torch.device("cpu"))
    assert short.features["bpm"] is None and short.notes
    json.dumps(silent.features | short.features, allow_nan=False)
