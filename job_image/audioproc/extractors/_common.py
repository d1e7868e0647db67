"""Small numerical helpers shared by the extractors (torch, device-agnostic)."""

from __future__ import annotations

import torch


def summary_stats(values: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean, population std and 10th/50th/90th percentiles of a 1-D tensor, as plain floats.

    Keys are ``{prefix}_mean``, ``{prefix}_std``, ``{prefix}_p10``, ``{prefix}_p50``,
    ``{prefix}_p90``. An empty tensor gives NaN-free zeros so the manifest stays JSON.
    """
    if values.numel() == 0:
        return {f"{prefix}_{k}": 0.0 for k in ("mean", "std", "p10", "p50", "p90")}
    v = values.detach().to(torch.float64).flatten()
    q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, device=v.device))
    p10, p50, p90 = (float(x) for x in q.cpu())
    return {
        f"{prefix}_mean": float(v.mean()),
        f"{prefix}_std": float(v.std(correction=0)),
        f"{prefix}_p10": p10,
        f"{prefix}_p50": p50,
        f"{prefix}_p90": p90,
    }


#: Default length of the blocks long audio is processed in, in seconds. Working memory of
#: an extractor is a few times one block's intermediates (STFTs, filtered samples) plus
#: its small per-frame feature arrays, whatever the input's duration.
BLOCK_SECONDS = 60.0


def padded_slice(x: torch.Tensor, start: int, stop: int, mode: str = "constant") -> torch.Tensor:
    """``x[start:stop]`` where indices outside ``[0, n)`` read as padding, without padding all of ``x``.

    Args:
        x: shape ``(n,)`` with ``n >= 1``.
        start, stop: sample indices, ``start <= stop``; either may lie outside ``[0, n)``.
        mode: ``"constant"`` (zeros) or ``"edge"`` (the first / last sample repeated).

    Returns:
        shape ``(stop - start,)``; a view of ``x`` when no padding is needed.
    """
    n = x.numel()
    lo, hi = min(max(start, 0), n), max(min(stop, n), 0)
    if lo == start and hi == stop:
        return x[start:stop]
    before, after = lo - start, stop - hi
    inner = x[lo:hi] if hi > lo else x[:0]
    if mode == "edge":
        if hi <= lo:  # the whole range is outside: repeat the nearer end
            return (x[:1] if stop <= 0 else x[-1:]).expand(stop - start).clone()
        return torch.cat([inner[:1].expand(before), inner, inner[-1:].expand(after)])
    return torch.nn.functional.pad(inner, (before, after))


def centred_frames_input(
    audio: torch.Tensor, n_fft: int, hop_length: int, first: int, stop: int, mode: str = "constant"
) -> torch.Tensor:
    """The samples that frames ``first .. stop - 1`` of a centred STFT (``center=True``) read.

    ``torch.stft(result, n_fft, hop_length, center=False)`` then gives exactly those frames of
    ``torch.stft(audio, n_fft, hop_length, center=True, pad_mode=...)``: frame ``t`` covers
    samples ``[t * hop_length - n_fft // 2, t * hop_length - n_fft // 2 + n_fft)``, padded by
    ``mode`` outside the signal.
    """
    start = first * hop_length - n_fft // 2
    return padded_slice(audio, start, (stop - 1) * hop_length - n_fft // 2 + n_fft, mode)


def centred_stft(
    audio: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor, first: int, stop: int
) -> torch.Tensor:
    """Frames ``first .. stop - 1`` of ``torch.stft(audio, n_fft, hop_length, window=window, center=True)``
    (zero padding), reading only the samples those frames cover.

    Args:
        audio: shape ``(n_samples,)``.
        window: shape ``(n_fft,)``, on ``audio``'s device.

    Returns:
        complex, shape ``(n_fft // 2 + 1, stop - first)``.
    """
    segment = centred_frames_input(audio, n_fft, hop_length, first, stop)
    return torch.stft(segment, n_fft, hop_length, window=window, center=False, return_complex=True)


def frame_blocks(n_frames: int, block_frames: int) -> list[tuple[int, int]]:
    """``[(first, stop), ...]`` covering frames ``0 .. n_frames - 1`` in blocks of ``block_frames``."""
    block_frames = max(1, block_frames)
    return [
        (first, min(first + block_frames, n_frames)) for first in range(0, n_frames, block_frames)
    ]


def block_frames_of(block_s: float, sample_rate: int, hop_length: int) -> int:
    """Frames per processing block of about ``block_s`` seconds (at least one)."""
    return max(1, int(block_s * sample_rate / hop_length))
