"""Tempo and beats: onset envelope and autocorrelation in torch, then beat tracking and a line fit.

Audio at 16 kHz. Steps:

1. Onset strength at 100 frames/s (hop 160): a 40-band Slaney mel power spectrogram
   (``n_fft=1024``, 64 ms), in dB floored 80 dB below its maximum, half-wave rectified
   first difference summed over bands (spectral flux, as ``librosa.onset.onset_strength``),
   minus its 1 s moving average.
2. Coarse period: the envelope's autocorrelation (FFT) between 30 and 300 BPM, weighted
   by a log-normal prior centred on 120 BPM (one octave standard deviation), each lag
   reinforced by half the autocorrelation at twice the lag; parabolic interpolation of the
   peak gives a period in fractional frames.
3. Beats: the phase that maximises a comb over the first 12 s, then beat by beat: predict
   the next beat one period on, snap it to the strongest envelope peak within +-15 % of a
   period (sub-frame, parabolic), and let the period follow the snapped intervals slowly.
4. Tempo: a least-squares line through the snapped beat times against beat index (after
   dropping beats more than 10 % of a period off the line): BPM = 60 / slope. Over N
   beats this averages the 10 ms frame quantisation down to a small fraction of a BPM
   where an autocorrelation peak alone is quantised to about 2 %.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio.functional as AF

from audioproc.extractors._common import block_frames_of, centred_stft, frame_blocks
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
FRAME_RATE = SAMPLE_RATE / HOP_LENGTH  # 100 onset frames per second
N_FFT = 1024
N_MELS = 40
MIN_BPM, MAX_BPM = 30.0, 300.0
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0
PHASE_SEARCH_S = 12.0
SNAP_TOLERANCE = 0.15  # of a period
PERIOD_ADAPTATION = 0.1  # weight of each new interval in the running period
OUTLIER_TOLERANCE = 0.1  # of a period, for the line fit


def onset_envelope(audio: torch.Tensor, block_frames: int = 6000) -> torch.Tensor:
    """Spectral-flux onset strength at 100 frames/s, shape ``(1 + n_samples // 160,)``.

    The STFT is computed ``block_frames`` frames at a time; only the 40 mel bands of each
    frame are kept (160 bytes per frame), because the 80 dB floor is relative to the
    loudest cell of the whole input.

    Args:
        audio: shape ``(n_samples,)`` at 16 kHz.
    """
    window = torch.hann_window(N_FFT, device=audio.device)
    fbank = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    fbank = fbank.to(audio.device).T
    mel_blocks = []
    for first, stop in frame_blocks(1 + audio.numel() // HOP_LENGTH, block_frames):
        spec = centred_stft(audio, N_FFT, HOP_LENGTH, window, first, stop)
        mel_blocks.append(fbank @ spec.abs().square())
    db = torch.cat(mel_blocks, dim=1).clamp_(min=1e-10).log10_().mul_(10.0)  # in place: one copy of the bands
    db = db.clamp_(min=float(db.max()) - 80.0)
    flux = torch.relu(db[:, 1:] - db[:, :-1]).sum(dim=0)
    flux = torch.nn.functional.pad(flux, (1, 0))
    local_mean = torch.nn.functional.avg_pool1d(flux[None, None], 101, stride=1, padding=50, count_include_pad=False)[0, 0]
    return torch.relu(flux - local_mean)


def coarse_period(envelope: torch.Tensor) -> tuple[float, float]:
    """Beat period in (fractional) frames from the prior-weighted autocorrelation, and its strength.

    Returns ``(period_frames, confidence)``; confidence is the autocorrelation at the period
    over that at lag 0 (0..1) of the mean-removed envelope.
    """
    x = envelope - envelope.mean()
    n = x.numel()
    spectrum = torch.fft.rfft(x, 2 * n)
    acf = torch.fft.irfft(spectrum.abs().square(), 2 * n)[:n]
    acf = acf / acf[0].clamp(min=1e-12)
    lags = torch.arange(n, device=x.device, dtype=x.dtype)
    bpm = 60.0 * FRAME_RATE / lags.clamp(min=1)
    prior = torch.exp(-0.5 * (torch.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    doubled = torch.zeros_like(acf)
    doubled[: (n + 1) // 2] = acf[::2][: (n + 1) // 2]
    score = (acf + 0.5 * doubled).clamp(min=0) * prior
    allowed = (bpm >= MIN_BPM) & (bpm <= MAX_BPM) & (lags >= 1)
    score = torch.where(allowed, score, torch.zeros_like(score))
    lag = int(score.argmax())
    if lag <= 0 or lag >= n - 1:
        return 0.0, 0.0
    left, centre, right = (float(score[lag + d]) for d in (-1, 0, 1))
    curvature = left - 2 * centre + right
    offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return lag + max(-0.5, min(0.5, offset)), max(0.0, min(1.0, float(acf[lag])))


def _interp(envelope: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.interp(positions, np.arange(envelope.size), envelope, left=0.0, right=0.0)


def _snap(envelope: np.ndarray, predicted: float, half_window: float, threshold: float) -> float | None:
    """The sub-frame position of the strongest envelope peak near ``predicted``, or None."""
    lo = max(1, int(math.ceil(predicted - half_window)))
    hi = min(envelope.size - 2, int(math.floor(predicted + half_window)))
    if hi < lo:
        return None
    i = lo + int(np.argmax(envelope[lo : hi + 1]))
    left, centre, right = envelope[i - 1], envelope[i], envelope[i + 1]
    if centre < threshold or centre < left or centre < right:
        return None
    curvature = left - 2 * centre + right
    return i + (0.5 * (left - right) / curvature if curvature < 0 else 0.0)


def track_beats(envelope: np.ndarray, period: float) -> tuple[np.ndarray, np.ndarray]:
    """Beat positions in frames and whether each was snapped to an onset.

    Beats between the first and last snapped one are returned; unsnapped beats inside that
    span (a gap in the drums) sit where the running period predicts them.
    """
    threshold = 0.1 * float(np.percentile(envelope[envelope > 0], 95)) if np.any(envelope > 0) else math.inf
    search = int(min(envelope.size, PHASE_SEARCH_S * FRAME_RATE))
    phases = np.arange(0.0, period, 0.25)
    comb = np.arange(0.0, search, period)
    scores = _interp(envelope, phases[:, None] + comb[None, :]).sum(axis=1)
    position = float(phases[int(np.argmax(scores))])
    snapped_first = _snap(envelope, position, SNAP_TOLERANCE * period, threshold)
    beats: list[float] = []
    snapped: list[bool] = []
    if snapped_first is not None:
        position = snapped_first
    beats.append(position)
    snapped.append(snapped_first is not None)
    running = period
    while True:
        predicted = beats[-1] + running
        if predicted >= envelope.size - 1:
            break
        hit = _snap(envelope, predicted, SNAP_TOLERANCE * running, threshold)
        if hit is not None:
            interval = hit - beats[-1]
            running = (1 - PERIOD_ADAPTATION) * running + PERIOD_ADAPTATION * interval
            running = min(max(running, 0.9 * period), 1.1 * period)
        beats.append(hit if hit is not None else predicted)
        snapped.append(hit is not None)
    beat_array, snapped_array = np.asarray(beats), np.asarray(snapped)
    hits = np.nonzero(snapped_array)[0]
    if hits.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    span = slice(hits[0], hits[-1] + 1)
    return beat_array[span], snapped_array[span]


def fitted_period(beats: np.ndarray, snapped: np.ndarray) -> float | None:
    """Slope (frames per beat) of a least-squares line through the snapped beats, outliers dropped."""
    index = np.arange(beats.size, dtype=np.float64)
    keep = snapped.copy()
    for _ in range(2):
        if keep.sum() < 4:
            return None
        slope, intercept = np.polyfit(index[keep], beats[keep], 1)
        residual = np.abs(beats - (slope * index + intercept))
        keep = snapped & (residual <= OUTLIER_TOLERANCE * slope)
    return float(slope) if keep.sum() >= 4 else None


class TempoExtractor(Extractor):
    """Global tempo, beat times and tempo stability.

    Features:
        ``bpm``: 60 / fitted beat period (None when fewer than 4 beats were found).
        ``bpm_autocorrelation``: the coarse estimate from the onset autocorrelation.
        ``confidence``: onset autocorrelation at the beat period relative to lag 0 (0..1).
        ``beat_count``: number of beats.
        ``tempo_stability``: 1 minus the coefficient of variation of the intervals between
        consecutive snapped beats (1 is metronomic; 0 when undefined).

    Artifacts:
        ``beats``: float64 ``(beat_count,)``, beat times in seconds.
    """

    name = "tempo"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        audio = audio.to(device=device, dtype=torch.float32)
        empty = {"bpm": None, "bpm_autocorrelation": None, "confidence": 0.0, "beat_count": 0, "tempo_stability": 0.0}
        if audio.numel() < 2 * SAMPLE_RATE:
            return ExtractorOutput(empty, {"beats": np.zeros(0)}, ["input shorter than 2 s: no tempo"])
        envelope_t = onset_envelope(audio, block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH))
        period, confidence = coarse_period(envelope_t)
        envelope = envelope_t.cpu().numpy().astype(np.float64)
        if period <= 0 or not np.any(envelope > 0):
            return ExtractorOutput(empty, {"beats": np.zeros(0)})
        beats, snapped = track_beats(envelope, period)
        slope = fitted_period(beats, snapped)
        intervals = np.diff(beats)[snapped[1:] & snapped[:-1]]
        stability = 0.0
        if intervals.size >= 2:
            stability = float(max(0.0, 1.0 - intervals.std() / intervals.mean()))
        features = {
            "bpm": 60.0 * FRAME_RATE / slope if slope else None,
            "bpm_autocorrelation": 60.0 * FRAME_RATE / period,
            "confidence": confidence,
            "beat_count": int(beats.size),
            "tempo_stability": stability,
        }
        return ExtractorOutput(features, {"beats": beats / FRAME_RATE})
