"""Real encoded test and demo media, made with PyAV (FFmpeg inside the wheel).

Signals with a known answer (a tone's f0, a drum pattern's tempo), speech from espeak-ng
when it is installed, encoders into the usual audio and video containers, and broken
media (no audio stream, truncated, garbage, zero-length audio) for the error paths.

Signal generators return float32 arrays of shape ``(n_samples,)`` in [-1, 1]. Writers take
audio as an array of shape ``(n_samples,)`` (mono) or ``(channels, n_samples)``, or as an
iterable of such chunks (so a two-hour file never sits in memory), at ``sample_rate`` Hz.

Example::

    from audioproc import samples
    audio = samples.tone(5.0, 44100, f0=220.0)
    samples.write_audio("tone.mp3", audio, 44100)
    samples.write_video("clip.mp4", samples.drum_pattern(30.0, 44100, bpm=120.0), 44100)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "AUDIO_FORMATS",
    "VIDEO_FORMATS",
    "add_noise",
    "drum_pattern",
    "espeak_available",
    "speech",
    "tone",
    "tone_chunks",
    "write_audio",
    "write_float_wav",
    "write_garbage",
    "write_no_audio",
    "write_truncated",
    "write_video",
    "write_zero_length_audio",
]

# extension -> (container format, audio codec, forced sample rate or None)
AUDIO_FORMATS: dict[str, tuple[str, str, int | None]] = {
    ".wav": ("wav", "pcm_s16le", None),
    ".flac": ("flac", "flac", None),
    ".mp3": ("mp3", "libmp3lame", None),
    ".m4a": ("ipod", "aac", None),
    ".aac": ("adts", "aac", None),
    ".ogg": ("ogg", "libopus", 48000),  # Ogg/Opus: Opus runs at 48 kHz
    ".opus": ("ogg", "libopus", 48000),
    ".mka": ("matroska", "flac", None),
    ".mkv": (
        "matroska",
        "libopus",
        48000,
    ),  # audio-only Matroska with Opus (write_video's .mkv is H.264/AAC)
}
# extension -> (container format, video codec, audio codec, forced audio rate or None)
VIDEO_FORMATS: dict[str, tuple[str, str, str, int | None]] = {
    ".mp4": ("mp4", "libx264", "aac", None),
    ".mov": ("mov", "libx264", "aac", None),
    ".mkv": ("matroska", "libx264", "aac", None),
    ".webm": ("webm", "libvpx", "libopus", 48000),
    ".avi": ("avi", "mpeg4", "libmp3lame", None),
}

AudioLike = np.ndarray | Iterable[np.ndarray]


# --------------------------------------------------------------------------- signals


def tone(
    duration_s: float,
    sample_rate: int,
    f0: float,
    *,
    glide_to: float | None = None,
    vibrato_hz: float = 0.0,
    vibrato_cents: float = 0.0,
    harmonics: int = 4,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A harmonic tone whose f0 is known at every sample.

    The f0 glides exponentially from ``f0`` to ``glide_to`` Hz (constant when None) and
    is modulated by a sinusoidal vibrato of ``vibrato_cents`` depth at ``vibrato_hz``.
    Harmonic ``k`` (1-based) has amplitude ``1/k``; the sum is scaled to peak ``amplitude``.

    Returns:
        float32 array of shape ``(round(duration_s * sample_rate),)``.
        Use :func:`tone_f0` for the matching ground-truth f0 in Hz.
    """
    f0_track = tone_f0(
        np.arange(round(duration_s * sample_rate)) / sample_rate,
        duration_s,
        f0,
        glide_to=glide_to,
        vibrato_hz=vibrato_hz,
        vibrato_cents=vibrato_cents,
    )
    phase = 2 * np.pi * np.cumsum(f0_track) / sample_rate
    out = np.zeros_like(phase)
    for k in range(1, harmonics + 1):
        # Drop harmonics above Nyquist instead of letting them alias.
        out += np.where(k * f0_track < sample_rate / 2, np.sin(k * phase) / k, 0.0)
    peak = np.max(np.abs(out)) or 1.0
    return (amplitude * out / peak).astype(np.float32)


def tone_f0(
    times_s: np.ndarray,
    duration_s: float,
    f0: float,
    *,
    glide_to: float | None = None,
    vibrato_hz: float = 0.0,
    vibrato_cents: float = 0.0,
) -> np.ndarray:
    """Ground-truth f0 in Hz of :func:`tone` at ``times_s`` (seconds)."""
    times_s = np.asarray(times_s, dtype=np.float64)
    if glide_to is None:
        base = np.full_like(times_s, f0)
    else:
        base = f0 * (glide_to / f0) ** np.clip(times_s / duration_s, 0.0, 1.0)
    cents = vibrato_cents * np.sin(2 * np.pi * vibrato_hz * times_s)
    return base * 2.0 ** (cents / 1200.0)


def tone_chunks(
    duration_s: float,
    sample_rate: int,
    f0: float,
    *,
    channels: int = 2,
    chunk_s: float = 10.0,
    amplitude: float = 0.3,
) -> Iterator[np.ndarray]:
    """A steady sine of ``f0`` Hz, as ``(channels, n)`` float32 chunks of ``chunk_s`` seconds.

    For long files (hours): memory stays at one chunk.
    """
    total = round(duration_s * sample_rate)
    step = round(chunk_s * sample_rate)
    for start in range(0, total, step):
        n = min(step, total - start)
        t = (start + np.arange(n)) / sample_rate
        mono = (amplitude * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
        yield np.broadcast_to(mono, (channels, n)).copy()


def drum_pattern(
    duration_s: float, sample_rate: int, bpm: float, *, seed: int = 0, amplitude: float = 0.8
) -> np.ndarray:
    """A steady rock pattern at ``bpm``: kick on beats 1 and 3, snare on 2 and 4, hi-hat on 8ths.

    Beat ``i`` starts at exactly ``i * 60 / bpm`` seconds (see :func:`beat_times`).

    Returns:
        float32 array of shape ``(round(duration_s * sample_rate),)``.
    """
    rng = np.random.default_rng(seed)
    n = round(duration_s * sample_rate)
    out = np.zeros(n, dtype=np.float64)
    beat_s = 60.0 / bpm

    def hit(start_s: float, sound: np.ndarray) -> None:
        start = round(start_s * sample_rate)
        end = min(n, start + len(sound))
        if start < n:
            out[start:end] += sound[: end - start]

    t = np.arange(round(0.25 * sample_rate)) / sample_rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
    snare = (0.6 * rng.standard_normal(len(t)) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(
        -t * 25
    )
    th = t[: round(0.05 * sample_rate)]
    hihat = 0.3 * rng.standard_normal(len(th)) * np.exp(-th * 80)
    for i, beat in enumerate(beat_times(duration_s, bpm)):
        hit(beat, kick if i % 2 == 0 else snare)
        hit(beat, hihat)
        hit(beat + beat_s / 2, hihat)
    peak = np.max(np.abs(out)) or 1.0
    return (amplitude * out / peak).astype(np.float32)


def beat_times(duration_s: float, bpm: float) -> np.ndarray:
    """Ground-truth beat times in seconds of :func:`drum_pattern`."""
    return np.arange(0.0, duration_s, 60.0 / bpm)


def add_noise(signal: np.ndarray, snr_db: float, *, seed: int = 0) -> np.ndarray:
    """``signal`` plus white Gaussian noise at ``snr_db`` dB signal-to-noise ratio (by power)."""
    rng = np.random.default_rng(seed)
    signal_power = float(np.mean(signal.astype(np.float64) ** 2))
    noise = rng.standard_normal(signal.shape) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    mixed = signal + noise
    peak = np.max(np.abs(mixed))
    # Keep the mix inside [-1, 1] so that encoders do not clip it.
    return np.asarray(mixed / peak * 0.9 if peak > 0.9 else mixed, dtype=np.float32)


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speech(
    text: str, sample_rate: int = 16000, *, voice: str = "en", words_per_minute: int = 160
) -> np.ndarray:
    """``text`` spoken by espeak-ng, resampled to ``sample_rate`` Hz, mono float32.

    Raises:
        RuntimeError: espeak-ng is not installed (``apt-get install espeak-ng``);
            check :func:`espeak_available` first.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            [exe, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        return read_mono(wav, sample_rate)


def read_mono(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode a file's first audio stream to mono float32 at ``sample_rate`` Hz (small files)."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = []
        for frame in container.decode(audio=0):
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


# --------------------------------------------------------------------------- writers


def _chunks(audio: AudioLike, channels: int) -> Iterator[np.ndarray]:
    """Audio as ``(channels, n)`` float32 chunks of at most 48,000 samples.

    Input with another channel count (mono, typically) has its first channel repeated to
    ``channels``.
    """
    items = [audio] if isinstance(audio, np.ndarray) else audio
    for chunk in items:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim == 1:
            chunk = chunk[None, :]
        if chunk.shape[0] != channels:
            chunk = np.broadcast_to(chunk[:1], (channels, chunk.shape[1]))
        # Small frames keep the encoder's input buffer small (48,000 samples: 1 s at 48 kHz).
        for start in range(0, chunk.shape[1], 48000):
            yield np.ascontiguousarray(chunk[:, start : start + 48000])


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def write_audio(
    path: str | Path,
    audio: AudioLike,
    sample_rate: int,
    *,
    channels: int = 1,
    bit_rate: int | None = None,
) -> Path:
    """Encode ``audio`` into the audio-only format named by ``path``'s extension.

    Extensions: see :data:`AUDIO_FORMATS` (.wav .flac .mp3 .m4a .aac .ogg .opus .mka .mkv).
    Formats with a fixed rate (Opus: 48 kHz) are resampled by the encoder.
    """
    path = Path(path)
    container_format, codec, forced_rate = AUDIO_FORMATS[path.suffix.lower()]
    return _write_audio_stream(
        path,
        container_format,
        codec,
        forced_rate or sample_rate,
        audio,
        sample_rate,
        channels,
        bit_rate,
    )


def write_video(
    path: str | Path,
    audio: AudioLike,
    sample_rate: int,
    *,
    channels: int = 2,
    fps: int = 10,
    size: tuple[int, int] = (96, 64),
    bit_rate: int | None = None,
) -> Path:
    """A small video with ``audio`` as its (only) audio stream, in the format of ``path``.

    Extensions: see :data:`VIDEO_FORMATS` (.mp4 .mov .mkv .webm .avi). The picture is a tiny
    moving gradient (``size`` width x height at ``fps``), cheap to encode; its length follows
    the audio. Default: AAC stereo at ``sample_rate`` (Opus 48 kHz for WebM).
    """
    path = Path(path)
    container_format, vcodec, acodec, forced_rate = VIDEO_FORMATS[path.suffix.lower()]
    with av.open(str(path), "w", format=container_format) as container:
        video = _add_video_stream(container, vcodec, fps, size)
        audio_stream = _add_audio_stream(
            container, acodec, forced_rate or sample_rate, channels, bit_rate
        )
        pts = 0
        frame_index = 0
        for chunk in _chunks(audio, channels):
            _encode_audio(container, audio_stream, chunk, sample_rate, pts)
            pts += chunk.shape[1]
            # Interleave: pictures up to the audio written so far.
            while frame_index / fps < pts / sample_rate:
                container.mux(video.encode(_picture(frame_index, size)))
                frame_index += 1
        container.mux(audio_stream.encode(None))
        container.mux(video.encode(None))
    return path


def write_no_audio(
    path: str | Path, duration_s: float = 2.0, *, fps: int = 10, size: tuple[int, int] = (96, 64)
) -> Path:
    """A video file (by extension, e.g. .mp4) without any audio stream."""
    path = Path(path)
    container_format, vcodec, _, _ = VIDEO_FORMATS[path.suffix.lower()]
    with av.open(str(path), "w", format=container_format) as container:
        video = _add_video_stream(container, vcodec, fps, size)
        for i in range(round(duration_s * fps)):
            container.mux(video.encode(_picture(i, size)))
        container.mux(video.encode(None))
    return path


def write_zero_length_audio(path: str | Path, sample_rate: int = 44100) -> Path:
    """An audio file whose audio stream has no samples (.wav or .flac: other muxers drop
    an empty stream or fail to write one)."""
    path = Path(path)
    container_format, codec, forced_rate = AUDIO_FORMATS[path.suffix.lower()]
    with av.open(str(path), "w", format=container_format) as container:
        stream = _add_audio_stream(container, codec, forced_rate or sample_rate, 1, None)
        container.start_encoding()  # write the header even though no packet follows
        container.mux(stream.encode(None))
    return path


def write_truncated(source: str | Path, path: str | Path, keep_fraction: float = 0.5) -> Path:
    """The first ``keep_fraction`` of ``source``'s bytes, as if a download stopped midway."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def write_garbage(path: str | Path, n_bytes: int = 64 * 1024, *, seed: int = 0) -> Path:
    """Random bytes under a media file name: no container can read it."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(n_bytes))
    return path


def write_float_wav(
    path: str | Path, audio: np.ndarray, sample_rate: int, *, channels: int = 1, bits: int = 32
) -> Path:
    """``audio`` as a WAV of IEEE float samples (``pcm_f32le`` or ``pcm_f64le``), written as is.

    Unlike integer PCM, float WAV can carry NaN, ±Inf and values beyond [-1, 1]: what a
    broken float pipeline upstream leaves behind (the pipeline's tests of bad samples).
    ``audio`` is ``(n,)`` (repeated to every channel) or ``(channels, n)``.
    """
    codec = {32: "pcm_f32le", 64: "pcm_f64le"}[bits]
    return _write_audio_stream(
        Path(path), "wav", codec, sample_rate, audio, sample_rate, channels, None
    )


# --------------------------------------------------------------------------- helpers


def _write_audio_stream(
    path: Path,
    container_format: str,
    codec: str,
    stream_rate: int,
    audio: AudioLike,
    sample_rate: int,
    channels: int,
    bit_rate: int | None,
) -> Path:
    """``audio`` (at ``sample_rate``) as the one audio stream of a new ``container_format`` file."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = _add_audio_stream(container, codec, stream_rate, channels, bit_rate)
        pts = 0
        for chunk in _chunks(audio, channels):
            _encode_audio(container, stream, chunk, sample_rate, pts)
            pts += chunk.shape[1]
        container.mux(stream.encode(None))
    return path


def _add_audio_stream(
    container: av.container.OutputContainer,
    codec: str,
    rate: int,
    channels: int,
    bit_rate: int | None,
) -> av.audio.stream.AudioStream:
    stream = container.add_stream(codec, rate=rate, layout=_layout(channels))
    if not isinstance(stream, av.audio.stream.AudioStream):
        raise ValueError(f"{codec!r} is not an audio codec")
    if bit_rate:
        stream.bit_rate = bit_rate
    return stream


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    chunk: np.ndarray,
    sample_rate: int,
    pts: int,
) -> None:
    """Encode one ``(channels, n)`` float32 chunk; PyAV converts format, rate and frame size."""
    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=_layout(chunk.shape[0]))
    frame.sample_rate = sample_rate
    frame.pts = pts
    frame.time_base = Fraction(1, sample_rate)
    container.mux(stream.encode(frame))


def _add_video_stream(
    container: av.container.OutputContainer, codec: str, fps: int, size: tuple[int, int]
) -> av.video.stream.VideoStream:
    """A ``size`` (width, height) yuv420p stream at ``fps`` frames/s; x264 at its cheapest setting."""
    stream = container.add_stream(codec, rate=fps)
    if not isinstance(stream, av.video.stream.VideoStream):
        raise ValueError(f"{codec!r} is not a video codec")
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    return stream


def _picture(index: int, size: tuple[int, int]) -> av.VideoFrame:
    width, height = size
    x = np.arange(width, dtype=np.uint16)[None, :]
    y = np.arange(height, dtype=np.uint16)[:, None]
    rgb = np.stack(
        [
            (x + index * 4) % 256 + 0 * y,
            (y * 2 + index) % 256 + 0 * x,
            np.full((height, width), (index * 8) % 256, dtype=np.uint16),
        ],
        axis=-1,
    )
    return av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(
        format="yuv420p"
    )
