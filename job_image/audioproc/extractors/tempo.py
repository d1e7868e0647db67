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
   octave, as Ellis 2007 and librosa).
4. Ratio decision by subdivision (:func:`subdivision_fit`): the best of step 3 and its x4/3,
   x3/4, x3/2 and x2/3 relatives are weighed by ``score * exp(2 * fit)``, where ``fit`` is the
   share of the onset mass that the period's sixteenth grid (or, 0.2 less, its triplet grid)
   explains beyond chance. A figure of dotted eighths pulses at 4/3 of the tempo more strongly
   than the beat does, but the sixteenths between its pulses sit on the beat's grid only. The
   winner is the tempo, the best-scoring other metrical relative the alternative (MIREX's
   T1/T2), with its relative strength ``s2 / (s1 + s2)`` of their step-3 scores.
5. Beats (:mod:`audioproc.extractors._beat_dp`): a local period every 2 s from 8 s windows of the
   autocorrelation near the global period, then Ellis (2007)'s dynamic programme over the
   envelope with that local period, so the beats follow tempo changes; reported
   ``ENVELOPE_LEAD_S`` (12 ms) after their envelope peak, where the sound starts.
6. BPM: a least-squares line through the beat times when the track is steady (at least 8
   beats, within 5 % of the tempogram's period): over N beats this averages the 10 ms frame
   quantisation down to a small fraction of a BPM. Otherwise the tempogram's period. Every
   input from 0.5 s (two beat periods at 240 BPM) gets one; ``confidence`` is scaled by the
   share of the tempo prior the input is long enough to test (:func:`prior_mass_in_reach`).
7. Bar (:mod:`audioproc.extractors._downbeats`): beats per bar (3 or 4) and the downbeats,
   where the bass onsets (:func:`onset_channels`) accent one beat of every 3 or 4 clearly.
"""

from __future__ import annotations

import functools
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
BASS_BANDS = 3  # mel bands 1 to 3, 30 to 310 Hz: the downbeat test's accents
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
# Relatives reported as the alternative tempo (and not counted as rivals by the confidence).
RELATED_RATIOS = (2.0, 0.5, 1.5, 2.0 / 3.0, 3.0, 1.0 / 3.0, 4.0 / 3.0, 3.0 / 4.0)
# The ratio decision: the winner and these relatives of it, which share its sixteenth grid
# only partly, are rescored by how well their own sixteenth grid explains the onsets.
# Octaves (x2, x1/2) are left to the pulse score and prior: a slower level's grid is coarser
# and explains a plain pattern at a lower cost, so the fit would lean to half tempo.
GRID_RATIOS = (4.0 / 3.0, 3.0 / 4.0, 1.5, 2.0 / 3.0)
SUBDIVISIONS = 4  # sixteenth notes per beat
GRID_TOLERANCE_FRAMES = 2  # +-20 ms around each grid point
# score * exp(GRID_WEIGHT * fit): a fit better by 0.35 of the onset mass doubles the score.
# Set on the development clips and synthetic signals (docs/extractors.md, "What was tuned").
GRID_WEIGHT = 2.0
TERNARY_PENALTY = 0.2
# An input must hold two beat periods of some tempo in range (the tempogram's longest lag is half
# the input) beyond the excerpt edge of step 1 (0.06 s): 0.5 s holds two at 240 BPM.
MIN_DURATION_S = 0.5
# The flux of a centred 64 ms window peaks before a percussive onset reaches the window's centre
# (the log compression makes the first, tapered entry of the sound the largest step): beats are
# reported this much after their envelope peak. Measured: median 12.5 ms on the drum patterns of
# the tests (75 to 143 BPM), 10 ms on the 7 annotated beats of the development clips.
ENVELOPE_LEAD_S = 0.012
STEADY_MIN_BEATS = 8
STEADY_TOLERANCE = 0.05


@functools.lru_cache(maxsize=4)
def mel_filterbank(device: torch.device) -> torch.Tensor:
    """The 40 Slaney mel filters, shape ``(40, N_FFT // 2 + 1)``; built once per device (5 ms).

    Built outside inference mode, so that the cached tensor serves callers in either mode.
    """
    with torch.inference_mode(False):
        fbank = AF.melscale_fbanks(
            N_FFT // 2 + 1,
            MEL_FMIN,
            MEL_FMAX,
            N_MELS,
            SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        filters: torch.Tensor = fbank.to(device).T.contiguous()
    return filters


def onset_channels(
    audio: torch.Tensor, block_frames: int = 6000
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Band-wise onset strength at 100 frames/s, shape ``(4, 1 + n_samples // 160)``, the bass
    onset strength (shape ``(1 + n_samples // 160,)``) and the edge.

    The bass onset strength is the spectral flux of the ``BASS_BANDS`` lowest mel bands (30 to
    310 Hz: bass drum and bass, under most chord tones) minus its 0.25 s moving average and
    rectified, unscaled; the downbeat test (:mod:`audioproc.extractors._downbeats`) reads it.

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
    fbank = mel_filterbank(audio.device)
    mel_blocks = []
    for first, stop in frame_blocks(1 + audio.numel() // HOP_LENGTH, block_frames):
        spec = centred_stft(audio, N_FFT, HOP_LENGTH, window, first, stop)
        # complex abs(): with the mel product 0.015 s per 60 s against 0.036 s for vector_norm
        # over view_as_real (torch 2.11, CPU, one thread; docs/performance.md, "Tempo").
        mel_blocks.append(fbank @ spec.abs())
    bands = torch.cat(mel_blocks, dim=1)
    bands = bands.mul_(
        LOG_COMPRESSION / float(bands.max()) if float(bands.max()) > 0 else 0.0
    ).log1p_()
    flux = torch.relu(bands[:, 1:] - bands[:, :-1])
    flux = torch.nn.functional.pad(flux, (1, 0))
    edge = leading_silence_frames(bands) + N_FFT // HOP_LENGTH
    channels = torch.cat(
        [
            flux.reshape(N_CHANNELS, N_MELS // N_CHANNELS, -1).sum(dim=1),
            flux[:BASS_BANDS].sum(0)[None],
        ]
    )
    width = 2 * int(LOCAL_MEAN_S * FRAME_RATE / 2) + 1
    local_mean = torch.nn.functional.avg_pool1d(
        channels[:, None], width, stride=1, padding=width // 2, count_include_pad=False
    )[:, 0]
    rectified = torch.relu(channels - local_mean)
    channels, bass = rectified[:N_CHANNELS], rectified[N_CHANNELS]
    inner = channels[:, edge:]
    spread = (
        inner.std(dim=1, keepdim=True) if inner.shape[1] > 1 else torch.ones_like(channels[:, :1])
    )
    return channels / spread.clamp(min=max(0.1 * float(spread.max()), 1e-12)), bass, edge


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


def prior_mass_in_reach(n_frames: int) -> float:
    """Share of the prior's mass (log-normal, ``MIN_BPM`` to ``MAX_BPM``) that an input can test.

    The tempogram reads periods up to half the input (two periods must fit), so an input of
    ``n_frames`` onset frames cannot tell tempi under ``120 * 100 / n_frames`` BPM: 1 s tests
    only 120 BPM and up (0.46 of the mass), 2 s from 60 BPM (0.85), 4 s from 30 BPM (1).
    """

    def below(bpm: float) -> float:  # prior mass under ``bpm``, as a standard normal CDF
        return 0.5 * (1.0 + math.erf(math.log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES / math.sqrt(2)))

    slowest = max(MIN_BPM, 60.0 * FRAME_RATE / max(n_frames / 2, 1e-9))
    if slowest >= MAX_BPM:
        return 0.0
    return (below(MAX_BPM) - below(slowest)) / (below(MAX_BPM) - below(MIN_BPM))


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


def fold(x: torch.Tensor, periods: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``x`` folded at each period: sums and frame counts per one-frame phase bin.

    Frame ``t`` falls in phase bin ``floor(t mod period)``; a period has ``ceil(period)`` bins
    (the last one partial), the rest of the ``ceil(max(periods)) + 1`` columns stay empty.
    Folded ``FOLD_BLOCK_FRAMES`` frames at a time, so the (periods x frames) bin index stays small.

    Args:
        x: shape ``(C, n)``.
        periods: shape ``(P,)``, fractional frames, ``> 1``.

    Returns:
        sums of shape ``(P, C, bins)`` and counts of shape ``(P, bins)``.
    """
    c, n = x.shape
    n_bins = int(math.ceil(float(periods.max()))) + 1
    sums = torch.zeros(periods.numel(), c, n_bins, device=x.device, dtype=x.dtype)
    counts = torch.zeros(periods.numel(), n_bins, device=x.device, dtype=x.dtype)
    for first in range(0, n, FOLD_BLOCK_FRAMES):
        block = x[:, first : first + FOLD_BLOCK_FRAMES]
        t = torch.arange(first, first + block.shape[1], device=x.device, dtype=torch.float64)
        bins = torch.floor(torch.remainder(t[None, :], periods[:, None].double())).long()
        sums.scatter_add_(
            2, bins[:, None, :].expand(-1, c, -1), block[None].expand(periods.numel(), -1, -1)
        )
        counts.scatter_add_(1, bins, torch.ones_like(bins, dtype=x.dtype))
    return sums, counts


def circular_window_sum(x: torch.Tensor, n_own: torch.Tensor, half_width: int) -> torch.Tensor:
    """Sum over bins ``b - half_width .. b + half_width``, wrapping within each row's own bins.

    Args:
        x: shape ``(P, ..., bins)``; row ``i`` uses its first ``n_own[i]`` bins.
        n_own: shape ``(P,)``, bins per row.
    """
    index = torch.arange(x.shape[-1], device=x.device)
    out = torch.zeros_like(x)
    for offset in range(-half_width, half_width + 1):
        source = torch.remainder(index[None, :] + offset, n_own[:, None])  # (P, bins)
        source = source.view(source.shape[0], *([1] * (x.dim() - 2)), -1).expand_as(x)
        out += x.gather(-1, source)
    return out


def pulse_salience(channels: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """For each period (frames), how far the envelope folded at that period rises at its best phase.

    Each phase bin's mean (see :func:`fold`; with a 3-frame circular smoothing, +-10 ms) minus
    the channel mean, in channel standard deviations, times ``count ** 0.1`` (``count`` frames
    in the bin: a z-score divided by ``count ** 0.4``), at the best bin, summed over channels.
    The count term keeps a long period, whose bins average few frames, from winning on chance
    alignments.

    Args:
        channels: shape ``(C, n)``.
        periods: shape ``(P,)``, fractional frames, ``1 < period <= n / 2``.

    Returns:
        shape ``(P,)``.
    """
    sums, counts = fold(channels, periods)
    n_own = torch.ceil(periods).long()
    smooth_sums = circular_window_sum(sums, n_own, 1)
    smooth_counts = circular_window_sum(counts, n_own, 1)
    index = torch.arange(counts.shape[1], device=channels.device)
    valid = (index[None, :] < n_own[:, None]) & (smooth_counts > 0)
    mean = channels.mean(dim=1)[None, :, None]
    std = channels.std(dim=1)[None, :, None].clamp(min=1e-12)
    count = smooth_counts.clamp(min=1)[:, None, :]
    z = (smooth_sums / count - mean) / std * count.sqrt()
    z = z / count.pow(SALIENCE_COUNT_EXPONENT)
    z = torch.where(valid[:, None, :], z, torch.full_like(z, -math.inf))
    return z.amax(dim=2).sum(dim=1)


def subdivision_fit(
    envelope: torch.Tensor, periods: torch.Tensor, subdivisions: int = 4
) -> torch.Tensor:
    """How much of the onset mass a beat period's sixteenth-note grid explains beyond chance.

    For each period, the grid ``phase + k * period / 4`` at its best phase: the share of the
    envelope's mass within +-2 frames (+-20 ms) of it, minus the share of frames it covers
    (``5 / (period / 4)``, what a grid collects from onsets at random times). Onsets on the
    sixteenths of the true beat sit on its grid; read at 4/3 of that tempo (a period of three
    sixteenths, common in dotted or 3+3+2 figures) half the grid falls between them.

    Args:
        envelope: shape ``(n,)``, non-negative.
        periods: shape ``(P,)``, frames (at 300 BPM, 20 frames: a sixteenth of 5 frames).

    Returns:
        shape ``(P,)``, at most 1 (all the mass on a grid that covers no frames).
    """
    steps = periods / subdivisions
    sums, _ = fold(envelope[None], steps)
    n_own = torch.ceil(steps).long()
    window = circular_window_sum(sums[:, 0], n_own, GRID_TOLERANCE_FRAMES)
    index = torch.arange(window.shape[1], device=envelope.device)
    window = torch.where(index[None, :] < n_own[:, None], window, torch.zeros_like(window))
    share = window.amax(dim=1) / envelope.sum().clamp(min=1e-12)
    return share - (2 * GRID_TOLERANCE_FRAMES + 1) / steps


@dataclass(frozen=True)
class TempoEstimate:
    """The tempogram's tempo (steps 2 to 4 of the module); see :func:`estimate_tempo`."""

    period: float  # frames per beat
    bpm: float
    alternative_bpm: float | None
    alternative_strength: float
    confidence: float


def estimate_tempo(channels: torch.Tensor) -> TempoEstimate | None:
    """Tempo, alternative tempo and their strengths from the onset channels, or None without periodicity.

    Returns ``period`` (frames), ``bpm``, ``alternative_bpm`` (None without one),
    ``alternative_strength`` (``s2 / (s1 + s2)``, 0..1: above 0.5 only where the ratio decision
    chose the beat over a stronger pulse, e.g. 4/3 of it) and ``confidence``:
    ``max(0, 1 - r / s1) * prior_mass_in_reach(n)``, where ``r`` is the best score of a period
    that is no metrical relative of the chosen one (a rival tempo); the factor says how much of
    the tempo range a short input could not test (its rivals there were never scored).
    """
    n = channels.shape[1]
    acf = tempogram(channels)
    candidates = candidate_periods(acf, n)
    if not candidates:
        return None
    periods = torch.tensor(
        [p / r for p in candidates for r in METRICAL_RELATIVES],
        dtype=channels.dtype,
        device=channels.device,
    )
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
    periods, score = _ratio_decision(channels, periods, score, best)
    best = periods.numel() - 1
    bpm = 60.0 * FRAME_RATE / periods
    ratio = periods / periods[best]
    related = torch.zeros_like(ratio, dtype=torch.bool)
    for r in RELATED_RATIOS:
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
        confidence=max(0.0, 1.0 - rival / s1) * prior_mass_in_reach(n),
    )


def _ratio_decision(
    channels: torch.Tensor, periods: torch.Tensor, score: torch.Tensor, best: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The periods and scores with the chosen beat period appended last (step 4 of the module).

    The winner ``periods[best]`` and its ``GRID_RATIOS`` relatives are weighed by
    ``score * exp(GRID_WEIGHT * subdivision_fit)``; the heaviest is chosen and appended with
    its plain score (so that the alternative and the confidence compare plain scores).

    Args:
        channels: shape ``(C, n)``; periods, score: shape ``(P,)``.
    """
    n = channels.shape[1]
    options = periods[best] / torch.tensor(
        (1.0, *GRID_RATIOS), dtype=periods.dtype, device=periods.device
    )
    bpm = 60.0 * FRAME_RATE / options
    kept = (bpm >= MIN_BPM) & (bpm <= MAX_BPM) & (options <= n / 2)
    options, bpm = options[kept], bpm[kept]
    plain = pulse_salience(channels, options).clamp(min=0) * log_normal_prior(bpm)
    envelope = channels.sum(dim=0)
    fit = torch.maximum(
        subdivision_fit(envelope, options, 4),
        subdivision_fit(envelope, options, 3) - TERNARY_PENALTY,
    )
    weighed = plain * torch.exp(GRID_WEIGHT * fit)
    chosen = int(weighed.argmax())
    return (
        torch.cat([periods, options[chosen : chosen + 1]]),
        torch.cat([score, plain[chosen : chosen + 1]]),
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
        ``bpm``: the tempo (None for inputs under 0.5 s or without periodicity).
        ``bpm_autocorrelation``: the tempogram's estimate before the line fit of step 5.
        ``bpm_alternative``: the best other metrical level (x2, x1/2, x3/2, x2/3, x3, x1/3,
        x4/3, x3/4), or None.
        ``bpm_alternative_strength``: its relative strength ``s2 / (s1 + s2)`` (MIREX's ST2),
        0..1; above 0.5 where the subdivision grid chose the tempo over a stronger pulse.
        ``confidence``: 0..1, ``(1 - r / s1) * m``: how far the chosen tempo's score ``s1`` stands
        above the best score ``r`` of a tempo that is no metrical relative of it (0: an unrelated
        rival explains the onsets as well), times the prior mass ``m`` of the tempi the input is
        long enough to test (:func:`prior_mass_in_reach`: under 1 for inputs under 4 s).
        ``beat_count``: number of beats.
        ``tempo_stability``: 1 minus the coefficient of variation of the intervals between
        consecutive beats (1 is metronomic; 0 when undefined).
        ``beats_per_bar``: 3 or 4 where the bass accents make the metre clear, else None
        (:mod:`audioproc.extractors._downbeats`).

    Artifacts:
        ``beats``: float64 ``(beat_count,)``, beat times in seconds.
        ``bar_starts``: float64, the downbeats (a subset of ``beats``, s); only where
        ``beats_per_bar`` is set.
    """

    name = "tempo"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        from audioproc.extractors._beat_dp import track_beats
        from audioproc.extractors._downbeats import bar_structure

        audio = audio.to(device=device, dtype=torch.float32)
        empty = {
            "bpm": None,
            "bpm_autocorrelation": None,
            "bpm_alternative": None,
            "bpm_alternative_strength": 0.0,
            "confidence": 0.0,
            "beat_count": 0,
            "tempo_stability": 0.0,
            "beats_per_bar": None,
        }
        if audio.numel() < MIN_DURATION_S * SAMPLE_RATE:
            return ExtractorOutput(
                empty,
                {"beats": np.zeros(0)},
                [f"input shorter than {MIN_DURATION_S:g} s (two beats at 240 BPM): no tempo"],
            )
        channels, bass, edge = onset_channels(
            audio, block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH)
        )
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
            "beats_per_bar": None,
        }
        beat_times = np.minimum(beats / FRAME_RATE + ENVELOPE_LEAD_S, audio.numel() / SAMPLE_RATE)
        artifacts = {"beats": beat_times}
        bars = bar_structure(bass.cpu().numpy().astype(np.float64), beats, edge)
        if bars is not None:
            features["beats_per_bar"], first_downbeat = bars
            artifacts["bar_starts"] = beat_times[first_downbeat :: bars[0]]
        return ExtractorOutput(features, artifacts)
