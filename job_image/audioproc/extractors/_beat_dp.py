"""Beat tracking by dynamic programming over an onset envelope, with a local period (numpy, CPU).

Ellis (2007), "Beat tracking by dynamic programming": the score of a beat at frame ``t`` is
the onset strength there plus the best score of a previous beat ``p`` minus
``TIGHTNESS * log((t - p) / period(t)) ** 2``, previous beats searched between half and twice
the period. Here ``period(t)`` is not one global period but a local one (:func:`local_periods`),
so that the beats follow a tempo change instead of fighting it.

The recursion is sequential, but every frame of a block shorter than half the smallest
period depends only on frames before the block: blocks are scored at once, so the Python
loop runs ``n_frames / (period / 2)`` times (about 4 per second of audio at 120 BPM).
"""

from __future__ import annotations

import numpy as np

FRAME_RATE = 100.0  # onset frames per second
TIGHTNESS = 100.0  # Ellis 2007 / librosa's default
LOCAL_WINDOW_S, LOCAL_HOP_S = 8.0, 2.0
LOCAL_RANGE_OCTAVES = 0.5  # the local period stays within half an octave of the global one
LOCAL_PRIOR_OCTAVES = 0.5  # and is drawn towards it by a log-normal weight of this width


def local_periods(envelope: np.ndarray, period: float) -> np.ndarray:
    """A period (frames) for every frame: the autocorrelation peak of 8 s windows every 2 s near ``period``.

    Each window's autocorrelation is weighted by a log-normal of 0.5 octave around the global
    period and searched within half an octave of it; the per-window periods are median-filtered
    over 3 windows and interpolated to every frame. Inputs shorter than two windows get the
    global period everywhere.
    """
    n = envelope.size
    window, hop = int(LOCAL_WINDOW_S * FRAME_RATE), int(LOCAL_HOP_S * FRAME_RATE)
    if n < 2 * window:
        return np.full(n, period)
    starts = np.arange(0, n - window + 1, hop)
    frames = np.stack([envelope[s : s + window] for s in starts])
    frames = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, 2 * window, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, 2 * window, axis=1)[:, :window]
    lo = max(2, int(period * 2**-LOCAL_RANGE_OCTAVES))
    hi = min(window // 2, int(np.ceil(period * 2**LOCAL_RANGE_OCTAVES)))
    lags = np.arange(lo, hi + 1)
    weight = np.exp(-0.5 * (np.log2(lags / period) / LOCAL_PRIOR_OCTAVES) ** 2)
    best = lags[np.argmax(acf[:, lags] * weight, axis=1)].astype(np.float64)
    if best.size >= 3:
        padded = np.concatenate([best[:1], best, best[-1:]])
        best = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    centres = starts + window / 2
    return np.asarray(np.interp(np.arange(n), centres, best), dtype=np.float64)


def dp_beats(envelope: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Beat frames (int) maximising onset strength plus Ellis's log-interval consistency with ``periods``."""
    n = envelope.size
    onset = envelope / (envelope.std() or 1.0)
    score = onset.copy()
    back = np.full(n, -1, dtype=np.int64)
    min_lag = max(1, int(np.floor(periods.min() / 2)))
    max_lag = int(np.ceil(2 * periods.max()))
    lags = np.arange(min_lag, max_lag + 1)
    block = min_lag
    for first in range(min_lag, n, block):
        t = np.arange(first, min(n, first + block))
        prev = t[:, None] - lags[None, :]
        ok = prev >= 0
        ratio = lags[None, :] / periods[t][:, None]
        penalty = -TIGHTNESS * np.log(ratio) ** 2
        ok &= (ratio >= 0.5) & (ratio <= 2.0)
        candidates = np.where(ok, score[np.maximum(prev, 0)] + penalty, -np.inf)
        j = np.argmax(candidates, axis=1)
        best = candidates[np.arange(t.size), j]
        chain = np.isfinite(best) & (best > 0)  # start afresh where no previous beat helps
        score[t] = onset[t] + np.where(chain, best, 0.0)
        back[t] = np.where(chain, prev[np.arange(t.size), j], -1)
    # The last beat: the best-scoring frame within one period of the end.
    tail = max(0, n - int(np.ceil(periods[-1])))
    beat = tail + int(np.argmax(score[tail:]))
    beats = [beat]
    while back[beat] >= 0:
        beat = int(back[beat])
        beats.append(beat)
    return np.asarray(beats[::-1], dtype=np.int64)


def refine(envelope: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Beat frames moved to the sub-frame vertex of a parabola through a local envelope maximum."""
    out = beats.astype(np.float64)
    inner = (beats > 0) & (beats < envelope.size - 1)
    i = beats[inner]
    left, centre, right = envelope[i - 1], envelope[i], envelope[i + 1]
    curvature = left - 2 * centre + right
    is_peak = (centre >= left) & (centre >= right) & (curvature < 0)
    offset = np.where(is_peak, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    out[inner] += np.clip(offset, -0.5, 0.5)
    return out


def trim_weak_ends(envelope: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Drop leading and trailing beats with no onset near them (under a tenth of the median beat onset)."""
    if beats.size == 0:
        return beats
    strength = np.array([envelope[max(0, b - 2) : b + 3].max() for b in beats])
    strong = np.nonzero(strength >= 0.1 * np.median(strength))[0]
    return beats[strong[0] : strong[-1] + 1] if strong.size else beats[:0]


def track_beats(envelope: np.ndarray, period: float) -> np.ndarray:
    """Beat positions in (fractional) frames for an onset ``envelope`` with global beat ``period`` (frames)."""
    if envelope.size < 2 or period <= 1 or not np.any(envelope > 0):
        return np.zeros(0)
    beats = trim_weak_ends(envelope, dp_beats(envelope, local_periods(envelope, period)))
    return refine(envelope, beats)
