"""Loudness: ITU-R BS.1770-4 integrated loudness, EBU Tech 3342 loudness range, true peak, RMS.

All measurements are on the mono mix the pipeline hands over, at 48 kHz (the rate at which
BS.1770 specifies the K-weighting filter; the coefficients are derived for it with the
bilinear transform of the standard's analogue prototype, as libebur128 does, so the
filter matches the standard's table exactly).

Gating blocks are built from 100 ms sub-blocks of K-weighted energy: a 400 ms momentary
block (75 % overlap) is 4 consecutive sub-blocks, a 3 s short-term block is 30. The IIR
filter runs on 0.48 s chunks in parallel (a batch), each with 0.2 s of warm-up before it; the
filter's impulse response has decayed below 1e-9 by then, so the result equals a
sequential run to float precision while the work is batched on CPU or GPU.

Long audio is processed in blocks of ``block_s`` seconds (sub-block energies, sample peak,
sum of squares, 10 ms segment peaks); only per-100-ms energies and per-10-ms peaks are kept
(about 25 kB per minute), then the few near-peak segments are oversampled for the true peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF  # resample (true peak)

from audioproc.extractors._common import frame_blocks, padded_slice
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 48_000
MOMENTARY_SUB_BLOCKS = 4  # 400 ms
SHORT_TERM_SUB_BLOCKS = 30  # 3 s
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0  # BS.1770-4 integrated loudness
LRA_RELATIVE_GATE_LU = -20.0  # EBU Tech 3342
K_WEIGHTING_OFFSET = -0.691
SHORT_TERM_FLOOR_LUFS = -120.0  # artifact values of silent stretches (instead of -inf)
TRUE_PEAK_OVERSAMPLING = 4
FFT_BLOCK = 2**15  # overlap-save block for the K-weighting filter
BLOCKS_PER_BATCH = 64
TRUE_PEAK_MARGIN_DB = 6.0
TRUE_PEAK_SEGMENTS_PER_BATCH = 2048
PEAK_ENVELOPE_SEGMENTS = 10  # 10 ms segment peaks per element of the peak_envelope artifact


def k_weighting_coefficients(
    sample_rate: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """BS.1770 K-weighting as two biquads (high shelf, then high pass), for ``sample_rate`` Hz.

    Returns ``(b_shelf, a_shelf, b_highpass, a_highpass)``, float64, each of shape ``(3,)``.
    At 48 kHz these equal the coefficient table of BS.1770-4 (Table 1 and 2).
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10.0 ** (gain_db / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    b_shelf = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
    ]
    a_shelf = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]

    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1.0 + k / q + k * k
    b_highpass = [1.0, -2.0, 1.0]
    a_highpass = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]

    def as_tensor(coefficients: list[float]) -> torch.Tensor:
        return torch.tensor(coefficients, dtype=torch.float64)

    return as_tensor(b_shelf), as_tensor(a_shelf), as_tensor(b_highpass), as_tensor(a_highpass)


def k_weighting_response(sample_rate: int, n_fft: int) -> torch.Tensor:
    """Complex frequency response of the K-weighting filter at the ``n_fft // 2 + 1`` rfft bins."""
    b1, a1, b2, a2 = (c.numpy() for c in k_weighting_coefficients(sample_rate))
    z_inv = np.exp(-2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)
    powers = z_inv[:, None] ** np.arange(3)[None, :]
    response = (powers @ b1) / (powers @ a1) * (powers @ b2) / (powers @ a2)
    return torch.from_numpy(response.astype(np.complex64))


def k_weighted_sub_block_energy(
    audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, first: int = 0, stop: int | None = None
) -> torch.Tensor:
    """Sum of squared K-weighted samples per 100 ms sub-block, for sub-blocks ``first .. stop - 1``.

    The IIR filter is applied by overlap-save FFT convolution with its frequency response:
    blocks of 2^15 samples, each starting with 0.2 s of the preceding audio (zeros before
    the signal) that is discarded after filtering. The filter's impulse response has
    decayed below 1e-9 of its peak within those 0.2 s, so the result equals the recursive
    filter to float precision, while every block is an independent row of a batched FFT
    (fast on CPU and GPU), and any range of sub-blocks can be computed on its own (long
    audio is processed a range at a time).

    Args:
        audio: shape ``(n_samples,)`` at ``sample_rate`` Hz (float32, any device).
        first, stop: sub-block range; ``stop`` defaults to ``n_samples // (sample_rate // 10)``
            (a trailing partial sub-block belongs to no complete gating block).

    Returns:
        float64, shape ``(stop - first,)``.
    """
    sub_block = sample_rate // 10
    stop = audio.numel() // sub_block if stop is None else stop
    if stop <= first:
        return torch.zeros(0, dtype=torch.float64, device=audio.device)
    warmup = sample_rate // 5
    keep = FFT_BLOCK - warmup
    length = (stop - first) * sub_block
    n_blocks = -(-length // keep)
    start = first * sub_block
    x = padded_slice(audio, start - warmup, start + n_blocks * keep).to(torch.float32)
    blocks = x.unfold(0, FFT_BLOCK, keep)  # (n_blocks, 2^15), a view
    response = k_weighting_response(sample_rate, FFT_BLOCK).to(audio.device)
    energy_parts = []
    for batch_start in range(0, n_blocks, BLOCKS_PER_BATCH):
        spectrum = (
            torch.fft.rfft(blocks[batch_start : batch_start + BLOCKS_PER_BATCH], dim=1) * response
        )
        filtered = torch.fft.irfft(spectrum, n=FFT_BLOCK, dim=1)[:, warmup:]
        energy_parts.append(filtered.to(torch.float64).square().reshape(-1))
    weighted_energy = torch.cat(energy_parts)[:length]
    return weighted_energy.reshape(stop - first, sub_block).sum(dim=1)


def block_loudness(
    sub_energy: torch.Tensor, sub_blocks: int, sample_rate: int = SAMPLE_RATE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-square energy and loudness (LUFS) of sliding blocks of ``sub_blocks`` sub-blocks.

    Blocks advance by one sub-block (100 ms). Returns ``(energy, lufs)``, both shape
    ``(n_sub - sub_blocks + 1,)`` (empty when the input is shorter than one block);
    silent blocks have loudness ``-inf``.
    """
    if sub_energy.numel() < sub_blocks:
        empty = sub_energy.new_zeros(0)
        return empty, empty
    energy = sub_energy.unfold(0, sub_blocks, 1).sum(dim=1) / (sub_blocks * (sample_rate // 10))
    return energy, K_WEIGHTING_OFFSET + 10.0 * torch.log10(energy)


def gated_loudness(
    energy: torch.Tensor, lufs: torch.Tensor, relative_gate_lu: float
) -> tuple[torch.Tensor, float | None]:
    """Blocks that pass the absolute (-70 LUFS) and relative gates, and their integrated loudness.

    Returns ``(mask, loudness_lufs)``; loudness is None when no block passes the gates.
    """
    above_absolute = lufs > ABSOLUTE_GATE_LUFS
    if not bool(above_absolute.any()):
        return above_absolute, None
    relative_gate = (
        K_WEIGHTING_OFFSET
        + 10.0 * math.log10(float(energy[above_absolute].mean()))
        + relative_gate_lu
    )
    mask = above_absolute & (lufs > relative_gate)
    if not bool(mask.any()):
        return mask, None
    return mask, K_WEIGHTING_OFFSET + 10.0 * math.log10(float(energy[mask].mean()))


@dataclass
class SampleLevels:
    """Sample statistics of a signal gathered block by block (see :func:`sample_levels`).

    Attributes:
        peak: largest absolute sample.
        sum_squares: sum of squared samples (float64).
        segment_peaks: largest absolute sample of each 10 ms segment (the last one may be
            partial), float32, shape ``(ceil(n_samples / 480),)``.
    """

    peak: float
    sum_squares: float
    segment_peaks: torch.Tensor


def sample_levels(audio: torch.Tensor, block_samples: int) -> SampleLevels:
    """Peak, sum of squares and 10 ms segment peaks of ``audio`` (48 kHz), ``block_samples`` at a time.

    ``block_samples`` is rounded up to whole 10 ms segments.
    """
    segment = SAMPLE_RATE // 100
    block_samples = segment * max(1, -(-block_samples // segment))
    peak, sum_squares, segment_peaks = 0.0, 0.0, []
    for start in range(0, audio.numel(), block_samples):
        block = audio[start : start + block_samples]
        n_segments = -(-block.numel() // segment)
        magnitude = (
            padded_slice(block, 0, n_segments * segment).abs().view(n_segments, segment).amax(dim=1)
        )
        segment_peaks.append(magnitude)
        peak = max(peak, float(magnitude.max()))
        sum_squares += float(block.to(torch.float64).square().sum())
    return SampleLevels(peak, sum_squares, torch.cat(segment_peaks))


def true_peak_dbtp(audio: torch.Tensor, levels: SampleLevels) -> float | None:
    """Maximum absolute value of the signal upsampled 4x (BS.1770-4 Annex 2), in dBTP.

    Upsampling is torchaudio's windowed-sinc resampler (16 zero crossings, a polyphase
    low-pass like the standard's example filter; a sine up to 18 kHz reads within 0.01 dB).
    Only 10 ms segments whose sample peak (``levels.segment_peaks``) lies within
    ``TRUE_PEAK_MARGIN_DB`` of the signal's sample peak are upsampled (with 32 samples of
    context on both sides, zeros outside the signal, as one batch): an inter-sample peak
    more than 6 dB above every sample around it needs a near-Nyquist tone at an unlucky
    phase. None for digital silence.
    """
    if levels.peak <= 0:
        return None
    segment, context = SAMPLE_RATE // 100, 32
    loud = torch.nonzero(
        levels.segment_peaks >= levels.peak * 10 ** (-TRUE_PEAK_MARGIN_DB / 20)
    ).flatten()
    offsets = torch.arange(-context, segment + context, device=audio.device)
    peak = levels.peak
    for start in range(0, loud.numel(), TRUE_PEAK_SEGMENTS_PER_BATCH):
        index = loud[start : start + TRUE_PEAK_SEGMENTS_PER_BATCH, None] * segment + offsets
        inside = (index >= 0) & (index < audio.numel())
        batch = torch.where(inside, audio[index.clamp(0, audio.numel() - 1)], 0.0).to(torch.float32)
        up = AF.resample(batch, 1, TRUE_PEAK_OVERSAMPLING, lowpass_filter_width=16)
        keep = up[:, context * TRUE_PEAK_OVERSAMPLING : -context * TRUE_PEAK_OVERSAMPLING]
        peak = max(peak, float(keep.abs().max()))
    return 20.0 * math.log10(peak)


class LoudnessExtractor(Extractor):
    """BS.1770-4 / EBU R128 loudness of the mono mix at 48 kHz.

    Features (floats, or None when undefined: silence, or input shorter than a block):
        ``integrated_lufs``: gated integrated loudness, LUFS (400 ms blocks, 75 % overlap,
        -70 LUFS absolute and -10 LU relative gates).
        ``loudness_range_lu``: EBU Tech 3342 LRA in LU (3 s short-term blocks every 100 ms,
        -70 LUFS absolute and -20 LU relative gates, 95th minus 10th percentile).
        ``true_peak_dbtp``: 4x-oversampled peak, dBTP.
        ``sample_peak_dbfs``: largest absolute sample, dBFS.
        ``rms_dbfs``: RMS of all samples, dBFS (sine convention: full-scale sine is -3.01).
        ``max_momentary_lufs``, ``max_short_term_lufs``: loudest 400 ms / 3 s block.

    Artifacts:
        ``short_term_lufs``: float32 ``(n,)``, short-term loudness at 10 Hz; element ``i``
        covers ``[0.1 i, 0.1 i + 3)`` s; silent blocks are -120 LUFS.
        ``peak_envelope``: float32 ``(ceil(n_samples / 4800),)``, the largest absolute sample
        (linear, full scale 1.0) of each 100 ms, element ``i`` covering ``[0.1 i, 0.1 i + 0.1)``
        s: the waveform's outline at 10 Hz (about 144 kB per hour), drawn by the facade's /ui.
    """

    name = "loudness"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        audio = audio.to(device=device, dtype=torch.float32)
        block_sub_blocks = max(
            1, round(self.block_s * 10)
        )  # 100 ms sub-blocks per processing block
        sub_block = self.sample_rate // 10
        sub_energy = torch.cat(
            [
                k_weighted_sub_block_energy(audio, self.sample_rate, first, stop)
                for first, stop in frame_blocks(audio.numel() // sub_block, block_sub_blocks)
            ]
            or [torch.zeros(0, dtype=torch.float64, device=device)]
        )
        m_energy, m_lufs = block_loudness(sub_energy, MOMENTARY_SUB_BLOCKS, self.sample_rate)
        s_energy, s_lufs = block_loudness(sub_energy, SHORT_TERM_SUB_BLOCKS, self.sample_rate)
        _, integrated = gated_loudness(m_energy, m_lufs, RELATIVE_GATE_LU)
        lra_mask, lra_reference = gated_loudness(s_energy, s_lufs, LRA_RELATIVE_GATE_LU)
        loudness_range = None
        if lra_reference is not None:
            q = torch.quantile(
                s_lufs[lra_mask], torch.tensor([0.10, 0.95], dtype=torch.float64, device=device)
            )
            loudness_range = float(q[1] - q[0])
        levels = sample_levels(audio, block_sub_blocks * sub_block)
        mean_square = levels.sum_squares / audio.numel() if audio.numel() else 0.0
        features = {
            "integrated_lufs": integrated,
            "loudness_range_lu": loudness_range,
            "true_peak_dbtp": true_peak_dbtp(audio, levels) if audio.numel() else None,
            "sample_peak_dbfs": 20.0 * math.log10(levels.peak) if levels.peak > 0 else None,
            # sine convention: a full-scale sine is -3.01 dBFS
            "rms_dbfs": 10.0 * math.log10(mean_square) if mean_square > 0 else None,
            "max_momentary_lufs": _finite_max(m_lufs),
            "max_short_term_lufs": _finite_max(s_lufs),
        }
        curve = s_lufs.clamp(min=SHORT_TERM_FLOOR_LUFS).nan_to_num(SHORT_TERM_FLOOR_LUFS)
        artifacts = {
            "short_term_lufs": curve.to(torch.float32).cpu().numpy(),
            "peak_envelope": peak_envelope(levels.segment_peaks).cpu().numpy(),
        }
        return ExtractorOutput(features, artifacts)


def peak_envelope(segment_peaks: torch.Tensor) -> torch.Tensor:
    """The largest of each 10 consecutive 10 ms segment peaks: per-100-ms peaks, float32
    ``(ceil(n_segments / 10),)`` (the last from a partial group)."""
    group = PEAK_ENVELOPE_SEGMENTS
    if segment_peaks.numel() == 0:
        return segment_peaks.to(torch.float32)
    n_groups = -(-segment_peaks.numel() // group)
    return (
        padded_slice(segment_peaks, 0, n_groups * group)
        .view(n_groups, group)
        .amax(dim=1)
        .to(torch.float32)
    )


def _finite_max(lufs: torch.Tensor) -> float | None:
    finite = lufs[torch.isfinite(lufs)]
    return float(finite.max()) if finite.numel() else None
