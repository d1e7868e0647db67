"""Helpers for the extractor tests: device parameters and synthetic signals with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioproc.settings import PipelineSettings

#: Run a test on CPU and, marked ``gpu`` (skipped without CUDA), on CUDA.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


def settings(**overrides: object) -> PipelineSettings:
    return PipelineSettings(**overrides)  # type: ignore[arg-type]


def as_tensor(signal: np.ndarray, device: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(signal, dtype=np.float32), device=device)


def harmonic_tone(
    f0_hz: np.ndarray, sample_rate: int, n_harmonics: int = 8, rolloff: float = 1.0
) -> np.ndarray:
    """A harmonic tone following the f0 contour ``f0_hz`` (one value per sample), peak ~0.5.

    Harmonic ``k`` has amplitude ``k ** -rolloff``; harmonics above Nyquist are left out.
    """
    phase = 2 * np.pi * np.cumsum(f0_hz) / sample_rate
    out = np.zeros_like(phase)
    for k in range(1, n_harmonics + 1):
        audible = (k * f0_hz) < sample_rate / 2 * 0.95
        out += audible * np.sin(k * phase) / k**rolloff
    return 0.5 * out / np.max(np.abs(out))


def add_white_noise(signal: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``signal`` plus white Gaussian noise at ``snr_db`` dB below the signal's mean power."""
    rng = np.random.default_rng(seed)
    noise_power = np.mean(signal**2) / 10 ** (snr_db / 10)
    return signal + rng.standard_normal(signal.size) * np.sqrt(noise_power)


def drum_pattern(bpm: float, duration_s: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A rock beat at ``bpm``: kick on beats 1 and 3, snare on 2 and 4, closed hi-hat on eighths.

    Beat ``k`` falls at exactly ``k * 60 / bpm`` seconds (sample-accurate up to rounding).
    """
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    out = np.zeros(n)
    t = np.arange(int(0.3 * sample_rate)) / sample_rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    snare = (0.6 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(
        -t * 25
    )
    hat = rng.standard_normal(t.size) * np.exp(-t * 90)
    hat = np.diff(hat, prepend=0.0) * 0.5  # brighter
    eighth = 30.0 / bpm
    for i in range(int(duration_s / eighth)):
        start = int(round(i * eighth * sample_rate))
        if i % 4 == 0:
            sounds = [kick]
        elif i % 4 == 2:
            sounds = [snare]
        else:
            sounds = []
        sounds.append(0.4 * hat)
        for s in sounds:
            end = min(n, start + s.size)
            out[start:end] += s[: end - start]
    return 0.5 * out / np.max(np.abs(out))


def synthetic_speech(sample_rate: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A crude source-filter 'utterance': voiced vowels, a fricative and pauses, 3 s.

    Voiced stretches are a glottal pulse train (f0 gliding 100 -> 180 -> 120 Hz) through
    three formant resonators; the fricative is high-passed noise. Returns
    ``(signal, f0_hz per sample with 0 where unvoiced)``.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = 3 * sample_rate
    t = np.arange(n) / sample_rate
    f0 = np.interp(t, [0, 1.5, 3], [100, 180, 120])
    voiced = ((t > 0.2) & (t < 1.2)) | ((t > 1.8) & (t < 2.8))
    phase = np.cumsum(f0) / sample_rate
    pulses = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(float)
    source = lfilter([1.0], [1.0, -0.97], pulses)  # glottal roll-off
    speech = np.zeros(n)
    for formant, bandwidth in ((700, 80), (1200, 90), (2600, 120)):
        r = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2 * np.pi * formant / sample_rate
        speech += lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], source)
    speech *= voiced
    fricative = (t > 1.3) & (t < 1.7)
    hiss = np.diff(rng.standard_normal(n), prepend=0.0) * fricative
    signal = speech / np.abs(speech).max() * 0.5 + 0.05 * hiss
    return signal, np.where(voiced, f0, 0.0)
