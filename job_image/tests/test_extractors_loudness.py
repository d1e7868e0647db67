"""Loudness against pyloudnorm (BS.1770-4) and the EBU Tech 3342 / BS.1770 reference cases."""

from __future__ import annotations

import json

import numpy as np
import pyloudnorm
import pytest
import torch
from extractor_testing import DEVICES, as_tensor, settings

from audioproc.extractors.loudness import LoudnessExtractor

SR = 48_000


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(12 * SR) / SR
    envelope = np.where(
        (t % 3) < 2.0, 1.0, 0.0005
    )  # speech-like: loud phrases and near-silent gaps
    return {
        "sine_1k": 0.25 * np.sin(2 * np.pi * 997 * t),
        "sine_60": 0.6 * np.sin(2 * np.pi * 60 * t),
        "sine_10k": 0.2 * np.sin(2 * np.pi * 10_000 * t),
        "white_noise": 0.05 * rng.standard_normal(t.size),
        "gated_noise": 0.2 * rng.standard_normal(t.size) * envelope,
        "chord_crescendo": np.linspace(0.01, 0.7, t.size)
        * sum(np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 2500))
        / 4,
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(_signals()))
def test_integrated_loudness_matches_pyloudnorm(name: str, device: str) -> None:
    signal = _signals()[name].astype(np.float32)
    expected = pyloudnorm.Meter(SR).integrated_loudness(signal.astype(np.float64))
    out = LoudnessExtractor(settings()).extract(as_tensor(signal, device), torch.device(device))
    assert out.features["integrated_lufs"] == pytest.approx(expected, abs=0.1)


def test_full_scale_1k_sine_reads_minus_3_lufs() -> None:
    """BS.1770-4 §2.1: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS."""
    t = np.arange(5 * SR) / SR
    out = LoudnessExtractor(settings()).extract(
        as_tensor(np.sin(2 * np.pi * 997 * t), "cpu"), torch.device("cpu")
    )
    assert out.features["integrated_lufs"] == pytest.approx(-3.01, abs=0.02)
    assert out.features["rms_dbfs"] == pytest.approx(-3.01, abs=0.01)


def test_loudness_range_of_two_level_sine() -> None:
    """EBU Tech 3342 case 1: 20 s at -20 dBFS then 20 s at -30 dBFS has LRA 10 +- 1 LU."""
    t = np.arange(20 * SR) / SR
    tone = np.sin(2 * np.pi * 1000 * t)
    signal = np.concatenate([tone * 10 ** (-20 / 20), tone * 10 ** (-30 / 20)])
    out = LoudnessExtractor(settings()).extract(as_tensor(signal, "cpu"), torch.device("cpu"))
    assert out.features["loudness_range_lu"] == pytest.approx(10.0, abs=1.0)
    curve = out.artifacts["short_term_lufs"]
    assert curve.shape == (400 - 30 + 1,)  # 3 s blocks every 100 ms over 40 s
    assert curve[0] == pytest.approx(-23.0, abs=0.1) and curve[-1] == pytest.approx(-33.0, abs=0.1)
    envelope = out.artifacts["peak_envelope"]
    assert envelope.shape == (400,) and envelope.dtype == np.float32  # 100 ms peaks over 40 s
    assert envelope[:200] == pytest.approx(10 ** (-20 / 20), rel=1e-3)
    assert envelope[200:] == pytest.approx(10 ** (-30 / 20), rel=1e-3)


def test_true_peak_finds_intersample_peak() -> None:
    """A sine at fs/4 sampled at +-45 degrees has sample peak -3.01 dBFS but true peak 0 dBTP."""
    n = 2 * SR
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / 4800)  # no edge ringing
    signal = np.sin(2 * np.pi * (SR / 4) * np.arange(n) / SR + np.pi / 4) * fade
    out = LoudnessExtractor(settings()).extract(as_tensor(signal, "cpu"), torch.device("cpu"))
    assert out.features["sample_peak_dbfs"] == pytest.approx(-3.01, abs=0.01)
    assert out.features["true_peak_dbtp"] == pytest.approx(0.0, abs=0.05)


def test_silence_and_short_input_give_none_not_inf() -> None:
    extractor = LoudnessExtractor(settings())
    silent = extractor.extract(torch.zeros(5 * SR), torch.device("cpu"))
    assert silent.features["integrated_lufs"] is None
    assert silent.features["true_peak_dbtp"] is None
    assert np.all(silent.artifacts["short_term_lufs"] == -120.0)
    short = extractor.extract(torch.full((SR // 10,), 0.1), torch.device("cpu"))
    assert short.features["integrated_lufs"] is None and short.features["loudness_range_lu"] is None
    json.dumps(silent.features | short.features, allow_nan=False)
