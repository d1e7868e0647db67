"""Spectral shape descriptors with torch STFT, matching librosa.feature's definitions.

Audio at 22,050 Hz; STFT with ``n_fft=2048`` (92.9 ms), ``hop_length=512`` (23.2 ms), periodic
Hann window, centred frames with zero padding (librosa >= 0.10 defaults). Per frame:

- centroid (Hz): magnitude-weighted mean frequency (``librosa.feature.spectral_centroid``).
- bandwidth (Hz): magnitude-weighted standard deviation around the centroid (p = 2).
- rolloff (Hz): lowest bin centre frequency below which 85 % of the magnitude lies.
- flatness (0..1): geometric over arithmetic mean of the power spectrum, floored at 1e-10.
- zcr (0..1): fraction of sign changes per 2048-sample frame (edge-padded, like librosa).

Silent frames give 0 for centroid, bandwidth and rolloff (librosa's normalisation does too).
Each descriptor is summarised over frames as mean, std, p10, p50 and p90.

Long audio is processed in blocks of frames (``block_s`` seconds); only the five per-frame
values are kept, so memory grows by 20 bytes per frame (about 1.7 MB per minute).
"""

from __future__ import annotations

import torch

from audioproc.extractors._common import (
    block_frames_of,
    centred_frames_input,
    centred_stft,
    frame_blocks,
    summary_stats,
)
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 22_050
N_FFT = 2048
HOP_LENGTH = 512
ROLLOFF_PERCENT = 0.85
FLATNESS_AMIN = 1e-10
ZCR_THRESHOLD = 1e-10  # |x| at or below this counts as zero (librosa's zero_crossings default)


def spectral_frames(magnitude: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """Per-frame centroid, bandwidth, rolloff (Hz) and flatness of a magnitude spectrogram.

    Args:
        magnitude: ``|STFT|`` of audio at ``sample_rate`` Hz, shape ``(n_fft // 2 + 1, n_frames)``
            (bins evenly spaced from 0 Hz to ``sample_rate / 2``).

    Returns:
        name -> shape ``(n_frames,)``.
    """
    freqs = torch.linspace(
        0, sample_rate / 2, magnitude.shape[0], device=magnitude.device, dtype=magnitude.dtype
    )
    total = magnitude.sum(dim=0)
    weights = magnitude / torch.where(total > 0, total, torch.ones_like(total))
    centroid = freqs @ weights
    bandwidth = (((freqs[:, None] - centroid[None, :]) ** 2) * weights).sum(dim=0).sqrt()

    cumulative = magnitude.cumsum(dim=0)
    reached = cumulative >= ROLLOFF_PERCENT * cumulative[-1:]
    first_bin = reached.to(torch.int8).argmax(dim=0)
    rolloff = torch.where(total > 0, freqs[first_bin], torch.zeros_like(centroid))

    power = (magnitude**2).clamp(min=FLATNESS_AMIN)
    flatness = power.log().mean(dim=0).exp() / power.mean(dim=0)
    return {
        "centroid_hz": centroid,
        "bandwidth_hz": bandwidth,
        "rolloff_hz": rolloff,
        "flatness": flatness,
    }


def framed_zero_crossing_rate(
    padded: torch.Tensor, frame_length: int, hop_length: int
) -> torch.Tensor:
    """Zero-crossing rate of the frames ``padded.unfold(0, frame_length, hop_length)`` (no further padding).

    Args:
        padded: shape ``(n,)``, already edge-padded (see ``centred_frames_input``).

    Returns:
        shape ``(1 + (n - frame_length) // hop_length,)``.
    """
    padded = torch.where(padded.abs() <= ZCR_THRESHOLD, torch.zeros_like(padded), padded)
    negative = torch.signbit(padded)
    change = torch.zeros_like(padded, dtype=torch.float64)
    change[1:] = (negative[1:] != negative[:-1]).to(torch.float64)
    cumulative = torch.cat([change.new_zeros(1), change.cumsum(0)])
    starts = torch.arange(0, padded.numel() - frame_length + 1, hop_length, device=padded.device)
    # Crossings inside the frame: pairs (start, start+1) .. (start+L-2, start+L-1).
    counts = cumulative[starts + frame_length] - cumulative[starts + 1]
    return (counts / frame_length).to(torch.float32)


class SpectralExtractor(Extractor):
    """Spectral centroid, bandwidth, roll-off, flatness and zero-crossing rate statistics.

    Features: for each of ``centroid_hz``, ``bandwidth_hz``, ``rolloff_hz``, ``flatness`` and
    ``zcr``, the keys ``<name>_mean``, ``_std``, ``_p10``, ``_p50``, ``_p90`` (floats), over
    frames every 512 samples at 22,050 Hz; plus ``n_frames``.
    """

    name = "spectral"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        audio = audio.to(device=device, dtype=torch.float32)
        if audio.numel() == 0:
            raise ValueError("spectral features need at least one sample")
        n_frames = 1 + audio.numel() // HOP_LENGTH
        window = torch.hann_window(N_FFT, periodic=True, device=device)
        parts: dict[str, list[torch.Tensor]] = {}
        for first, stop in frame_blocks(
            n_frames, block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH)
        ):
            magnitude = centred_stft(audio, N_FFT, HOP_LENGTH, window, first, stop).abs()
            frames = spectral_frames(magnitude, self.sample_rate)
            edge_padded = centred_frames_input(audio, N_FFT, HOP_LENGTH, first, stop, mode="edge")
            frames["zcr"] = framed_zero_crossing_rate(edge_padded, N_FFT, HOP_LENGTH)
            for name, values in frames.items():
                parts.setdefault(name, []).append(values)
        features: dict[str, float | int] = {"n_frames": n_frames}
        for name, blocks in parts.items():
            features |= summary_stats(torch.cat(blocks), name)
        return ExtractorOutput(features)
