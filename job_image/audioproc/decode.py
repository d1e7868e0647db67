"""Decode an input's default audio stream once, to mono float32 at every rate the extractors need.

One pass over the file: PyAV (FFmpeg) decodes the default audio stream; decoded frames are
gathered into blocks of about one second, downmixed to mono by averaging the channels
(as ``librosa.to_mono`` does), and each block goes through one FFmpeg resampler per
target rate (none when the target is the native rate). Blocks instead of codec frames
(~1024 samples) keep the per-call overhead small: decode plus two resamplers runs at
roughly 0.7x the speed of decode alone (see bench/pipeline.py).

Samples must be finite: a NaN or ±Inf sample (a corrupt float file) refuses the input with
``NonFiniteAudioError`` (an input error) instead of turning features into nulls.

Memory: the outputs, ``4 * duration_s * sum(rates)`` bytes, plus one block. Output buffers
are sized from the container's declared duration when it has one, so they are not copied
while they grow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from audioproc.errors import (
    AudioTooLongError,
    CorruptMediaError,
    EmptyAudioError,
    NoAudioStreamError,
    NonFiniteAudioError,
)
from audioproc.models.manifest import SourceAudioInfo

_BLOCK_SECONDS = 1.0
# Decoded audio shorter than the declared duration by more than this is called truncated.
_TRUNCATION_TOLERANCE_S = 0.5
_TRUNCATION_TOLERANCE_FRACTION = 0.02
# A few undecodable packets are tolerated (and noted); more means a corrupt file.
_MAX_BAD_PACKETS = 8


@dataclass
class DecodedAudio:
    """Mono float32 audio of one input at several rates.

    Attributes:
        signals: sample rate in Hz -> array of shape ``(round(duration_s * rate),)``
            (give or take a few samples of resampler delay), float32, nominally in [-1, 1].
        duration_s: duration in seconds, from the native-rate sample count.
        source: the audio stream as it is in the file.
        notes: things worth recording in the manifest (skipped bad packets).
        decode_s: wall time of the decode in seconds, when measured (for the metrics).
    """

    signals: dict[int, np.ndarray]
    duration_s: float
    source: SourceAudioInfo
    notes: list[str] = field(default_factory=list)
    decode_s: float | None = None


class _GrowableBuffer:
    """A float32 array appended to in blocks; doubles its capacity when full."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(max(capacity, 1024), dtype=np.float32)
        self._size = 0

    def append(self, block: np.ndarray) -> None:
        end = self._size + block.size
        if end > self._data.size:
            grown = np.empty(max(end, 2 * self._data.size), dtype=np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : end] = block
        self._size = end

    def array(self) -> np.ndarray:
        return self._data[: self._size]


def probe_duration_s(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """The duration the file declares for ``stream`` (or the container), in seconds, if any."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_audio(
    path: str | Path, rates: Iterable[int], *, max_duration_s: float, uri: str | None = None
) -> DecodedAudio:
    """Decode the default audio stream of ``path`` to mono float32 at each rate in ``rates`` (Hz).

    Args:
        path: a local media file (any container and codec FFmpeg reads).
        rates: target sample rates in Hz; each output is resampled once from the native rate.
        max_duration_s: longest audio accepted, in seconds; checked against the declared
            duration before decoding and against the decoded length while decoding.
        uri: the input's URI, for error messages (defaults to ``path``).

    Raises:
        NoAudioStreamError, CorruptMediaError, EmptyAudioError, AudioTooLongError,
        NonFiniteAudioError (a NaN or ±Inf sample, in the file or from the downmix of huge values).
    """
    uri = uri or str(path)
    rates = sorted(set(rates))
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(uri, f"FFmpeg cannot read it: {exc.strerror or exc}") from exc
    with container:
        if not container.streams.audio:
            raise NoAudioStreamError(uri)
        stream = _default_audio_stream(container)
        declared_s = probe_duration_s(container, stream)
        if declared_s is not None and declared_s > max_duration_s:
            raise AudioTooLongError(uri, declared_s, max_duration_s)
        native_rate = stream.codec_context.sample_rate or stream.rate
        if not native_rate:
            raise CorruptMediaError(uri, "its audio stream declares no sample rate")
        source = SourceAudioInfo(
            codec=stream.codec_context.name,
            sample_rate=native_rate,
            channels=max(stream.codec_context.channels, 1),
            container=container.format.name,
        )
        expected_s = declared_s or 0.0
        buffers = {rate: _GrowableBuffer(int((expected_s + 1.0) * rate)) for rate in rates}
        resamplers = {
            rate: av.AudioResampler(format="flt", layout="mono", rate=rate)
            for rate in rates
            if rate != native_rate
        }
        max_samples = int(max_duration_s * native_rate) + 1
        native_samples = 0
        notes: list[str] = []
        for block, bad_packets in _mono_blocks(container, stream, uri, native_rate):
            _check_finite(block, native_samples, native_rate, uri)
            native_samples += block.size
            if native_samples > max_samples:
                raise AudioTooLongError(uri, native_samples / native_rate, max_duration_s)
            _resample_into(block, native_rate, resamplers, buffers)
            if bad_packets:
                notes = [f"skipped {bad_packets} undecodable audio packet(s)"]
        _resample_into(None, native_rate, resamplers, buffers)

    duration_s = native_samples / native_rate
    if native_samples == 0:
        raise EmptyAudioError(uri)
    if declared_s is not None and declared_s - duration_s > max(
        _TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_FRACTION * declared_s
    ):
        raise CorruptMediaError(
            uri,
            f"the file declares {declared_s:.1f} s of audio but only {duration_s:.1f} s could be decoded",
        )
    return DecodedAudio(
        signals={rate: buffers[rate].array() for rate in rates},
        duration_s=duration_s,
        source=source,
        notes=notes,
    )


def _check_finite(block: np.ndarray, offset: int, native_rate: int, uri: str) -> None:
    """Refuse a block with NaN or ±Inf samples; ``offset`` is the block's first sample index.

    Refused rather than replaced: every feature computed from them would be undefined or
    silently wrong (sums, spectra and levels of the whole item turn NaN).
    """
    finite = np.isfinite(block)
    if not finite.all():
        raise NonFiniteAudioError(uri, (offset + int(np.argmin(finite))) / native_rate)


def _default_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The stream FFmpeg would pick (``av_find_best_stream``): the default-flagged one, else the first."""
    for stream in container.streams.audio:
        if stream.disposition & av.stream.Disposition.default:
            return stream
    return container.streams.audio[0]


def _mono_blocks(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    uri: str,
    native_rate: int,
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (mono float32 block of about one second, bad packets so far).

    Frames are gathered raw and converted per block: numpy work on ~1 s arrays instead
    of ~1024-sample frames is what keeps this close to the speed of decoding alone.
    """
    block_samples = int(_BLOCK_SECONDS * native_rate)
    pending: list[np.ndarray] = []
    pending_layout: tuple[str, int] = (
        "",
        0,
    )  # (format, channels) of `pending`; set with its first frame
    pending_samples = 0
    bad_packets = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as exc:
                bad_packets += 1
                if bad_packets > _MAX_BAD_PACKETS:
                    raise CorruptMediaError(
                        uri, f"more than {_MAX_BAD_PACKETS} undecodable packets"
                    ) from exc
                continue
            for frame in frames:
                layout = (frame.format.name, len(frame.layout.channels))
                if pending and (layout != pending_layout or pending_samples >= block_samples):
                    yield _to_mono(pending, *pending_layout), bad_packets
                    pending, pending_samples = [], 0
                pending.append(frame.to_ndarray())
                pending_layout = layout
                pending_samples += frame.samples
    except (av.error.InvalidDataError, av.error.EOFError) as exc:
        raise CorruptMediaError(uri, f"demuxing failed: {exc.strerror or exc}") from exc
    if pending:
        yield _to_mono(pending, *pending_layout), bad_packets


# Integer sample formats -> the scale that maps them to [-1, 1).
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _to_mono(frames: list[np.ndarray], sample_format: str, channels: int) -> np.ndarray:
    """Decoded frames (``frame.to_ndarray()`` of one format) as one mono float32 block.

    The downmix is the mean of the channels; integer PCM is scaled to [-1, 1).
    """
    planar = sample_format.endswith("p")
    data = np.concatenate(frames, axis=1)  # planar: (channels, n); packed: (1, n * channels)
    data = data if planar else data.reshape(-1, channels).T
    kind = sample_format.rstrip("p")
    if kind in _INT_SCALE:
        offset = 128.0 if kind == "u8" else 0.0
        data = (data.astype(np.float32) - offset) / np.float32(_INT_SCALE[kind])
    if channels == 1:
        return np.ascontiguousarray(data[0], dtype=np.float32)
    with np.errstate(
        over="ignore", invalid="ignore"
    ):  # an overflow gives inf, refused by _check_finite
        return np.asarray(data.mean(axis=0, dtype=np.float32))


def _resample_into(
    block: np.ndarray | None,
    native_rate: int,
    resamplers: dict[int, av.AudioResampler],
    buffers: dict[int, _GrowableBuffer],
) -> None:
    """Append ``block`` (native rate, mono) to every rate's buffer; ``None`` flushes the resamplers."""
    if block is not None and native_rate in buffers:
        buffers[native_rate].append(block)
    frame = None
    if block is not None:
        frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
        frame.sample_rate = native_rate
    for rate, resampler in resamplers.items():
        for out in resampler.resample(frame):
            buffers[rate].append(out.to_ndarray().reshape(-1))
