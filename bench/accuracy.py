"""Accuracy of the pitch and tempo extractors beside their peers, in one run (not a test).

Pitch: raw pitch accuracy (share of voiced reference frames within 50 cents, RPA), voicing
recall (VR) and voicing false alarm (VFA, on the unvoiced lead-in/out) at several SNRs of
white noise, on harmonic tones, a pure sine, vibrato and a glide with known f0, for:
our CPU tracker (swipe-viterbi), our GPU path (CREPE + our decoding, run here on CPU),
librosa.pyin, librosa.yin (no voicing: every frame voiced) and torchcrepe.predict (Viterbi,
periodicity >= 0.21). CREPE capacity: ``--crepe tiny`` (default) or ``full`` (minutes on CPU).

Tempo: drum patterns of known tempo, ours vs librosa.beat.beat_track: Acc1 (within 4 %),
Acc2 (also x2, x3, x1/2, x1/3), share within 0.5 %, and mean absolute BPM error in %.
Then short clips (1 to 3 s of the drum patterns): Acc1/Acc2 per duration and how our
confidence ranks right readings above wrong ones. Then real music, when the development set ``../shared/audio-dev/index.json`` (beside the
repository; a user's clone has none, and the section says so) or ``--dev-set`` exists: per
clip the annotated and estimated tempo, the confidence, and the beat F-measure
(mir_eval.beat.f_measure: a one-to-one matching of estimated to annotated beats within +-70 ms,
F = 2PR/(P+R), no trimming of the first 5 s since the clips are 2-6 s long; only where beats are annotated,
and for "first beats only" annotations only up to the last annotated beat), for ours and
librosa side by side, then Acc1/Acc2 over the clips. Last, ours' and librosa's speed in x
realtime on 60 s.

    PYTHONPATH=job_image .venv/bin/python bench/accuracy.py [--quick] [--crepe tiny|full] [--tempo-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import mir_eval
import numpy as np
import torch
import torchcrepe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "job_image" / "tests"))
from extractor_testing import add_white_noise, drum_pattern, harmonic_tone

from audioproc import samples
from audioproc.extractors import pitch, tempo
from audioproc.extractors.tempo import TempoExtractor
from audioproc.settings import PipelineSettings

SR = 16_000
HOP = 160
FMIN, FMAX = 50.0, 1000.0
LEAD_S = 0.5
DEV_SET = Path(__file__).resolve().parents[2] / "shared" / "audio-dev" / "index.json"
BEAT_WINDOW_S = 0.07
TEMPO_FACTORS = np.array([1, 2, 3, 1 / 2, 1 / 3])

Tracker = Callable[
    [np.ndarray], tuple[np.ndarray, np.ndarray]
]  # audio -> (f0 Hz per 10 ms frame, voiced)


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
        out[name] = (
            np.concatenate([lead, harmonic_tone(f0, SR), lead]),
            np.concatenate([lead, f0, lead]),
        )
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    out["sine 440 Hz"] = (
        np.concatenate([lead, sine, lead]),
        np.concatenate([lead, np.full(n, 440.0), lead]),
    )
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


def scores(
    estimate: np.ndarray, voiced: np.ndarray, truth: np.ndarray
) -> tuple[float, float, float]:
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
    f0, voiced, _ = librosa.pyin(
        audio, fmin=FMIN, fmax=FMAX, sr=SR, frame_length=1024, hop_length=HOP
    )
    return np.nan_to_num(f0), voiced


def librosa_yin(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0 = librosa.yin(audio, fmin=FMIN, fmax=FMAX, sr=SR, frame_length=1024, hop_length=HOP)
    return f0, np.ones(f0.size, dtype=bool)


def torchcrepe_direct(audio: np.ndarray, capacity: str) -> tuple[np.ndarray, np.ndarray]:
    f0, periodicity = torchcrepe.predict(
        torch.tensor(audio, dtype=torch.float32)[None],
        SR,
        HOP,
        FMIN,
        FMAX,
        capacity,
        return_periodicity=True,
        batch_size=512,
        device="cpu",
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
    print(
        f"\nPITCH: {len(signals)} signals of {seconds:.1f} s voiced + {2 * LEAD_S:.1f} s unvoiced; "
        "RPA = raw pitch accuracy (50 cents), VR = voicing recall, VFA = voicing false alarm",
        flush=True,
    )
    header = (
        f"{'tracker':30s}"
        + "".join(f" | {('clean' if s is None else f'{s:g} dB'):>17s}" for s in snrs)
        + " | time"
    )
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
        print(
            f"{name:30s}" + "".join(cells) + f" | {time.perf_counter() - started:5.1f} s",
            flush=True,
        )
    print(f"RPA per signal at {snrs[-1]} dB: " + " / ".join(trackers))
    for i, label in enumerate(signals):
        print(f"  {label:18s} " + " / ".join(f"{worst_snr[name][i]:.3f}" for name in trackers))


def tempo_table(tempi: list[float], seconds: float) -> None:
    extractor = TempoExtractor(PipelineSettings())
    rows = {"ours": [], "librosa.beat.beat_track": []}
    for bpm in tempi:
        audio = add_white_noise(
            drum_pattern(bpm, seconds, tempo.SAMPLE_RATE, seed=int(bpm)), 20.0
        ).astype(np.float32)
        ours = extractor.extract(torch.tensor(audio), torch.device("cpu")).features["bpm"] or 0.0
        theirs = float(np.atleast_1d(librosa.beat.beat_track(y=audio, sr=tempo.SAMPLE_RATE)[0])[0])
        rows["ours"].append((bpm, ours))
        rows["librosa.beat.beat_track"].append((bpm, theirs))
    print(
        f"\nTEMPO: drum patterns of {seconds:.0f} s at {', '.join(f'{b:g}' for b in tempi)} BPM (white noise 20 dB below)"
    )
    print(
        f"{'method':26s} | {'Acc1':>5s} | {'Acc2':>5s} | {'<=0.5%':>6s} | {'mean |err| %':>12s} | estimates"
    )
    for name, pairs in rows.items():
        truth = np.array([p[0] for p in pairs])
        est = np.array([p[1] for p in pairs])
        rel = np.abs(est - truth) / truth
        share1 = np.mean([acc1(t, e) for t, e in zip(truth, est, strict=True)])
        share2 = np.mean([acc2(t, e) for t, e in zip(truth, est, strict=True)])
        within = np.mean(rel <= 0.005)
        print(
            f"{name:26s} | {share1:5.2f} | {share2:5.2f} | {within:6.2f} | {100 * rel.mean():12.2f} | "
            + ", ".join(f"{e:.1f}" for e in est)
        )


def short_clip_table(tempi: list[float], durations: list[float]) -> None:
    """Drum patterns cut to short clips: Acc1/Acc2 per duration, ours beside librosa, and how
    well our confidence ranks right (Acc1) readings above wrong ones over all clips (the share
    of right-wrong pairs in the right order, AUC; 0.5 is chance)."""
    extractor = TempoExtractor(PipelineSettings())
    print(
        f"\nSHORT CLIPS: drum patterns at {', '.join(f'{b:g}' for b in tempi)} BPM "
        "(white noise 20 dB below), cut to each duration"
    )
    print(
        f"{'s':>4s} | {'ours Acc1':>9s} {'Acc2':>5s} {'no BPM':>6s} | {'librosa Acc1':>12s} {'Acc2':>5s}"
    )
    rated: list[tuple[float, bool]] = []
    for seconds in durations:
        hits = {"ours": [0, 0], "librosa": [0, 0]}
        missing = 0
        for bpm in tempi:
            audio = add_white_noise(
                drum_pattern(bpm, seconds, tempo.SAMPLE_RATE, seed=int(bpm)), 20.0
            ).astype(np.float32)
            features = extractor.extract(torch.tensor(audio), torch.device("cpu")).features
            ours = features["bpm"] or 0.0
            missing += features["bpm"] is None
            theirs = float(
                np.atleast_1d(librosa.beat.beat_track(y=audio, sr=tempo.SAMPLE_RATE)[0])[0]
            )
            for name, estimate in (("ours", ours), ("librosa", theirs)):
                hits[name][0] += acc1(bpm, estimate)
                hits[name][1] += acc2(bpm, estimate)
            if features["bpm"] is not None:
                rated.append((features["confidence"], acc1(bpm, ours)))
        n = len(tempi)
        print(
            f"{seconds:4.1f} | {hits['ours'][0]:>7d}/{n} {hits['ours'][1]:>3d}/{n} {missing:>6d} | "
            f"{hits['librosa'][0]:>10d}/{n} {hits['librosa'][1]:>3d}/{n}"
        )
    right = [c for c, ok in rated if ok]
    wrong = [c for c, ok in rated if not ok]
    if right and wrong:
        pairs = [(r > w) + 0.5 * (r == w) for r in right for w in wrong]
        print(
            f"  confidence: right {len(right)} (mean {np.mean(right):.2f}), wrong {len(wrong)} "
            f"(mean {np.mean(wrong):.2f}); right above wrong in {np.mean(pairs):.2f} of the pairs"
        )


def acc1(truth: float, estimate: float) -> bool:
    return abs(estimate - truth) <= 0.04 * truth


def acc2(truth: float, estimate: float) -> bool:
    return bool(np.any(np.abs(estimate - truth * TEMPO_FACTORS) <= 0.04 * truth * TEMPO_FACTORS))


def beat_f_measure(reference: np.ndarray, estimated: np.ndarray) -> float:
    """mir_eval.beat.f_measure (one-to-one matching within +-70 ms, F = 2PR / (P + R)), no trimming."""
    if reference.size == 0 or estimated.size == 0:
        return 0.0  # mir_eval says 0 too, with a warning
    return float(mir_eval.beat.f_measure(reference, estimated, f_measure_threshold=BEAT_WINDOW_S))


def read_beats(path: Path) -> np.ndarray:
    """Beat times (s) from a ``time [label]`` text file; ``#`` lines are comments."""
    rows = [
        line.split()[0]
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return np.array([float(r) for r in rows])


def librosa_tempo_and_beats(audio: np.ndarray) -> tuple[float, np.ndarray]:
    bpm, frames = librosa.beat.beat_track(y=audio, sr=SR)
    return float(np.atleast_1d(bpm)[0]), librosa.frames_to_time(frames, sr=SR)


def ours_tempo_and_beats(audio: np.ndarray) -> tuple[float, np.ndarray, dict]:
    out = TempoExtractor(PipelineSettings()).extract(torch.tensor(audio), torch.device("cpu"))
    return out.features["bpm"] or 0.0, out.artifacts["beats"], out.features


def real_music_table(index_path: Path) -> None:
    """Acc1, Acc2 and beat F-measure on the development clips, ours beside librosa."""
    if not index_path.exists():
        print(
            f"\nREAL MUSIC: no development set at {index_path}: section skipped "
            "(it lives beside the repository, not in a clone)"
        )
        return
    items = json.loads(index_path.read_text())["items"]
    print(
        f"\nREAL MUSIC: {len(items)} clips from {index_path} (a development set: see docs/extractors.md)"
    )
    print(
        f"{'clip':34s} | {'s':>4s} | {'truth':>6s} | {'ours':>6s} {'alt':>6s} {'conf':>5s} {'F':>5s} | "
        f"{'librosa':>7s} {'F':>5s}"
    )
    totals = {"ours": [], "librosa": []}
    confidences = []
    for item in items:
        audio = samples.read_mono(index_path.parent / item["file"], SR).astype(np.float32)
        truth = float(item["tempo_bpm"])
        ours_bpm, ours_beats, features = ours_tempo_and_beats(audio)
        theirs_bpm, theirs_beats = librosa_tempo_and_beats(audio)
        f_ours = f_theirs = "-"
        if item.get("beats"):
            reference = read_beats(index_path.parent / item["beats"])
            if "first beats only" in item.get("beats_note", ""):
                horizon = reference[-1] + BEAT_WINDOW_S
                ours_beats, theirs_beats = (
                    ours_beats[ours_beats <= horizon],
                    theirs_beats[theirs_beats <= horizon],
                )
            f_ours = f"{beat_f_measure(reference, ours_beats):5.2f}"
            f_theirs = f"{beat_f_measure(reference, theirs_beats):5.2f}"
            totals["ours"].append(("F", float(f_ours)))
            totals["librosa"].append(("F", float(f_theirs)))
        for name, bpm in (("ours", ours_bpm), ("librosa", theirs_bpm)):
            totals[name] += [("acc1", acc1(truth, bpm)), ("acc2", acc2(truth, bpm))]
        confidences.append((features["confidence"], acc1(truth, ours_bpm)))
        alt = features.get("bpm_alternative") or 0.0
        print(
            f"{item['file'][:34]:34s} | {audio.size / SR:4.1f} | {truth:6.1f} | {ours_bpm:6.1f} {alt:6.1f} "
            f"{features['confidence']:5.2f} {f_ours:>5s} | {theirs_bpm:7.1f} {f_theirs:>5s}",
            flush=True,
        )
    for name, rows in totals.items():

        def mean(key: str, rows: list = rows) -> float:
            values = [v for k, v in rows if k == key]
            return float(np.mean(values)) if values else float("nan")

        hits1 = sum(v for k, v in rows if k == "acc1")
        hits2 = sum(v for k, v in rows if k == "acc2")
        print(
            f"  {name:8s} Acc1 {hits1}/{len(items)}  Acc2 {hits2}/{len(items)}  mean beat F {mean('F'):.2f}"
        )
    right = [c for c, ok in confidences if ok]
    wrong = [c for c, ok in confidences if not ok]
    if right and wrong:
        print(
            f"  confidence: right (Acc1) {', '.join(f'{c:.2f}' for c in right)}; wrong {', '.join(f'{c:.2f}' for c in wrong)}; "
            f"ranks right above wrong: {min(right) > max(wrong)}"
        )


def tempo_speed(seconds: float = 60.0) -> None:
    """Ours (at the process's torch threads, then 1) and librosa.beat.beat_track on one signal.

    Interleaved, best of 3 each, so that a busy shared machine slows all alike; one torch thread
    shows what the extractor costs where other processes hold the cores (its OpenMP threads
    then wait on each other).
    """
    audio = drum_pattern(120, seconds, tempo.SAMPLE_RATE).astype(np.float32)
    tensor = torch.tensor(audio)
    extractor = TempoExtractor(PipelineSettings())
    extractor.extract(tensor[: 5 * tempo.SAMPLE_RATE], torch.device("cpu"))  # warm-up
    librosa.beat.beat_track(y=audio[: 5 * tempo.SAMPLE_RATE], sr=tempo.SAMPLE_RATE)
    threads = torch.get_num_threads()
    ours = {f"ours, {threads} torch threads": threads, "ours, 1 torch thread": 1}
    runs: dict[str, list[float]] = {name: [] for name in [*ours, "librosa.beat.beat_track"]}
    for _ in range(3):
        for name, n_threads in ours.items():
            torch.set_num_threads(n_threads)
            started = time.perf_counter()
            extractor.extract(tensor, torch.device("cpu"))
            runs[name].append(time.perf_counter() - started)
        torch.set_num_threads(threads)
        started = time.perf_counter()
        librosa.beat.beat_track(y=audio, sr=tempo.SAMPLE_RATE)
        runs["librosa.beat.beat_track"].append(time.perf_counter() - started)
    load = os.getloadavg()[0]
    print(
        f"\nTEMPO SPEED: {seconds:.0f} s drum pattern at 16 kHz, CPU, interleaved, best of 3, "
        f"load average {load:.1f} on {os.cpu_count()} cores"
    )
    for name, times in runs.items():
        print(f"  {name:26s} {min(times):.3f} s = {seconds / min(times):.0f}x realtime")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter signals, fewer SNRs")
    parser.add_argument(
        "--crepe",
        choices=["tiny", "full"],
        default="tiny",
        help="CREPE capacity (full: slow on CPU)",
    )
    parser.add_argument("--tempo-only", action="store_true", help="skip the pitch table")
    parser.add_argument(
        "--dev-set", type=Path, default=DEV_SET, help="index.json of the real-music development set"
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if not args.tempo_only:
        pitch_table(
            1.5 if args.quick else 2.5, [None, 0.0] if args.quick else [None, 10.0, 0.0], args.crepe
        )
    tempo_table(
        [87, 100, 120, 128, 143] if args.quick else [75, 87, 100, 110, 120, 128, 143, 160], 30.0
    )
    short_clip_table([70, 90, 110, 130, 150, 170], [1.0, 1.5, 2.0, 3.0])
    real_music_table(args.dev_set)
    tempo_speed()


if __name__ == "__main__":
    main()
