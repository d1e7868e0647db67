"""Speed of each extractor on a 10-minute signal (CPU by default), beside the peer a user would reach for.

Prints wall time and realtime factor (audio seconds per wall second) for each of our
extractors and, measured in the same run on the same signal, its peer: pyloudnorm,
librosa spectral features, librosa MFCC + delta, librosa.beat.beat_track, librosa.yin,
and (on a 30 s excerpt, they are slow) librosa.pyin and torchcrepe tiny. The signal is a
drum pattern plus a vibrato tone plus noise, generated directly at each extractor's rate
(resampling is the pipeline's cost, measured in bench/pipeline.py). Not a test.

    PYTHONPATH=job_image .venv/bin/python bench/extractors.py [--minutes 10] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import pyloudnorm
import torch
import torchcrepe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "job_image" / "tests"))
from extractor_testing import drum_pattern, harmonic_tone

from audioproc.extractors.registry import get_extractor
from audioproc.settings import PipelineSettings


def test_signal(seconds: float, sample_rate: int) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    drums = np.tile(drum_pattern(120, 8.0, sample_rate), int(np.ceil(seconds / 8)))[: t.size]
    tone = harmonic_tone(220 * 2 ** (0.5 / 12 * np.sin(2 * np.pi * 5 * t)), sample_rate)
    rng = np.random.default_rng(0)
    return (0.5 * drums + 0.4 * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    seconds = args.minutes * 60
    device = torch.device(args.device)
    settings = PipelineSettings()
    print(f"{seconds:.0f} s signal, device {device}, torch threads {torch.get_num_threads()}")
    print(
        f"{'extractor':10s} | {'ours s':>7s} | {'ours x RT':>9s} | {'peer':34s} | {'peer s':>7s} | {'peer x RT':>9s}"
    )

    signals: dict[int, np.ndarray] = {}
    # extractor -> (peer's label, peer called as peer(signal, sample_rate))
    peers: dict[str, tuple[str, Callable[[np.ndarray, int], object]]] = {
        "loudness": (
            "pyloudnorm integrated_loudness",
            lambda y, sr: pyloudnorm.Meter(sr).integrated_loudness(y.astype(np.float64)),
        ),
        "spectral": ("librosa centroid+bw+rolloff+flat+zcr", _librosa_spectral),
        "mfcc": (
            "librosa mfcc + delta",
            lambda y, sr: librosa.feature.delta(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)),
        ),
        "tempo": ("librosa.beat.beat_track", lambda y, sr: librosa.beat.beat_track(y=y, sr=sr)),
        "pitch": (
            "librosa.yin (no voicing)",
            lambda y, sr: librosa.yin(y, fmin=50, fmax=1000, sr=sr, hop_length=160),
        ),
    }
    for name in ("loudness", "spectral", "mfcc", "tempo", "pitch"):
        extractor = get_extractor(name, settings)
        sr = extractor.sample_rate
        y = signals.setdefault(sr, test_signal(seconds, sr))
        audio = torch.from_numpy(y).to(device)
        extractor.extract(audio[: 5 * sr], device)  # warm-up (kernels, caches)
        ours = timed(lambda: extractor.extract(audio, device))  # noqa: B023
        label, peer = peers[name]
        # The lambdas run at once, inside this iteration: binding the loop variables late is safe.
        theirs = timed(lambda: peer(y, sr))  # noqa: B023
        print(
            f"{name:10s} | {ours:7.2f} | {seconds / ours:9.0f} | {label:34s} | {theirs:7.2f} | {seconds / theirs:9.0f}"
        )

    excerpt_s = 30.0
    y16 = signals[16_000][: int(excerpt_s * 16_000)]
    pyin = timed(
        lambda: librosa.pyin(y16, fmin=50, fmax=1000, sr=16_000, frame_length=1024, hop_length=160)
    )
    crepe = timed(
        lambda: torchcrepe.predict(
            torch.from_numpy(y16)[None], 16_000, 160, 50, 1000, "tiny", batch_size=512, device="cpu"
        )
    )
    print(
        f"{'pitch':10s} | {'':7s} | {'':9s} | {'librosa.pyin (30 s excerpt)':34s} | {pyin:7.2f} | {excerpt_s / pyin:9.1f}"
    )
    print(
        f"{'pitch':10s} | {'':7s} | {'':9s} | {'torchcrepe tiny (30 s excerpt)':34s} | {crepe:7.2f} | {excerpt_s / crepe:9.1f}"
    )


def _librosa_spectral(y: np.ndarray, sr: int) -> None:
    S = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    librosa.feature.spectral_centroid(S=S, sr=sr)
    librosa.feature.spectral_bandwidth(S=S, sr=sr)
    librosa.feature.spectral_rolloff(S=S, sr=sr)
    librosa.feature.spectral_flatness(S=S)
    librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=512)


if __name__ == "__main__":
    main()
