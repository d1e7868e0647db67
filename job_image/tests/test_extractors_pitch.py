"""Pitch: known f0 in noise, vibrato, speech-like input, silence; the Viterbi and the CREPE path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from extractor_testing import (
    DEVICES,
    add_white_noise,
    as_tensor,
    harmonic_tone,
    settings,
    synthetic_speech,
)

from audioproc.extractors import pitch
from audioproc.extractors.pitch import PitchExtractor

SR = 16_000


def _frame_truth(f0_per_sample: np.ndarray) -> np.ndarray:
    n_frames = 1 + f0_per_sample.size // 160
    return f0_per_sample[np.minimum(np.arange(n_frames) * 160, f0_per_sample.size - 1)]


def raw_pitch_accuracy(
    estimate: np.ndarray, voiced: np.ndarray, truth: np.ndarray, cents: float = 50.0
) -> float:
    """Share of truly voiced frames whose estimate is voiced and within ``cents`` of the truth."""
    has_pitch = truth > 0
    safe = np.where(voiced & has_pitch, estimate, 1.0)
    close = np.abs(1200 * np.log2(safe / np.where(has_pitch, truth, 1.0))) < cents
    return float((close & voiced & has_pitch).sum() / has_pitch.sum())


CONTOURS = {
    "tone_110": lambda t: np.full(t.size, 110.0),
    "tone_330": lambda t: np.full(t.size, 330.0),
    "tone_660": lambda t: np.full(t.size, 660.0),
    "vibrato_250": lambda t: 250 * 2 ** (0.7 / 12 * np.sin(2 * np.pi * 5.5 * t)),
    "glide_120_480": lambda t: np.geomspace(120, 480, t.size),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CONTOURS))
def test_known_f0_at_0db_snr(name: str, device: str) -> None:
    t = np.arange(2 * SR) / SR
    f0 = CONTOURS[name](t)
    noisy = add_white_noise(harmonic_tone(f0, SR), snr_db=0.0, seed=7)
    out = PitchExtractor(settings(pitch_crepe_model="tiny")).extract(
        as_tensor(noisy, device), torch.device(device)
    )
    truth = _frame_truth(f0)
    assert out.artifacts["f0_hz"].shape == truth.shape == out.artifacts["voiced"].shape
    rpa = raw_pitch_accuracy(out.artifacts["f0_hz"], out.artifacts["voiced"], truth)
    assert rpa >= 0.95, rpa
    assert out.features["tracker"] == ("swipe-viterbi" if device == "cpu" else "torchcrepe-tiny")
    json.dumps(out.features, allow_nan=False)


def test_pure_sine_in_noise_and_statistics() -> None:
    t = np.arange(2 * SR) / SR
    sine = add_white_noise(0.5 * np.sin(2 * np.pi * 440 * t), snr_db=0.0, seed=3)
    out = PitchExtractor(settings()).extract(as_tensor(sine, "cpu"), torch.device("cpu"))
    assert out.features["voiced_ratio"] > 0.9
    assert out.features["f0_median_hz"] == pytest.approx(440, rel=0.01)
    assert out.features["f0_range_semitones"] < 1.0


def test_vibrato_range_in_semitones() -> None:
    t = np.arange(3 * SR) / SR
    f0 = 300 * 2 ** (1.0 / 12 * np.sin(2 * np.pi * 5 * t))  # +-1 semitone
    out = PitchExtractor(settings()).extract(
        as_tensor(harmonic_tone(f0, SR), "cpu"), torch.device("cpu")
    )
    assert out.features["f0_range_semitones"] == pytest.approx(2.0, abs=0.25)
    assert out.features["f0_min_hz"] < 290 < 310 < out.features["f0_max_hz"]


def test_speech_like_signal_is_tracked_where_voiced() -> None:
    signal, f0 = synthetic_speech(SR)
    out = PitchExtractor(settings()).extract(as_tensor(signal, "cpu"), torch.device("cpu"))
    truth = _frame_truth(f0)
    voiced = out.artifacts["voiced"]
    assert raw_pitch_accuracy(out.artifacts["f0_hz"], voiced, truth) >= 0.9
    unvoiced_truth = truth == 0
    assert voiced[unvoiced_truth].mean() < 0.1  # pauses and the fricative stay unvoiced


@pytest.mark.parametrize("device", DEVICES)
def test_silence_and_noise_are_unvoiced(device: str) -> None:
    extractor = PitchExtractor(settings(pitch_crepe_model="tiny"))
    silent = extractor.extract(torch.zeros(SR, device=device), torch.device(device))
    assert silent.features["voiced_ratio"] == 0.0 and silent.features["f0_mean_hz"] is None
    assert np.isnan(silent.artifacts["f0_hz"]).all()
    json.dumps(silent.features, allow_nan=False)
    noise = np.random.default_rng(0).standard_normal(2 * SR) * 0.1
    assert (
        extractor.extract(as_tensor(noise, device), torch.device(device)).features["voiced_ratio"]
        < 0.05
    )


def test_segmented_viterbi_equals_one_pass() -> None:
    """Decoding in overlapping segments (batched) gives the path of one sequential pass."""
    rng = np.random.default_rng(0)
    n_frames, n_states = 1300, 60
    walk = np.cumsum(rng.integers(-2, 3, n_frames)) % n_states
    scores = rng.random((n_frames, n_states)) * 0.6
    scores[np.arange(n_frames), walk] += 0.5
    scores = torch.tensor(scores, dtype=torch.float32)
    whole = pitch.viterbi_decode(scores, pitch.SWIPE_VITERBI, segment=n_frames, overlap=0)
    segmented = pitch.viterbi_decode(scores, pitch.SWIPE_VITERBI, segment=200, overlap=50)
    assert (whole == segmented).float().mean() > 0.99


def test_crepe_path_runs_on_cpu_with_shipped_weights() -> None:
    """The GPU tracker's code on CPU (the same torch code; CUDA only changes the device)."""
    t = np.arange(SR // 2) / SR
    track = pitch.track_crepe(as_tensor(harmonic_tone(np.full(t.size, 220.0), SR), "cpu"), "tiny")
    voiced_f0 = track.f0_hz[track.voiced]
    assert track.voiced.mean() > 0.8
    assert np.median(voiced_f0) == pytest.approx(220, rel=0.02)
