"""Pipeline speed: decode-only, the full default set, and the peer pipeline, in one run.

Not a test: it prints numbers, each beside a baseline measured in the same run.

    .venv/bin/python bench/pipeline.py                      # 10-minute MP4, CPU, peers
    .venv/bin/python bench/pipeline.py --duration 60 --repeats 1
    .venv/bin/python bench/pipeline.py --files 100 --device cuda --jobs 8 --no-peers   # GPU report
    .venv/bin/python bench/pipeline.py --memory-hours 2 --no-peers                     # peak RSS

The input is generated (drums at 120 BPM plus a melody with vibrato, AAC stereo 44.1 kHz
in MP4 with a small H.264 video stream) and cached under out/bench/.

Goals (issue 2), as ratios measured here:
- full default set (decode included) >= 20x faster than the peer pipeline with torchcrepe tiny;
- full default set <= 6x the decode-only time.
Slow peers (pyin, torchcrepe) run on the first --peer-clip-s seconds and are scaled to the
whole file (they are linear in the input length); the output says so.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from audioproc import samples
from audioproc.decode import decode_audio
from audioproc.extractors.catalog import DEFAULT_EXTRACTORS
from audioproc.settings import PipelineSettings

# Torch, librosa and the runner are imported inside the functions: decode worker processes
# import this module again (as multiprocessing does with __main__) and must stay light.

SAMPLE_RATE = 44100
CACHE = Path("out/bench")


# --------------------------------------------------------------------------- media


def bench_media(duration_s: float, *, video: bool = True) -> Path:
    """A cached MP4 (or M4A) of ``duration_s`` seconds: drums at 120 BPM and a melody."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"bench-{int(duration_s)}s.{'mp4' if video else 'm4a'}"
    if not path.exists():
        started = time.perf_counter()
        chunks = _music_chunks(duration_s)
        if video:
            samples.write_video(path, chunks, SAMPLE_RATE, fps=5, size=(64, 48))
        else:
            samples.write_audio(path, chunks, SAMPLE_RATE, channels=2)
        print(f"generated {path} in {time.perf_counter() - started:.0f} s")
    return path


def _music_chunks(duration_s: float, chunk_s: float = 60.0):
    """Stereo 60 s chunks: drums (120 BPM) left-heavy, melody (vibrato) right-heavy."""
    drums = samples.drum_pattern(chunk_s, SAMPLE_RATE, 120.0)  # 60 s: a whole number of beats
    remaining = duration_s
    index = 0
    while remaining > 0:
        seconds = min(chunk_s, remaining)
        n = round(seconds * SAMPLE_RATE)
        melody = samples.tone(
            seconds,
            SAMPLE_RATE,
            196.0 * 2 ** ((index % 5) / 12),
            vibrato_hz=5.0,
            vibrato_cents=40.0,
            amplitude=0.3,
        )
        yield np.stack([0.6 * drums[:n] + 0.2 * melody, 0.3 * drums[:n] + 0.4 * melody])
        remaining -= seconds
        index += 1


# --------------------------------------------------------------------------- timing


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def row(label: str, seconds: float, audio_s: float, note: str = "") -> None:
    print(f"  {label:<60} {seconds:9.2f} s   {audio_s / seconds:9.1f}x realtime  {note}")


# --------------------------------------------------------------------------- ours


def extractor_rates(names: list[str], settings: PipelineSettings) -> set[int]:
    from audioproc.extractors.registry import get_extractor

    return {get_extractor(n, settings).sample_rate for n in names} or {16000}


def run_ours(
    paths: list[Path], names: list[str], device: str, jobs: int, settings: PipelineSettings
) -> dict[str, float]:
    """Run the pipeline on ``paths``; return each extractor's total seconds (from the manifests)."""
    from audioproc.runner import ItemRequest, process_items

    with tempfile.TemporaryDirectory() as out:
        items = [ItemRequest(str(p), f"bench-{i}", names) for i, p in enumerate(paths)]
        results = process_items(items, out, device=device, settings=settings, jobs=jobs)
        failed = [(r.video_id, r.error) for r in results if r.status != "ok"]
        broken = [
            (e.name, e.error)
            for r in results
            if r.manifest
            for e in r.manifest.extractors
            if e.status != "ok"
        ]
        if failed or broken:
            raise SystemExit(f"the pipeline failed: {failed or broken}")
    seconds: dict[str, float] = {}
    for result in results:
        for record in result.manifest.extractors:
            seconds[record.name] = seconds.get(record.name, 0.0) + record.duration_ms / 1000
    return seconds


def decode_in_processes(
    paths: list[Path], rates: set[int], jobs: int, settings: PipelineSettings
) -> None:
    """Decode-only throughput with ``jobs`` processes, handing audio over as the runner does."""
    from concurrent.futures import ProcessPoolExecutor

    from audioproc.fetch import SpilledAudio, fetch_to_files, load_spilled
    from audioproc.runner import worker_context

    with ProcessPoolExecutor(jobs, mp_context=worker_context()) as pool:
        futures = [pool.submit(fetch_to_files, str(p), rates, settings) for p in paths]
        for future in futures:
            outcome = future.result()
            if not isinstance(outcome, SpilledAudio):
                raise SystemExit(f"decode failed: {outcome}")
            load_spilled(outcome)


# --------------------------------------------------------------------------- peers


def peer_timings(
    signals: dict[int, np.ndarray], audio_s: float, clip_s: float, repeats: int
) -> dict[str, float]:
    """Seconds per peer step for the whole file (slow pitch trackers scaled from a clip)."""
    import librosa
    import pyloudnorm
    import torch
    import torchcrepe

    y22 = signals[22050]
    y16 = signals[16000]
    native = signals[SAMPLE_RATE]
    timings = {
        "librosa features (centroid, bandwidth, roll-off, flatness, zcr, 20 MFCC + deltas)": best_of(
            repeats, lambda: _librosa_features(librosa, y22)
        ),
        "librosa.beat.beat_track": best_of(
            repeats, lambda: librosa.beat.beat_track(y=y22, sr=22050)
        ),
        "pyloudnorm integrated loudness (44.1 kHz)": best_of(
            repeats,
            lambda: pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(native.astype(np.float64)),
        ),
    }
    clip = min(clip_s, audio_s)
    scale = audio_s / clip
    y22_clip = y22[: int(clip * 22050)]
    y16_clip = torch.from_numpy(y16[: int(clip * 16000)].copy())[None]
    timings[f"librosa.pyin (scaled from {clip:.0f} s)"] = scale * best_of(
        1, lambda: librosa.pyin(y22_clip, fmin=50.0, fmax=1000.0, sr=22050, hop_length=220)
    )
    timings[f"torchcrepe tiny, 10 ms hop (scaled from {clip:.0f} s)"] = scale * best_of(
        1,
        lambda: torchcrepe.predict(
            y16_clip,
            16000,
            hop_length=160,
            fmin=50.0,
            fmax=1000.0,
            model="tiny",
            batch_size=1024,
            device="cpu",
        ),
    )
    return timings


def _librosa_features(librosa, y: np.ndarray) -> None:
    sr = 22050
    librosa.feature.spectral_centroid(y=y, sr=sr)
    librosa.feature.spectral_bandwidth(y=y, sr=sr)
    librosa.feature.spectral_rolloff(y=y, sr=sr)
    librosa.feature.spectral_flatness(y=y)
    librosa.feature.zero_crossing_rate(y)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    librosa.feature.delta(mfcc)


# --------------------------------------------------------------------------- memory


def peak_rss_of_decode(path: Path, rates: set[int]) -> float:
    """Peak RSS in MiB of a fresh process that decodes ``path`` at ``rates``."""
    code = (
        "import resource, sys; from audioproc.decode import decode_audio; "
        f"d = decode_audio({str(path)!r}, {sorted(rates)!r}, max_duration_s=1e6); "
        "print(d.duration_s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    return int(out[1]) / 1024


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of audio per file (default 600)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per measurement; the best counts"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    parser.add_argument(
        "--files", type=int, default=1, help="files per run (the GPU report uses 100)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="input workers of the pipeline")
    parser.add_argument(
        "--extractors", default=None, help="comma-separated; default: the standard set"
    )
    parser.add_argument("--no-peers", action="store_true", help="skip the peer pipeline")
    parser.add_argument(
        "--peer-clip-s", type=float, default=60.0, help="clip for the slow pitch peers"
    )
    parser.add_argument(
        "--memory-hours",
        type=float,
        default=0.0,
        help="also measure peak RSS of decoding this long",
    )
    args = parser.parse_args()

    from audioproc.extractors.registry import usable_extractors

    settings = PipelineSettings(allowed_roots=[Path.cwd(), Path(tempfile.gettempdir())])
    asked = args.extractors.split(",") if args.extractors else list(DEFAULT_EXTRACTORS)
    names, unusable = usable_extractors(asked, settings)
    for name, why in unusable.items():
        print(f"note: {name} is not available and is left out: {why}")
    rates = extractor_rates(names, settings)
    path = bench_media(args.duration)
    paths = [path] * args.files  # the same file, decoded afresh for each item
    audio_s = args.duration * args.files

    print(
        f"\ninput: {path} ({args.duration:.0f} s, AAC stereo 44.1 kHz in MP4) x {args.files} file(s); "
        f"extractors: {', '.join(names) or '(none)'}; analysis rates: {sorted(rates)} Hz; device: {args.device}"
    )
    decode_raw = best_of(
        args.repeats, lambda: [decode_audio(p, [SAMPLE_RATE], max_duration_s=1e6) for p in paths]
    )
    decode = best_of(
        args.repeats, lambda: [decode_audio(p, rates, max_duration_s=1e6) for p in paths]
    )
    print("\nours")
    row("decode only (PyAV, mono at the native rate)", decode_raw, audio_s)
    row(
        "decode + resample to the analysis rates",
        decode,
        audio_s,
        "<- the floor" if args.jobs == 1 else "",
    )
    if args.jobs > 1:
        decode = best_of(
            args.repeats, lambda: decode_in_processes(paths, rates, args.jobs, settings)
        )
        row(f"decode + resample, {args.jobs} processes", decode, audio_s, "<- the floor")
    ours = None
    if names:
        run_ours(
            paths[:1], names, args.device, args.jobs, settings
        )  # warm-up: model loads, kernels
        per_extractor: dict[str, float] = {}
        ours = best_of(
            args.repeats,
            lambda: per_extractor.update(run_ours(paths, names, args.device, args.jobs, settings)),
        )
        row(
            "full set, decode included (process_items)",
            ours,
            audio_s,
            f"= {ours / decode:.1f}x decode (goal <= 6x)",
        )
        for name, seconds in per_extractor.items():
            row(f"  of which {name} (last run)", seconds, audio_s)

    if not args.no_peers:
        signals = decode_audio(path, {16000, 22050, SAMPLE_RATE}, max_duration_s=1e6).signals
        timings = peer_timings(signals, args.duration, args.peer_clip_s, args.repeats)
        print("\npeers (given our decoder's output; times for the whole file)")
        for label, seconds in timings.items():
            row(label, seconds, args.duration)
        common = sum(v for k, v in timings.items() if "pyin" not in k and "torchcrepe" not in k)
        per_file_decode = decode / args.files
        peer_crepe = (
            per_file_decode + common + next(v for k, v in timings.items() if "torchcrepe" in k)
        )
        peer_pyin = per_file_decode + common + next(v for k, v in timings.items() if "pyin" in k)
        row("peer pipeline with torchcrepe tiny (decode incl.)", peer_crepe, args.duration)
        row("peer pipeline with pyin (decode incl.)", peer_pyin, args.duration)
        if ours is not None:
            per_file_ours = ours / args.files
            print(
                f"\nratios: peers(torchcrepe tiny) / ours = {peer_crepe / per_file_ours:.1f}x (goal >= 20x); "
                f"peers(pyin) / ours = {peer_pyin / per_file_ours:.1f}x; ours / decode = {ours / decode:.1f}x "
                "(goal <= 6x)"
            )

    if args.memory_hours:
        long_path = bench_media(args.memory_hours * 3600, video=False)
        print(
            f"\npeak RSS decoding {args.memory_hours:g} h ({long_path.name}) at {sorted(rates)} Hz: "
            f"{peak_rss_of_decode(long_path, rates):.0f} MiB "
            f"(outputs alone: {4 * args.memory_hours * 3600 * sum(rates) / 2**20:.0f} MiB)"
        )
    print(
        f"\nthis process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
