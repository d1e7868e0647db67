"""Downbeats where the metre is clear: which beat of every 3 or 4 carries the low accents (numpy).

The bar is read from the low end, as in Goto (2001) and most downbeat trackers since: the bass
drum and the bass-note changes fall on the first beat of the bar more often than elsewhere.
Each beat's accent is the largest onset strength of the lowest accent channel (mel bands 1 to
10: 30 Hz to about 800 Hz) within +-2 frames (+-20 ms) of it. For each metre ``M`` (3 or 4
beats per bar) and phase ``p``, Welch's t compares the accents of the beats ``k`` with
``k mod M == p`` with those of the other beats and with those of the next-best phase. The metre
is clear when, for the best ``(M, p)``, both t are at least 3 (three standard errors; a chance
accent pattern rarely gets there over 3 bars or more). A rock beat with the bass drum on 1 and
3 ties phases 1 and 3 of a bar of 4: no downbeats for it, rightly, since the low end alone does
not say which of the two starts the bar.
"""

from __future__ import annotations

import math

import numpy as np

METRES = (3, 4)  # beats per bar tried
MIN_BARS = 3  # beats must span this many bars of a metre before it is tried
CLEAR_T = 3.0  # Welch's t that both comparisons must reach
TOLERANCE_FRAMES = 2  # +-20 ms around each beat


def welch_t(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t of ``mean(a) - mean(b)``; +inf for a positive difference without spread, 0 below 2 samples."""
    if a.size < 2 or b.size < 2:
        return 0.0
    diff = float(a.mean() - b.mean())
    error = math.sqrt(float(a.var(ddof=1)) / a.size + float(b.var(ddof=1)) / b.size)
    if error <= 1e-12 * max(1.0, abs(float(a.mean())), abs(float(b.mean()))):
        return math.inf if diff > 0 else 0.0
    return diff / error


def bar_structure(bass: np.ndarray, beats: np.ndarray, edge: int) -> tuple[int, int] | None:
    """``(beats_per_bar, index of the first downbeat among the beats)``, or None if unclear.

    Args:
        bass: onset strength of the lowest accent channel, shape ``(n_frames,)``, 100 frames/s.
        beats: beat positions in (fractional) frames, shape ``(n_beats,)``, increasing.
        edge: frames at the start whose onsets cannot be seen (the excerpt's edge, see
            :func:`audioproc.extractors.tempo.onset_channels`): beats there keep their place
            in the bar count but their accents are left out of the tests.
    """
    if beats.size == 0:
        return None
    frames = np.clip(np.rint(beats).astype(np.int64), 0, bass.size - 1)
    accent = np.array(
        [bass[max(0, f - TOLERANCE_FRAMES) : f + TOLERANCE_FRAMES + 1].max() for f in frames]
    )
    seen = frames >= edge
    accent_of, index_of = accent[seen], np.nonzero(seen)[0]
    best: tuple[int, int, float] | None = None
    for metre in METRES:
        if accent_of.size < MIN_BARS * metre:
            continue
        phase_of = index_of % metre
        against_rest = [
            welch_t(accent_of[phase_of == p], accent_of[phase_of != p]) for p in range(metre)
        ]
        order = np.argsort(against_rest)[::-1]
        phase, runner_up = int(order[0]), int(order[1])
        against_runner_up = welch_t(accent_of[phase_of == phase], accent_of[phase_of == runner_up])
        clarity = min(against_rest[phase], against_runner_up)
        if clarity >= CLEAR_T and (best is None or clarity > best[2]):
            best = (metre, phase, clarity)
    return (best[0], best[1]) if best else None
