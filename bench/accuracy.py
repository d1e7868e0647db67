"""Accuracy of the pitch and tempo extractors beside their peers, in one run (not a test).

Pitch: raw pitch accuracy (share of voiced reference frames within 50 cents, RPA), voicing
recall (VR) and voicing false alarm (VFA, on the unvoiced lead-in/out) at several SNRs of
white noise, on harmonic tones, a pure sine, vibrato and a glide with known f0, for:
our CPU tracker (swipe-viterbi), our GPU path (CREPE + our decoding, run here on CPU),
librosa.pyin, librosa.yin (no voicing: every frame voiced) and torchcrepe.predict (Viterbi,
periodicity >= 0.21). CREPE capacity: ``--crepe tiny`` (default) or ``full`` (minutes on CPU).

Tempo: drum patterns of known tempo, ours vs librosa.beat.beat_track: Acc1 (within 4 %),
Acc2 (also x2, x3, x1/2, x1/3), share within 0.5 %, and mean absolute BPM error in %.

    PYTHONPATH=job_image .venv/bin/python bench/accuracy.py [--quick] [--crepe tiny|full]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import torch
import torchcrepe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "job_image" / "tests"))
from extractor_testing import add_white_noise, drum_pattern, harmonic_tone  # noqa: E402

from audioproc.extractors import pitch, tempo  # noqa: E402
from audioproc.extractors.tempo import TempoExtractor  # noqa: E402
from audioproc.settings import PipelineSettings  # noqa: E402

SR = 16_000
HOP = 160
FMIN, FMAX = 50.0, 1000.0
LEAD_S = 0.5

Tracker = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # audio -> (f0 Hz per 10 ms frame, voiced)


def pitch_signals(seconds: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (clean signal, true f0 per sample, 0 where unvoiced): silence, the tone, silence."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    contours = {
        "tone 110 Hz": np.full(n, 110.0),
        "tone 220 Hz": np.full(n, 220.0),
        "tone 660 Hz": np.full(n, 660.0),
        "vibrato 250 Hz": 250 * 2 ** (0.7 / 12 * np.sin(2 * np.pi * 5.5 * t)),
        "glide 120-480 Hz": np.geomspace(120, 480, n),
    }
    lead = np.zeros(int(LEAD_S * SR))
    out = {}
    for name, f0 in contours.items():
        out[name] = (np.concatenate([lead, harmonic_tone(f0, SR), lead]), np.concatenate([lead, f0, lead]))
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    out["sine 440 Hz"] = (np.concatenate([lead, sine, lead]), np.concatenate([lead, np.full(n, 440.0), lead]))
    return out


def noisy(signal: np.ndarray, f0: np.ndarray, snr_db: float | None) -> np.ndarray:
    if snr_db is None:
        return signal
    voiced = f0 > 0
    power = np.mean(signal[voiced] ** 2)
    rng = np.random.default_rng(int(snr_db) + 100)
    return signal + rng.standard_normal(signal.size) * np.sqrt(power / 10 ** (snr_db / 10))


def frame_truth(f0: np.ndarray) -> np.ndarray:
    n_frames = 1 + f0.size // HOP
    return f0[np.minimum(np.arange(n_frames) * HOP, f0.size - 1)]


def scores(estimate: np.ndarray, voiced: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    n = min(estimate.size, truth.size)
    estimate, voiced, truth = estimate[:n], voiced[:n], truth[:n]
    ref_voiced = truth > 0
    safe_est = np.where(voiced & ref_voiced & np.isfinite(estimate) & (estimate > 0), estimate, 1.0)
    close = np.abs(1200 * np.log2(safe_est / np.where(ref_voiced, truth, 1.0))) < 50
    rpa = float((close & voiced & ref_voiced).sum() / ref_voiced.sum())
    recall = float((voiced & ref_voiced).sum() / ref_voiced.sum())
    false_alarm = float((voiced & ~ref_voiced).sum() / max(1, (~ref_voiced).sum()))
    return rpa, recall, false_alarm


def ours_cpu(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    track = pitch.track_swipe(torch.tensor(audio, dtype=torch.float32))
    return track.f0_hz, track.voiced


def ours_gpu_path(audio: np.ndarray, capacity: str) -> tuple[np.ndarray, np.ndarray]:
    track = pitch.track_crepe(torch.tensor(audio, dtype=torch.float32), capacity)
    return track.f0_hz, track.voiced


def librosa_pyin(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0, voiced, _ = librosa.pyin(audio, fmin=FMIN, fmax=FMAX, sr=SR, frame_length=1024, hop_length=HOP)
    return np.nan_to_num(f0), voiced


def librosa_yin(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0 = librosa.yin(audio, fmin=FMIN, fmax=FMAX, sr=SR, frame_length=1024, hop_length=HOP)
    return f0, np.ones(f0.size, dtype=bool)


def torchcrepe_direct(audio: np.ndarray, capacity: str) -> tuple[np.ndarray, np.ndarray]:
    f0, periodicity = torchcrepe.predict(
        torch.tensor(audio, dtype=torch.float32)[None], SR, HOP, FMIN, FMAX, capacity,
        return_periodicity=True, batch_size=512, device="cpu",
    )
    return f0[0].numpy(), periodicity[0].numpy() >= 0.21


def pitch_table(seconds: float, snrs: list[float | None], capacity: str) -> None:
    trackers: dict[str, Tracker] = {
        "ours cpu (swipe-viterbi)": ours_cpu,
        f"ours gpu path (crepe {capacity})": lambda a: ours_gpu_path(a, capacity),
        "librosa.pyin": librosa_pyin,
        "librosa.yin": librosa_yin,
        f"torchcrepe.predict {capacity}": lambda a: torchcrepe_direct(a, capacity),
    }
    signals = pitch_signals(seconds)
    print(f"\nPITCH: {len(signals)} signals of {seconds:.1f} s voiced + {2 * LEAD_S:.1f} s unvoiced; "
          "RPA = raw pitch accuracy (50 cents), VR = voicing recall, VFA = voicing false alarm", flush=True)
    header = f"{'tracker':30s}" + "".join(f" | {('clean' if s is None else f'{s:g} dB'):>17s}" for s in snrs) + " | time"
    print(header)
    print(f"{'':30s}" + " | {:>5s} {:>5s} {:>5s}".format("RPA", "VR", "VFA") * len(snrs))
    worst_snr: dict[str, list[float]] = {}
    for name, tracker in trackers.items():
        cells, started = [], time.perf_counter()
        for snr in snrs:
            results = [
                scores(*tracker(noisy(signal, f0, snr).astype(np.float32)), frame_truth(f0))
                for signal, f0 in signals.values()
            ]
            rpa, recall, false_alarm = np.mean(results, axis=0)
            cells.append(f" | {rpa:5.3f} {recall:5.3f} {false_alarm:5.3f}")
            worst_snr[name] = [r[0] for r in results]
        print(f"{name:30s}" + "".join(cells) + f" | {time.perf_counter() - started:5.1f} s", flush=True)
    print(f"RPA per signal at {snrs[-1]} dB: " + " / ".join(trackers))
    for i, label in enumerate(signals):
        print(f"  {label:18s} " + " / ".join(f"{worst_snr[name][i]:.3f}" for name in trackers))


def tempo_table(tempi: list[float], seconds: float) -> None:
    extractor = TempoExtractor(PipelineSettings())
    rows = {"ours": [], "librosa.beat.beat_track": []}
    for bpm in tempi:
        audio = add_white_noise(drum_pattern(bpm, seconds, tempo.SAMPLE_RATE, seed=int(bpm)), 20.0).astype(np.float32)
        ours = extractor.extract(torch.tensor(audio), torch.device("cpu")).features["bpm"] or 0.0
        theirs = float(np.atleast_1d(librosa.beat.beat_track(y=audio, sr=tempo.SAMPLE_RATE)[0])[0])
        rows["ours"].append((bpm, ours))
        rows["librosa.beat.beat_track"].append((bpm, theirs))
    print(f"\nTEMPO: drum patterns of {seconds:.0f} s at {', '.join(f'{b:g}' for b in tempi)} BPM (white noise 20 dB below)")
    print(f"{'method':26s} | {'Acc1':>5s} | {'Acc2':>5s} | {'<=0.5%':>6s} | {'mean |err| %':>12s} | estimates")
    for name, pairs in rows.items():
        truth = np.array([p[0] for p in pairs])
        est = np.array([p[1] for p in pairs])
        rel = np.abs(est - truth) / truth
        acc1 = np.mean(rel <= 0.04)
        factors = np.array([1, 2, 3, 1 / 2, 1 / 3])
        acc2 = np.mean([np.any(np.abs(e - t * factors) / (t * factors) <= 0.04) for t, e in zip(truth, est, strict=True)])
        within = np.mean(rel <= 0.005)
        print(f"{name:26s} | {acc1:5.2f} | {acc2:5.2f} | {within:6.2f} | {100 * rel.mean():12.2f} | "
              + ", ".join(f"{e:.1f}" for e in est))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter signals, fewer SNRs")
    parser.add_argument("--crepe", choices=["tiny", "full"], default="tiny", help="CREPE capacity (full: slow on CPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pitch_table(1.5 if args.quick else 2.5, [None, 0.0] if args.quick else [None, 10.0, 0.0], args.crepe)
    tempo_table([87, 100, 120, 128, 143] if args.quick else [75, 87, 100, 110, 120, 128, 143, 160], 30.0)


if __name__ == "__main__":
    main()
