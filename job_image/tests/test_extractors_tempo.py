"""Tempo and beats on drum patterns of known tempo."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from extractor_testing import DEVICES, add_white_noise, as_tensor, drum_pattern, settings

from audioproc.extractors.tempo import TempoExtractor, prior_mass_in_reach

SR = 16_000


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bpm", [87, 100, 120, 128, 143])
def test_steady_tempo_within_half_a_percent(bpm: float, device: str) -> None:
    duration = 20.0
    out = TempoExtractor(settings()).extract(
        as_tensor(drum_pattern(bpm, duration, SR), device), torch.device(device)
    )
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.005)
    assert out.features["tempo_stability"] > 0.95
    beats = out.artifacts["beats"]
    truth = np.arange(0, duration, 60 / bpm)
    assert out.features["beat_count"] == beats.size >= 0.9 * truth.size
    distance = np.abs(beats[:, None] - truth[None, :]).min(axis=1)
    assert np.mean(distance < 0.010) > 0.9  # beats sit on the kicks and snares (ENVELOPE_LEAD_S)
    json.dumps(out.features, allow_nan=False)


def test_tempo_in_noise_and_with_a_gap() -> None:
    bpm, duration = 110.0, 24.0
    drums = drum_pattern(bpm, duration, SR)
    t = np.arange(drums.size) / SR
    drums[(t > 10) & (t < 13)] = 0.0  # three seconds of silence in the middle
    out = TempoExtractor(settings()).extract(
        as_tensor(add_white_noise(drums, 10.0), "cpu"), torch.device("cpu")
    )
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.005)


def test_accelerating_track_is_less_stable_than_steady() -> None:
    steady = TempoExtractor(settings()).extract(
        as_tensor(drum_pattern(120, 20, SR), "cpu"), torch.device("cpu")
    )
    # Concatenated sections at 110, 120 and 130 BPM.
    sections = np.concatenate([drum_pattern(b, 8, SR) for b in (110, 120, 130)])
    changing = TempoExtractor(settings()).extract(as_tensor(sections, "cpu"), torch.device("cpu"))
    assert changing.features["tempo_stability"] < steady.features["tempo_stability"]
    assert 110 <= changing.features["bpm"] <= 130


def test_silence_and_short_input_have_no_tempo() -> None:
    extractor = TempoExtractor(settings())
    silent = extractor.extract(torch.zeros(5 * SR), torch.device("cpu"))
    assert silent.features["bpm"] is None and silent.features["beat_count"] == 0
    short = extractor.extract(torch.ones(SR // 4), torch.device("cpu"))
    assert short.features["bpm"] is None and short.notes
    json.dumps(silent.features | short.features, allow_nan=False)


# --------------------------------------------------------------------------- mechanisms of issue 14


def _kick(sr: int) -> np.ndarray:
    t = np.arange(int(0.25 * sr)) / sr
    return np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)


def _hat(sr: int, seed: int) -> np.ndarray:
    t = np.arange(int(0.08 * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return np.diff(noise, prepend=0.0) * np.exp(-t * 40)


def _chord(sr: int) -> np.ndarray:
    t = np.arange(int(0.2 * sr)) / sr
    return sum(np.sin(2 * np.pi * f * t) for f in (330.0, 415.0, 494.0)) / 3 * np.exp(-t * 15)


def _place(
    n: int, times_s: np.ndarray, sound: np.ndarray, gain: float, sr: int, out: np.ndarray
) -> None:
    for time_s in times_s:
        start = int(round(time_s * sr))
        end = min(n, start + sound.size)
        if start < n:
            out[start:end] += gain * sound[: end - start]


def _extract(signal: np.ndarray) -> dict:
    return TempoExtractor(settings()).extract(as_tensor(signal, "cpu"), torch.device("cpu"))


def test_strong_off_beats_do_not_double_the_tempo() -> None:
    """Kick on every beat, an off-beat hi-hat as loud as the kick (reggae / house 'skank')."""
    bpm, duration = 100.0, 20.0
    n, beat = int(duration * SR), 60.0 / bpm
    out = np.zeros(n)
    beats = np.arange(0, duration, beat)
    _place(n, beats, _kick(SR), 1.0, SR, out)
    hat = _hat(SR, 1)
    _place(n, beats + beat / 2, hat / np.abs(hat).max(), 1.0, SR, out)
    result = _extract(0.5 * out / np.abs(out).max())
    assert result.features["bpm"] == pytest.approx(bpm, rel=0.04)
    assert result.features["bpm_alternative"] == pytest.approx(2 * bpm, rel=0.04)


def test_beats_follow_a_tempo_change_mid_track() -> None:
    first, second, half = 100.0, 130.0, 15.0
    signal = np.concatenate([drum_pattern(first, half, SR), drum_pattern(second, half, SR, seed=1)])
    out = TempoExtractor(settings()).extract(as_tensor(signal, "cpu"), torch.device("cpu"))
    beats = out.artifacts["beats"]
    truth = np.concatenate([np.arange(0, half, 60 / first), half + np.arange(0, half, 60 / second)])
    found = np.abs(truth[:, None] - beats[None, :]).min(axis=1) <= 0.07
    assert found[truth < half].mean() >= 0.9 and found[truth >= half + 1].mean() >= 0.9
    late = np.diff(beats[beats > half + 3])
    assert np.median(late) == pytest.approx(60 / second, rel=0.03)
    assert out.features["bpm"] == pytest.approx(first, rel=0.04) or out.features[
        "bpm"
    ] == pytest.approx(second, rel=0.04)


@pytest.mark.parametrize("bpm", [90.0, 120.0, 140.0])
def test_a_three_second_clip_gets_its_bpm(bpm: float) -> None:
    out = _extract(drum_pattern(bpm, 3.0, SR, seed=2))
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.04)
    assert out.features["beat_count"] >= 3


@pytest.mark.parametrize("bpm", [90.0, 120.0, 140.0])
def test_a_clip_holding_two_beat_periods_gets_its_bpm(bpm: float) -> None:
    """1.5 s holds two periods from 80 BPM up: a BPM, beats, and a confidence held down by
    the slow tempi (30 to 80 BPM) that so short an input cannot test."""
    out = _extract(drum_pattern(bpm, 1.5, SR, seed=2))
    assert out.features["bpm"] == pytest.approx(bpm, rel=0.04)
    beats = out.artifacts["beats"]
    assert out.features["beat_count"] == beats.size >= 1
    truth = np.arange(0, 1.5, 60 / bpm)
    assert np.abs(beats[:, None] - truth[None, :]).min(axis=1).max() <= 0.07
    n_frames = 1 + int(1.5 * SR) // 160
    assert 0.0 < out.features["confidence"] <= prior_mass_in_reach(n_frames) < 0.8


def test_confidence_of_a_short_clip_counts_the_tempi_it_cannot_test() -> None:
    """A 1 s clip of a 90 BPM pattern cannot hold two of its periods (1.33 s): whatever it reads
    (the tempogram sees 120 BPM and up), its confidence stays under that of a 3 s clip."""
    short = _extract(drum_pattern(90.0, 1.0, SR, seed=2)).features
    longer = _extract(drum_pattern(90.0, 3.0, SR, seed=2)).features
    assert longer["bpm"] == pytest.approx(90.0, rel=0.04)
    assert short["confidence"] <= prior_mass_in_reach(1 + SR // 160) < 0.5
    assert short["confidence"] < longer["confidence"]


def test_waltz_is_read_at_the_quarter_note() -> None:
    """3/4: bass on beat 1, chords on beats 2 and 3; the tempo is the quarter note, not the bar."""
    bpm, duration = 135.0, 20.0
    n, beat = int(duration * SR), 60.0 / bpm
    out = np.zeros(n)
    bars = np.arange(0, duration, 3 * beat)
    _place(n, bars, _kick(SR), 1.0, SR, out)
    _place(n, np.concatenate([bars + beat, bars + 2 * beat]), _chord(SR), 0.6, SR, out)
    result = _extract(add_white_noise(0.5 * out / np.abs(out).max(), 30.0))
    assert result.features["bpm"] == pytest.approx(bpm, rel=0.04)
    truth = np.arange(0, duration - 0.5, beat)
    beats = result.artifacts["beats"]
    assert np.mean(np.abs(truth[:, None] - beats[None, :]).min(axis=1) <= 0.07) >= 0.9


def _random_onsets(seed: int, duration: float = 10.0) -> np.ndarray:
    """Hits at Poisson times (no tempo at all): any BPM read from it is wrong."""
    rng = np.random.default_rng(seed)
    n = int(duration * SR)
    out = np.zeros(n)
    times = np.cumsum(rng.exponential(0.3, size=int(duration / 0.3) * 2))
    _place(n, times[times < duration], _kick(SR), 1.0, SR, out)
    _place(n, times[times < duration] + rng.uniform(0.05, 0.2), _hat(SR, seed), 0.5, SR, out)
    return 0.5 * out / np.abs(out).max()


def test_confidence_ranks_clear_tempi_above_tempo_free_input() -> None:
    clear = [
        _extract(add_white_noise(drum_pattern(b, 10.0, SR, seed=3), 10.0))
        for b in (85.0, 115.0, 130.0)
    ]
    for out, bpm in zip(clear, (85.0, 115.0, 130.0), strict=True):
        assert out.features["bpm"] == pytest.approx(bpm, rel=0.04)
    tempo_free = [_extract(_random_onsets(seed)) for seed in (1, 2, 3)]
    assert min(o.features["confidence"] for o in clear) > max(
        o.features["confidence"] for o in tempo_free
    )
    for out in clear + tempo_free:
        assert 0.0 <= out.features["confidence"] <= 1.0


def test_alternative_tempo_is_a_metrical_relative_with_its_strength() -> None:
    out = _extract(drum_pattern(120.0, 15.0, SR))
    features = out.features
    ratio = features["bpm_alternative"] / features["bpm"]
    assert min(abs(ratio / r - 1) for r in (2.0, 0.5, 1.5, 2 / 3, 3.0, 1 / 3)) <= 0.04
    assert 0.0 < features["bpm_alternative_strength"] <= 0.5
    json.dumps(features, allow_nan=False)


def _dotted_eighth_riff(bpm: float, duration: float) -> np.ndarray:
    """Hi-hat on every sixteenth, a loud chord every three sixteenths, kick on beats 1 and 3.

    The chords' pulse (4/3 of the tempo) is the strongest; only the sixteenth grid says that
    the beat is four sixteenths, not three.
    """
    n, sixteenth = int(duration * SR), 60.0 / bpm / 4
    out = np.zeros(n)
    grid = np.arange(0, duration, sixteenth)
    hat = _hat(SR, 4)
    _place(n, grid, hat / np.abs(hat).max(), 0.3, SR, out)
    _place(n, grid[::3], _chord(SR), 1.0, SR, out)
    _place(n, grid[::8], _kick(SR), 1.0, SR, out)
    return add_white_noise(0.5 * out / np.abs(out).max(), 30.0)


@pytest.mark.parametrize(("bpm", "duration"), [(90.0, 10.0), (100.0, 6.0)])
def test_dotted_eighth_figure_is_read_at_the_beat_not_at_four_thirds(
    bpm: float, duration: float
) -> None:
    out = _extract(_dotted_eighth_riff(bpm, duration)).features
    assert out["bpm"] == pytest.approx(bpm, rel=0.04)
    assert out["bpm_alternative"] == pytest.approx(4 / 3 * bpm, rel=0.04)
    assert out["bpm_alternative_strength"] > 0.5  # the stronger pulse, overruled by the grid


def test_twelve_eight_is_not_pulled_to_three_quarters_by_the_grid() -> None:
    """12/8: hi-hat on every triplet eighth, kick and chord on alternate dotted quarters.

    Read on a sixteenth grid alone, 3/4 of the tempo (a period of four triplet eighths) fits
    the onsets best; the triplet grid of the true beat must keep it.
    """
    bpm, duration = 95.0, 12.0
    n, beat = int(duration * SR), 60.0 / bpm
    out = np.zeros(n)
    beats = np.arange(0, duration, beat)
    hat = _hat(SR, 5)
    _place(n, np.arange(0, duration, beat / 3), hat / np.abs(hat).max(), 0.4, SR, out)
    _place(n, beats[::2], _kick(SR), 1.0, SR, out)
    _place(n, beats[1::2], _chord(SR), 0.8, SR, out)
    result = _extract(add_white_noise(0.5 * out / np.abs(out).max(), 30.0))
    assert result.features["bpm"] == pytest.approx(bpm, rel=0.04)


# --------------------------------------------------------------------------- downbeats


def _bars(bpm: float, duration: float, metre: int, first_bar_s: float) -> np.ndarray:
    """Hi-hat on every beat; kick on the first beat of each bar of ``metre`` beats, a chord
    (330 to 494 Hz, above the bass bands) on its middle or second beat."""
    n, beat = int(duration * SR), 60.0 / bpm
    out = np.zeros(n)
    hat = _hat(SR, 6)
    _place(n, np.arange(0, duration, beat), hat / np.abs(hat).max(), 0.5, SR, out)
    bars = np.arange(first_bar_s, duration, metre * beat)
    _place(n, bars, _kick(SR), 1.0, SR, out)
    _place(n, bars + (metre // 2) * beat, _chord(SR), 0.6, SR, out)
    return add_white_noise(0.5 * out / np.abs(out).max(), 30.0)


@pytest.mark.parametrize(
    ("bpm", "metre", "first_bar_beats"), [(135.0, 3, 0), (100.0, 3, 1), (120.0, 4, 0), (96.0, 4, 2)]
)
def test_downbeats_where_the_bass_marks_the_bar(
    bpm: float, metre: int, first_bar_beats: int
) -> None:
    beat = 60.0 / bpm
    result = _extract(_bars(bpm, 12.0, metre, first_bar_beats * beat))
    assert result.features["beats_per_bar"] == metre
    bar_starts = result.artifacts["bar_starts"]
    truth = np.arange(first_bar_beats * beat, 12.0 - 0.2, metre * beat)
    assert bar_starts.size >= truth.size - 1
    assert np.abs(bar_starts[:, None] - truth[None, :]).min(axis=1).max() <= 0.07


def test_no_downbeats_where_the_metre_is_not_clear() -> None:
    """A rock beat (kick on 1 and 3: bars of 4 and of 2 alike) and tempo-free hits."""
    for signal in (drum_pattern(120.0, 12.0, SR), _random_onsets(1), _random_onsets(2)):
        result = _extract(signal)
        assert result.features["beats_per_bar"] is None
        assert "bar_starts" not in result.artifacts
