"""Tempo and beats: multi-band onset strength, tempogram, metrical octave decision, DP beat tracker.

Audio at 16 kHz, onset frames at 100 per second (hop 160). Steps (the references are in
docs/extractors.md, "tempo"):

1. Onset strength (:func:`onset_channels`): 40 Slaney mel bands (30 Hz to 8 kHz) of the STFT
   magnitude (``n_fft=1024``), compressed as ``log(1 + 1000 * |X| / max|X|)`` (the log-magnitude
   of Percival & Tzanetakis 2014, made loudness-independent), half-wave rectified first
   difference per band (spectral flux), summed into 4 channels of 10 adjacent bands
   (Klapuri et al. 2006's accent bands), each minus its 0.25 s moving average and half-wave
   rectified, then divided by its standard deviation (floored at a tenth of the largest), so
   that a quiet bass drum counts as much as loud cymbals. The frames whose window reaches
   before the start of the sound (leading silence, encoder padding) are zeroed for the tempo:
   that rise is the edge of the excerpt, no evidence of a period. The beat tracker keeps them.
2. Tempogram: the generalised autocorrelation (magnitude spectrum compressed to the power 0.5,
   Percival & Tzanetakis 2014) of each channel, summed, normalised for the overlap of short
   inputs, over 30 to 300 BPM at lags up to half the input; its 10 highest peaks are the
   candidate periods.
3. Octave decision by metrical structure: each candidate and its relatives (x2, x1/2, x3/2,
   x2/3 of the tempo) is scored by how far the envelope folded at that period rises above its
   mean at the best phase (in standard deviations, times ``count ** 0.1`` for the ``count`` frames
   in that phase), summed over the channels (a pulse train that hits the
   bass drum only on the beat scores less at twice the tempo; one that skips every other
   beat scores less at half the tempo), times a log-normal prior over tempo (120 BPM, one
   octave, as Ellis 2007 and librosa). The best is the tempo, the best other metrical
   relative the alternative (MIREX's T1/T2), with its relative strength ``s2 / (s1 + s2)``.
4. Beats (:mod:`audioproc.extractors._beat_dp`): a local period every 2 s from 8 s windows of the
   autocorrelation near the global period, then Ellis (2007)'s dynamic programme over the
   envelope with that local period, so the beats follow tempo changes.
5. BPM: a least-squares line through the beat times when the track is steady (at least 8
   beats, within 5 % of the tempogram's period): over N beats this averages the 10 ms frame
   quantisation down to a small fraction of a BPM. Otherwise the tempogram's period.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from audioproc.extractors._common import block_frames_of, centred_stft, frame_blocks
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 16_000
HOP_LENGTH = 160
FRAME_RATE = SAMPLE_RATE / HOP_LENGTH  # 100 onset frames per second
N_FFT = 1024
N_MELS, N_CHANNELS = 40, 4
MEL_FMIN, MEL_FMAX = 30.0, 8000.0
LOG_COMPRESSION = 1000.0  # log(1 + 1000 |X|), Percival & Tzanetakis 2014
LOCAL_MEAN_S = 0.25
ACF_EXPONENT = 0.5  # generalised autocorrelation, Percival & Tzanetakis 2014
MIN_BPM, MAX_BPM = 30.0, 300.0
PRIOR_BPM, PRIOR_OCTAVES = 120.0, 1.0
N_CANDIDATES = 10
# Pulse salience = z-score / count ** 0.4 = excess * count ** 0.1: between the mean excess
# (exponent 0.5, which ties a pulse with every other one of it and so leans to the slower
# level) and the z-score (exponent 0, which leans to the faster level). Chosen on synthetic
# drum patterns (see docs/extractors.md: the octave choice is close to a tie on them).
SALIENCE_COUNT_EXPONENT = 0.4
FOLD_BLOCK_FRAMES = 30_000  # 5 minutes of onset frames per folding step
METRICAL_RELATIVES = (1.0, 2.0, 0.5, 1.5, 2.0 / 3.0)  # tempo ratios tried for each candidate
MIN_DURATION_S = 2.0
STEADY_MIN_BEATS = 8
STEADY_TOLERANCE = 0.05


def onset_channels(audio: torch.Tensor, block_frames: int = 6000) -> tuple[torch.Tensor, int]:
    """Band-wise onset strength at 100 frames/s, shape ``(4, 1 + n_samples // 160)``, and the edge.

    The edge is the number of leading frames that read the excerpt's start (leading silence,
    then one window): the rise there is no evidence of periodicity, so the tempo estimate
    must zero them, but an excerpt is often cut on a beat, so the beat tracker keeps them.
    Each channel is scaled to unit standard deviation over the frames after the edge.

    The STFT is computed ``block_frames`` frames at a time; only the 40 mel bands of each
    frame are kept (160 bytes per frame), because the compression is relative to the
    largest band magnitude of the whole input.

    Args:
        audio: shape ``(n_samples,)`` at 16 kHz.
    """
    window = torch.hann_window(N_FFT, device=audio.device)
    fbank = AF.melscale_fbanks(N_FFT // 2 + 1, MEL_FMIN, MEL_FMAX, N_MELS, SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    fbank = fbank.to(audio.device).T
    mel_blocks = []
    for first, stop in frame_blocks(1 + audio.numel() // HOP_LENGTH, block_frames):
        spec = centred_stft(audio, N_FFT, HOP_LENGTH, window, first, stop)
        mel_blocks.append(fbank @ spec.abs())
    bands = torch.cat(mel_blocks, dim=1)
    bands = bands.mul_(LOG_COMPRESSION / float(bands.max()) if float(bands.max()) > 0 else 0.0).log1p_()
    flux = torch.relu(bands[:, 1:] - bands[:, :-1])
    flux = torch.nn.functional.pad(flux, (1, 0))
    edge = leading_silence_frames(bands) + N_FFT // HOP_LENGTH
    channels = flux.reshape(N_CHANNELS, N_MELS // N_CHANNELS, -1).sum(dim=1)
    width = 2 * int(LOCAL_MEAN_S * FRAME_RATE / 2) + 1
    local_mean = torch.nn.functional.avg_pool1d(channels[:, None], width, stride=1, padding=width // 2,
                                                count_include_pad=False)[:, 0]
    channels = torch.relu(channels - local_mean)
    inner = channels[:, edge:]
    spread = inner.std(dim=1, keepdim=True) if inner.shape[1] > 1 else torch.ones_like(channels[:, :1])
    return channels / spread.clamp(min=max(0.1 * float(spread.max()), 1e-12)), edge


def leading_silence_frames(bands: torch.Tensor) -> int:
    """Frames before the first whose loudest band is within 60 dB of the input's loudest (encoder padding, silence).

    Args:
        bands: compressed band magnitudes ``log(1 + 1000 |X| / max|X|)``, shape ``(bands, frames)``.
    """
    audible = bands.amax(dim=0) > math.log1p(LOG_COMPRESSION * 1e-3)
    first = torch.nonzero(audible)
    return int(first[0]) if first.numel() else bands.shape[1]


def tempogram(channels: torch.Tensor) -> torch.Tensor:
    """Generalised autocorrelation summed over channels, shape ``(n_frames,)``, 1 at lag 0.

    Each lag is scaled by ``n / (n - lag)`` so that the few overlapping frames of a long lag in
    a short input are not read as a weak periodicity.
    """
    x = channels - channels.mean(dim=1, keepdim=True)
    n = x.shape[1]
    spectrum = torch.fft.rfft(x, 2 * n)
    acf = torch.fft.irfft(spectrum.abs().pow(2 * ACF_EXPONENT), 2 * n)[:, :n].sum(dim=0)
    lags = torch.arange(n, device=x.device, dtype=x.dtype)
    acf = acf * n / (n - lags)
    normalised: torch.Tensor = acf / acf[0].clamp(min=1e-12)
    return normalised


def log_normal_prior(bpm: torch.Tensor) -> torch.Tensor:
    """Weight of each tempo: a Gaussian in log2(BPM) centred on 120 BPM, one octave wide."""
    return torch.exp(-0.5 * (torch.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)


def candidate_periods(acf: torch.Tensor, n_frames: int) -> list[float]:
    """The ``N_CANDIDATES`` highest autocorrelation peaks (fractional lags, parabolic) in the tempo range."""
    max_lag = min(int(60 * FRAME_RATE / MIN_BPM), n_frames // 2)
    min_lag = int(math.ceil(60 * FRAME_RATE / MAX_BPM))
    if max_lag < min_lag + 2:
        return []
    a = acf[: max_lag + 2]
    inner = a[min_lag : max_lag + 1]
    left, right = a[min_lag - 1 : max_lag], a[min_lag + 1 : max_lag + 2]
    is_peak = (inner > left) & (inner >= right) & (inner > 0)
    lags = torch.nonzero(is_peak).flatten() + min_lag
    if lags.numel() == 0:
        return []
    order = torch.argsort(acf[lags], descending=True)[:N_CANDIDATES]
    out = []
    for lag in lags[order].tolist():
        l_, c, r = (float(acf[lag + d]) for d in (-1, 0, 1))
        curvature = l_ - 2 * c + r
        offset = 0.5 * (l_ - r) / curvature if curvature < 0 else 0.0
        out.append(lag + max(-0.5, min(0.5, offset)))
    return out


def pulse_salience(channels: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """For each period (frames), how far the envelope folded at that period rises at its best phase.

    Frame ``t`` falls in phase bin ``floor(t mod period)``; each bin's mean (with a 3-frame
    circular smoothing, +-10 ms) minus the channel mean, in channel standard deviations, times
    ``count ** 0.1`` (``count`` frames in the bin: a z-score divided by ``count ** 0.4``), at the
    best bin, summed over channels. The count term keeps a long period, whose bins average few
    frames, from winning on chance alignments.

    Args:
        channels: shape ``(C, n)``.
        periods: shape ``(P,)``, fractional frames, ``1 < period <= n / 2``.

    Returns:
        shape ``(P,)``.
    """
    c, n = channels.shape
    n_bins = int(math.ceil(float(periods.max()))) + 1
    sums = torch.zeros(periods.numel(), c, n_bins, device=channels.device, dtype=channels.dtype)
    counts = torch.zeros(periods.numel(), n_bins, device=channels.device, dtype=channels.dtype)
    for first in range(0, n, FOLD_BLOCK_FRAMES):  # blocks keep the (periods x frames) bin index small
        block = channels[:, first : first + FOLD_BLOCK_FRAMES]
        t = torch.arange(first, first + block.shape[1], device=channels.device, dtype=torch.float64)
        bins = torch.floor(torch.remainder(t[None, :], periods[:, None].double())).long()  # (P, frames)
        sums.scatter_add_(2, bins[:, None, :].expand(-1, c, -1), block[None].expand(periods.numel(), -1, -1))
        counts.scatter_add_(1, bins, torch.ones_like(bins, dtype=channels.dtype))
    # Circular 3-bin smoothing within each period's own number of bins.
    n_own = torch.ceil(periods).long()
    index = torch.arange(n_bins, device=channels.device)
    prev = torch.remainder(index[None, :] - 1, n_own[:, None])
    nxt = torch.remainder(index[None, :] + 1, n_own[:, None])
    smooth_sums = (sums + sums.gather(2, prev[:, None, :].expand(-1, c, -1))
                   + sums.gather(2, nxt[:, None, :].expand(-1, c, -1)))
    smooth_counts = counts + counts.gather(1, prev) + counts.gather(1, nxt)
    valid = (index[None, :] < n_own[:, None]) & (smooth_counts > 0)
    mean = channels.mean(dim=1)[None, :, None]
    std = channels.std(dim=1)[None, :, None].clamp(min=1e-12)
    count = smooth_counts.clamp(min=1)[:, None, :]
    z = (smooth_sums / count - mean) / std * count.sqrt()
    z = z / count.pow(SALIENCE_COUNT_EXPONENT)
    z = torch.where(valid[:, None, :], z, torch.full_like(z, -math.inf))
    return z.amax(dim=2).sum(dim=1)


@dataclass(frozen=True)
class TempoEstimate:
    """The tempo found in the onset channels.

    ``period`` in frames; ``bpm`` and ``alternative_bpm`` (None: no metrical relative scored) in
    beats per minute; ``alternative_strength`` ``s2 / (s1 + s2)`` (0..0.5); ``confidence``
    ``1 - r / s1`` (0..1), where ``r`` is the best score of a period that is no metrical
    relative of the chosen one (a rival tempo).
    """

    period: float
    bpm: float
    alternative_bpm: float | None
    alternative_strength: float
    confidence: float


def estimate_tempo(channels: torch.Tensor) -> TempoEstimate | None:
    """Tempo, alternative tempo and their strengths from the onset channels, or None without periodicity."""
    n = channels.shape[1]
    acf = tempogram(channels)
    candidates = candidate_periods(acf, n)
    if not candidates:
        return None
    periods = torch.tensor([p / r for p in candidates for r in METRICAL_RELATIVES], dtype=channels.dtype,
                           device=channels.device)
    bpm = 60.0 * FRAME_RATE / periods
    allowed = (bpm >= MIN_BPM) & (bpm <= MAX_BPM) & (periods <= n / 2) & (periods > 2)
    periods, bpm = periods[allowed], bpm[allowed]
    if periods.numel() == 0:
        return None
    salience = pulse_salience(channels, periods)
    score = salience.clamp(min=0) * log_normal_prior(bpm)
    best = int(score.argmax())
    if float(score[best]) <= 0:
        return None
    ratio = periods / periods[best]
    related = torch.zeros_like(ratio, dtype=torch.bool)
    for r in (2.0, 0.5, 1.5, 2.0 / 3.0, 3.0, 1.0 / 3.0):
        related |= (ratio / r - 1).abs() <= 0.04
    alt_score = torch.where(related, score, torch.zeros_like(score))
    alt = int(alt_score.argmax())
    s1, s2 = float(score[best]), float(alt_score[alt])
    same_level = (ratio - 1).abs() <= 0.04
    rival = float(torch.where(related | same_level, torch.zeros_like(score), score).max())
    return TempoEstimate(
        period=float(periods[best]),
        bpm=float(bpm[best]),
        alternative_bpm=float(bpm[alt]) if s2 > 0 else None,
        alternative_strength=s2 / (s1 + s2) if s2 > 0 else 0.0,
        confidence=1.0 - rival / s1,
    )


def fitted_period(beats: np.ndarray) -> float | None:
    """Slope (frames per beat) of a least-squares line through the beat positions, or None if < 8 beats."""
    if beats.size < STEADY_MIN_BEATS:
        return None
    index = np.arange(beats.size, dtype=np.float64)
    slope, _ = np.polyfit(index, beats, 1)
    return float(slope)


class TempoExtractor(Extractor):
    """Global tempo, an alternative tempo, beat times and tempo stability.

    Features:
        ``bpm``: the tempo (None for inputs under 2 s or without periodicity).
        ``bpm_autocorrelation``: the tempogram's estimate before the line fit of step 5.
        ``bpm_alternative``: the best other metrical level (x2, x1/2, x3/2, x2/3, x3, x1/3), or None.
        ``bpm_alternative_strength``: its relative strength ``s2 / (s1 + s2)``, 0..0.5 (MIREX's ST2).
        ``confidence``: 0..1, ``1 - r / s1``: how far the chosen tempo's score ``s1`` stands above
        the best score ``r`` of a tempo that is no metrical relative of it (0: an unrelated rival
        explains the onsets as well).
        ``beat_count``: number of beats.
        ``tempo_stability``: 1 minus the coefficient of variation of the intervals between
        consecutive beats (1 is metronomic; 0 when undefined).

    Artifacts:
        ``beats``: float64 ``(beat_count,)``, beat times in seconds.
    """

    name = "tempo"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        from audioproc.extractors._beat_dp import track_beats

        audio = audio.to(device=device, dtype=torch.float32)
        empty = {"bpm": None, "bpm_autocorrelation": None, "bpm_alternative": None, "bpm_alternative_strength": 0.0,
                 "confidence": 0.0, "beat_count": 0, "tempo_stability": 0.0}
        if audio.numel() < MIN_DURATION_S * SAMPLE_RATE:
            return ExtractorOutput(empty, {"beats": np.zeros(0)}, ["input shorter than 2 s: no tempo"])
        channels, edge = onset_channels(audio, block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH))
        inner = channels.clone()
        inner[:, :edge] = 0.0
        if not bool(torch.any(inner > 0)):
            return ExtractorOutput(empty, {"beats": np.zeros(0)})
        estimate = estimate_tempo(inner)
        if estimate is None:
            return ExtractorOutput(empty, {"beats": np.zeros(0)})
        envelope = channels.sum(dim=0).cpu().numpy().astype(np.float64)
        beats = track_beats(envelope, estimate.period)
        period = estimate.period
        slope = fitted_period(beats)
        if slope is not None and abs(slope / period - 1) <= STEADY_TOLERANCE:
            period = slope
        intervals = np.diff(beats)
        stability = 0.0
        if intervals.size >= 2:
            stability = float(max(0.0, 1.0 - intervals.std() / intervals.mean()))
        features = {
            "bpm": 60.0 * FRAME_RATE / period,
            "bpm_autocorrelation": estimate.bpm,
            "bpm_alternative": estimate.alternative_bpm,
            "bpm_alternative_strength": estimate.alternative_strength,
            "confidence": estimate.confidence,
            "beat_count": int(beats.size),
            "tempo_stability": stability,
        }
        return ExtractorOutput(features, {"beats": beats / FRAME_RATE})
