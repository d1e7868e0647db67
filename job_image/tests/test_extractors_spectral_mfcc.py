"""Spectral descriptors and MFCCs against librosa on the same parameters."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
from extractor_testing import DEVICES, as_tensor, drum_pattern, harmonic_tone, settings

from audioproc.extractors.mfcc import MfccExtractor
from audioproc.extractors.spectral import SpectralExtractor

SR = 22_050


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 6 * SR
    t = np.arange(n) / SR
    glide = harmonic_tone(np.geomspace(110, 880, n), SR, n_harmonics=12)
    gaps = glide * (np.sin(2 * np.pi * 0.5 * t) > 0)  # exact digital silence in half the frames
    return {
        "glide": glide,
        "glide_with_silence": gaps,
        "drums": drum_pattern(120, 6, SR),
        "noise": 0.1 * rng.standard_normal(n),
    }


def _stats(values: np.ndarray) -> tuple[float, float, float, float, float]:
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return float(values.mean()), float(values.std()), p10, p50, p90


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(_signals()))
def test_spectral_matches_librosa(name: str, device: str) -> None:
    y = _signals()[name].astype(np.float32)
    out = SpectralExtractor(settings()).extract(as_tensor(y, device), torch.device(device))
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    reference = {
        "centroid_hz": librosa.feature.spectral_centroid(S=S, sr=SR)[0],
        "bandwidth_hz": librosa.feature.spectral_bandwidth(S=S, sr=SR)[0],
        "rolloff_hz": librosa.feature.spectral_rolloff(S=S, sr=SR, roll_percent=0.85)[0],
        "flatness": librosa.feature.spectral_flatness(S=S)[0],
        "zcr": librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)[0],
    }
    assert out.features["n_frames"] == S.shape[1]
    for key, values in reference.items():
        scale = max(float(np.abs(values).max()), 1e-6)
        for stat, expected in zip(
            ("mean", "std", "p10", "p50", "p90"), _stats(values), strict=True
        ):
            got = out.features[f"{key}_{stat}"]
            # Roll-off is a bin frequency: float32 cumulative sums may land one bin (10.8 Hz) apart.
            tolerance = 11.0 if key == "rolloff_hz" else 1e-3 * scale
            assert got == pytest.approx(expected, abs=tolerance), (key, stat)
    json.dumps(out.features, allow_nan=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(_signals()))
def test_mfcc_and_deltas_match_librosa(name: str, device: str) -> None:
    y = _signals()[name].astype(np.float32)
    out = MfccExtractor(settings()).extract(as_tensor(y, device), torch.device(device))
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20)
    deltas = librosa.feature.delta(mfcc)
    np.testing.assert_allclose(out.features["mfcc_mean"], mfcc.mean(axis=1), atol=0.02, rtol=1e-3)
    np.testing.assert_allclose(out.features["mfcc_std"], mfcc.std(axis=1), atol=0.02, rtol=1e-3)
    np.testing.assert_allclose(out.features["delta_mean"], deltas.mean(axis=1), atol=2e-3)
    np.testing.assert_allclose(out.features["delta_std"], deltas.std(axis=1), atol=0.01, rtol=1e-3)
    assert len(out.features["mfcc_mean"]) == 20
    json.dumps(out.features, allow_nan=False)


def test_mfcc_very_short_input_has_no_deltas_and_says_so() -> None:
    y = np.sin(np.arange(2000) * 0.1).astype(np.float32)  # 4 frames
    out = MfccExtractor(settings()).extract(as_tensor(y, "cpu"), torch.device("cpu"))
    assert out.features["n_frames"] == 4
    assert out.features["delta_std"] == [0.0] * 20 and out.notes
