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


def chunks_with_context(x: torch.Tensor, chunk: int, context: int) -> torch.Tensor:
    """Cut a 1-D signal into equal chunks, each with ``context`` extra samples on both sides.

    Lets a sequential operation (an IIR filter, a resampler) run on all chunks at once as a
    batch: run it on the result, then drop ``context`` (scaled by any rate change) from each
    side and concatenate. The signal is zero-padded at both ends.

    Args:
        x: shape ``(n,)``.
        chunk: samples per chunk (the part that is kept).
        context: samples of warm-up before and after each chunk.

    Returns:
        shape ``(ceil(n / chunk), chunk + 2 * context)``.
    """
    n_chunks = max(1, -(-x.numel() // chunk))
    total = n_chunks * chunk
    padded = torch.nn.functional.pad(x, (context, total - x.numel() + context))
    return padded.unfold(0, chunk + 2 * context, chunk)


def stft_magnitude(audio: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Magnitude STFT with librosa's defaults: periodic Hann window, centred frames, zero padding.

    Args:
        audio: shape ``(n_samples,)``.

    Returns:
        float32, shape ``(n_fft // 2 + 1, 1 + n_samples // hop_length)``; frame ``t`` is
        centred on sample ``t * hop_length``.
    """
    window = torch.hann_window(n_fft, periodic=True, device=audio.device, dtype=torch.float32)
    spec = torch.stft(
        audio.to(torch.float32), n_fft, hop_length, window=window, center=True,
        pad_mode="constant", return_complex=True,
    )
    return spec.abs()
