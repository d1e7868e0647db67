"""Decoding real encoded media: every container, the known tone, and each bad-input error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_params import TONE_F0, TONE_SECONDS

from audioproc import decode as decode_module
from audioproc import samples
from audioproc.decode import decode_audio
from audioproc.errors import (
    AudioTooLongError,
    CorruptMediaError,
    EmptyAudioError,
    InputError,
    NoAudioStreamError,
    NonFiniteAudioError,
)

CONTAINERS = [
    "tone.wav",
    "tone.flac",
    "tone.mp3",
    "tone.m4a",
    "tone.ogg",
    "tone.mp4",
    "tone.mkv",
    "tone.webm",
    "tone.mov",
]


def dominant_frequency(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("name", CONTAINERS)
def test_decodes_every_container_to_mono_at_each_rate(media: Path, name: str) -> None:
    decoded = decode_audio(media / name, [16000, 22050], max_duration_s=60)

    assert decoded.duration_s == pytest.approx(TONE_SECONDS, abs=0.1)  # codec padding: < 0.1 s
    assert set(decoded.signals) == {16000, 22050}
    for rate, signal in decoded.signals.items():
        assert signal.dtype == np.float32 and signal.ndim == 1
        assert signal.size == pytest.approx(TONE_SECONDS * rate, rel=0.03)
        assert dominant_frequency(signal, rate) == pytest.approx(TONE_F0, abs=1.0)
        assert 0.3 < np.abs(signal).max() <= 1.0
    assert decoded.source.channels == 2
    assert decoded.source.sample_rate == (48000 if name.endswith((".ogg", ".webm")) else 44100)


def test_source_metadata_names_codec_and_container(media: Path) -> None:
    decoded = decode_audio(media / "tone.mp4", [16000], max_duration_s=60)
    assert decoded.source.codec == "aac"
    assert "mp4" in (decoded.source.container or "")


def test_downmix_is_the_mean_of_the_channels(tmp_path: Path) -> None:
    left = samples.tone(1.0, 16000, 440.0, harmonics=1, amplitude=0.8)
    stereo = np.stack([left, np.zeros_like(left)])
    samples.write_audio(tmp_path / "left.wav", stereo, 16000, channels=2)

    mono = decode_audio(tmp_path / "left.wav", [16000], max_duration_s=60).signals[16000]

    np.testing.assert_allclose(mono, left / 2, atol=2e-4)  # 16-bit PCM quantisation


def test_native_rate_is_not_resampled(tmp_path: Path) -> None:
    signal = samples.tone(1.0, 22050, 300.0)
    samples.write_audio(tmp_path / "x.flac", signal, 22050)
    decoded = decode_audio(tmp_path / "x.flac", [22050], max_duration_s=60)
    np.testing.assert_allclose(decoded.signals[22050], signal, atol=1e-4)


def test_video_without_audio_stream(media: Path) -> None:
    with pytest.raises(NoAudioStreamError, match="has no audio stream"):
        decode_audio(media / "video_only.mp4", [16000], max_duration_s=60)


@pytest.mark.parametrize("name", ["truncated.mp4", "truncated.flac", "garbage.mp4"])
def test_truncated_or_corrupt_file(media: Path, name: str) -> None:
    with pytest.raises(CorruptMediaError, match="truncated or corrupt") as error:
        decode_audio(media / name, [16000], max_duration_s=60)
    assert "re-encode or re-upload" in str(error.value)


def test_truncated_flac_says_how_much_was_decodable(media: Path) -> None:
    with pytest.raises(CorruptMediaError, match=r"declares 3\.0 s of audio but only 1\.\d s"):
        decode_audio(media / "truncated.flac", [16000], max_duration_s=60)


def test_zero_length_audio(media: Path) -> None:
    with pytest.raises(EmptyAudioError, match="no samples"):
        decode_audio(media / "empty.wav", [16000], max_duration_s=60)


def test_too_long_from_the_declared_duration(media: Path) -> None:
    with pytest.raises(
        AudioTooLongError, match="over the limit of 2 s; cut it into parts or raise MAX_DURATION_S"
    ):
        decode_audio(media / "tone.mp4", [16000], max_duration_s=2)


def test_too_long_found_while_decoding_when_nothing_is_declared(
    media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Streams without a declared duration (live captures, some raw ADTS) are checked as they decode.
    monkeypatch.setattr(decode_module, "probe_duration_s", lambda container, stream: None)
    with pytest.raises(AudioTooLongError, match="lasts 2 s or more"):
        decode_audio(media / "tone.m4a", [16000], max_duration_s=1.5)


def _with_bad_sample(value: float, index: int, n: int = 3 * 44100) -> np.ndarray:
    signal = samples.tone(n / 44100, 44100, 440.0)
    signal[index] = value
    return signal


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize(
    ("value", "index"),
    [
        (np.nan, 0),
        (np.nan, 70000),
        (np.inf, 44100),
        (-np.inf, 3 * 44100 - 1),  # first, middle, block edge, last
    ],
)
def test_non_finite_samples_are_an_input_error(
    tmp_path: Path, value: float, index: int, bits: int
) -> None:
    path = samples.write_float_wav(
        tmp_path / "bad.wav", _with_bad_sample(value, index), 44100, bits=bits
    )
    with pytest.raises(
        NonFiniteAudioError,
        match=rf"non-finite samples \(NaN or ±Inf\), the first at {index / 44100:.3f} s",
    ):
        decode_audio(path, [16000, 44100], max_duration_s=60)


def test_non_finite_in_one_channel_only(tmp_path: Path) -> None:
    stereo = np.stack([samples.tone(1.0, 44100, 440.0), _with_bad_sample(np.nan, 500, 44100)])
    path = samples.write_float_wav(tmp_path / "bad.wav", stereo, 44100, channels=2)
    with pytest.raises(NonFiniteAudioError, match="the first at 0.011 s"):
        decode_audio(path, [16000], max_duration_s=60)


def test_huge_finite_samples_whose_downmix_overflows(tmp_path: Path) -> None:
    """3e38 is a finite float32, but the mean of two of them overflows to inf: refused, not nulls."""
    signal = np.full((2, 4410), 3e38, dtype=np.float32)
    path = samples.write_float_wav(tmp_path / "huge.wav", signal, 44100, channels=2)
    with pytest.raises(NonFiniteAudioError):
        decode_audio(path, [16000], max_duration_s=60)


def test_finite_float_wav_beyond_full_scale_is_decoded_as_is(tmp_path: Path) -> None:
    signal = 4.0 * samples.tone(1.0, 44100, 440.0)
    path = samples.write_float_wav(tmp_path / "loud.wav", signal, 44100)
    decoded = decode_audio(path, [44100], max_duration_s=60)
    np.testing.assert_allclose(decoded.signals[44100], signal, atol=1e-6)


def test_every_decode_error_is_an_input_error() -> None:
    for error in (
        NoAudioStreamError,
        CorruptMediaError,
        EmptyAudioError,
        AudioTooLongError,
        NonFiniteAudioError,
    ):
        assert issubclass(error, InputError)


@pytest.mark.skipif(not samples.espeak_available(), reason="espeak-ng is not installed")
def test_speech_from_espeak_survives_aac(tmp_path: Path) -> None:
    speech = samples.speech("The quick brown fox jumps over the lazy dog.", 16000)
    samples.write_audio(tmp_path / "speech.m4a", speech, 16000)
    decoded = decode_audio(tmp_path / "speech.m4a", [16000], max_duration_s=60)
    assert decoded.duration_s == pytest.approx(speech.size / 16000, abs=0.1)
    assert np.abs(decoded.signals[16000]).max() > 0.1
