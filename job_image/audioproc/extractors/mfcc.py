"""MFCCs and their deltas, computed in torch to match ``librosa.feature.mfcc`` / ``delta``.

Audio at 22,050 Hz; power STFT (``n_fft=2048``, ``hop_length=512``, periodic Hann, centred,
zero padding); 128 Slaney-scale mel bands, Slaney area normalisation, 0 Hz to Nyquist
(librosa's ``filters.mel`` defaults); ``power_to_db`` with ``ref=1.0``, ``amin=1e-10`` and
``top_db=80`` relative to the loudest cell of this input; orthonormal DCT-II, first 20
coefficients. Deltas: Savitzky-Golay first derivative over 9 frames, polynomial order 1,
with librosa's ``mode='interp'`` edges (the first and last 4 frames take the slope of the
line fitted to the first / last 9 frames), in MFCC units per frame.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF

from audioproc.extractors._common import block_frames_of, centred_stft, frame_blocks
from audioproc.extractors.base import Extractor, ExtractorOutput

SAMPLE_RATE = 22_050
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
N_MFCC = 20
TOP_DB = 80.0
AMIN = 1e-10
DELTA_WIDTH = 9


def mel_db(power: torch.Tensor, sample_rate: int, n_mels: int = N_MELS) -> torch.Tensor:
    """Slaney mel power in dB re 1.0 (floored at ``amin``), before the ``top_db`` floor: ``(n_mels, n_frames)``."""
    fbank = AF.melscale_fbanks(
        power.shape[0], 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    ).to(device=power.device, dtype=power.dtype)
    return 10.0 * torch.log10((fbank.T @ power).clamp(min=AMIN))


def mfcc_from_log_mel(db: torch.Tensor, n_mfcc: int = N_MFCC) -> torch.Tensor:
    """Orthonormal DCT-II of ``db`` (``(n_mels, n_frames)``) -> ``(n_mfcc, n_frames)``."""
    dct: torch.Tensor = AF.create_dct(n_mfcc, db.shape[0], norm="ortho")  # torchaudio is untyped
    return dct.to(device=db.device, dtype=db.dtype).T @ db


def delta(features: torch.Tensor, width: int = DELTA_WIDTH) -> torch.Tensor:
    """First-order deltas along the last axis, as ``librosa.feature.delta(width, order=1, mode='interp')``.

    Args:
        features: shape ``(n_features, n_frames)`` with ``n_frames >= width``.

    Returns:
        same shape, units of ``features`` per frame.
    """
    half = width // 2
    taps = torch.arange(-half, half + 1, device=features.device, dtype=features.dtype)
    # Least-squares slope of a line through `width` frames: sum(k * x[t + k]) / sum(k^2).
    # conv1d computes exactly this correlation, so the taps are not flipped.
    kernel = (taps / (taps**2).sum()).view(1, 1, -1)
    inner = torch.nn.functional.conv1d(features[:, None, :], kernel)[:, 0, :]
    # A line fitted to the first (last) `width` frames has the slope of the first (last) inner value.
    left = inner[:, :1].expand(-1, half)
    right = inner[:, -1:].expand(-1, half)
    return torch.cat([left, inner, right], dim=1)


class MfccExtractor(Extractor):
    """20 MFCCs and their first-order deltas, summarised over frames.

    Features: ``mfcc_mean``, ``mfcc_std``, ``delta_mean``, ``delta_std``: lists of 20 floats
    (coefficient 0 first; population std); ``n_frames``. Inputs shorter than 9 frames
    (about 0.19 s) have no deltas: their delta statistics are zeros and a note says so.
    """

    name = "mfcc"
    sample_rate = SAMPLE_RATE

    def extract(self, audio: torch.Tensor, device: torch.device) -> ExtractorOutput:
        audio = audio.to(device=device, dtype=torch.float32)
        if audio.numel() == 0:
            raise ValueError("MFCCs need at least one sample")
        coefficients = self._coefficients(audio)
        notes: list[str] = []
        if coefficients.shape[1] >= DELTA_WIDTH:
            deltas = delta(coefficients)
        else:
            deltas = torch.zeros_like(coefficients)
            notes.append(f"input shorter than {DELTA_WIDTH} frames: no deltas")
        features = {
            "n_frames": int(coefficients.shape[1]),
            "mfcc_mean": _floats(coefficients.mean(dim=1)),
            "mfcc_std": _floats(coefficients.std(dim=1, correction=0)),
            "delta_mean": _floats(deltas.mean(dim=1)),
            "delta_std": _floats(deltas.std(dim=1, correction=0)),
        }
        return ExtractorOutput(features, notes=notes)

    def _coefficients(self, audio: torch.Tensor) -> torch.Tensor:
        """MFCCs ``(N_MFCC, n_frames)``, computed in blocks of frames.

        The ``top_db`` floor is relative to the loudest cell of the whole input, so the mel
        dB of every block is kept (128 float32 per frame, about 22 kB per second) until
        that maximum is known; the STFTs exist one block at a time.
        """
        n_frames = 1 + audio.numel() // HOP_LENGTH
        window = torch.hann_window(N_FFT, periodic=True, device=audio.device)
        blocks = []
        for first, stop in frame_blocks(
            n_frames, block_frames_of(self.block_s, self.sample_rate, HOP_LENGTH)
        ):
            spec = centred_stft(audio, N_FFT, HOP_LENGTH, window, first, stop)
            blocks.append(mel_db(spec.abs() ** 2, self.sample_rate))
        floor = max(float(b.max()) for b in blocks) - TOP_DB
        return torch.cat([mfcc_from_log_mel(b.clamp(min=floor)) for b in blocks], dim=1)


def _floats(values: torch.Tensor) -> list[float]:
    return [float(v) for v in values.cpu()]
