"""`make demo`: make a 30 s sample video, run `audioproc process` on it, plot the manifest.

Everything lands under ./out/demo/. The sample is generated (drums at 120 BPM, a melody
with vibrato, and speech when espeak-ng is installed), so the demo needs no download.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from audioproc import samples

SAMPLE_RATE = 44100
DURATION_S = 30.0
BPM = 120.0
OUT = Path("out/demo")


def sample_audio() -> np.ndarray:
    """Drums at BPM, a melody gliding 220 -> 330 Hz with 5 Hz vibrato, speech in the middle."""
    drums = samples.drum_pattern(DURATION_S, SAMPLE_RATE, BPM)
    melody = samples.tone(
        DURATION_S,
        SAMPLE_RATE,
        220.0,
        glide_to=330.0,
        vibrato_hz=5.0,
        vibrato_cents=30.0,
        amplitude=0.3,
    )
    mix = 0.6 * drums + melody
    if samples.espeak_available():
        speech = samples.speech(
            "This is the audio processor demo. Drums, a melody and a voice.", SAMPLE_RATE
        )
        start = int(10.0 * SAMPLE_RATE)
        end = min(mix.size, start + speech.size)
        mix[start:end] += 0.8 * speech[: end - start]
    return (0.9 * mix / np.max(np.abs(mix))).astype(np.float32)


def audioproc(*args: str) -> int:
    command = [sys.executable, "-m", "audioproc", *args]
    print("$ audioproc " + " ".join(args), flush=True)
    return subprocess.run(command, check=False).returncode


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    video = OUT / "sample.mp4"
    samples.write_video(video, sample_audio(), SAMPLE_RATE, size=(160, 90), fps=15)
    print(f"sample video: {video} ({DURATION_S:.0f} s, H.264 + AAC stereo {SAMPLE_RATE} Hz)")

    code = audioproc("process", str(video), "--video-id", "demo", "--out", str(OUT / "results"))
    if code != 0:
        print(f"audioproc process failed with exit code {code}", file=sys.stderr)
        return code
    manifest = OUT / "results" / "demo" / "manifest.json"
    plot = OUT / "demo.png"
    code = audioproc("show", str(manifest), "--plot", str(plot))
    if code != 0:
        return code
    print(f"\nmanifest: {manifest.resolve()}\nplot:     {plot.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
