"""A figure of one manifest: waveform with beats, loudness over time, pitch contour.

Data come from the artifacts beside the manifest (``.npy``); the waveform from decoding the
input again when it is still reachable (else that panel is left out). Time-series
artifacts are drawn over the audio's duration (frame ``i`` of ``n`` at ``i * duration / n``),
event artifacts (beats) as vertical lines at their times in seconds.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audioproc.models.manifest import ExtractorRecord, Manifest
from audioproc.settings import PipelineSettings
from audioproc.storage import read_bytes, sibling_uri

if TYPE_CHECKING:
    from matplotlib.axes import Axes  # matplotlib itself is imported when a plot is drawn

log = logging.getLogger(__name__)

_WAVEFORM_RATE = 8000  # Hz: plenty for a picture of the envelope

# (extractor, artifact) -> (hop in s, time of element 0 in s), as the extractors document them.
# Others are spread evenly over the duration.
_TIME_AXES: dict[tuple[str, str], tuple[float, float]] = {
    ("loudness", "short_term_lufs"): (0.1, 1.5),  # 3 s windows every 100 ms: at their centres
    ("pitch", "f0_hz"): (0.01, 0.0),  # 10 ms hop
}


def plot_manifest(
    manifest: Manifest, manifest_uri: str, path: Path, settings: PipelineSettings
) -> list[str]:
    """Draw the figure to ``path`` (PNG); return the names of the panels drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = manifest.audio.duration_s
    waveform = _waveform(manifest.input_uri, settings)
    beats = _artifact(manifest, manifest_uri, "tempo", "beat")
    loudness = {
        name: (_times_of("loudness", name, array.size, duration), array)
        for name, array in _artifacts(manifest, manifest_uri, "loudness").items()
        if array.ndim == 1 and name != "peak_envelope"
    }  # linear peaks, not LUFS
    f0 = _artifact(manifest, manifest_uri, "pitch", "f0")
    voicing = _artifact(manifest, manifest_uri, "pitch", "voic")

    panels: list[tuple[str, Callable[[Any], None]]] = []
    if waveform is not None or beats is not None:
        panels.append(
            (
                "waveform" if waveform is not None else "beats",
                lambda ax: _draw_waveform(ax, waveform, beats),
            )
        )
    if loudness:
        panels.append(("loudness", lambda ax: _draw_series(ax, loudness, "loudness (LUFS)")))
    if f0 is not None:
        panels.append(("pitch", lambda ax: _draw_pitch(ax, f0, voicing, duration)))

    fig, axes = plt.subplots(
        max(1, len(panels)), 1, figsize=(11, 2.4 * max(1, len(panels))), sharex=True, squeeze=False
    )
    for ax, (_, draw) in zip(axes[:, 0], panels, strict=False):
        draw(ax)
    if not panels:
        axes[0, 0].text(
            0.5,
            0.5,
            "nothing to plot: no waveform, loudness, pitch or beat data",
            ha="center",
            va="center",
            transform=axes[0, 0].transAxes,
        )
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(0, max(duration, 1e-3))
    fig.suptitle(f"{manifest.video_id} ({duration:.1f} s, {manifest.device})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [name for name, _ in panels]


def _waveform(input_uri: str, settings: PipelineSettings) -> np.ndarray | None:
    from audioproc.decode import decode_audio
    from audioproc.errors import AudioProcError
    from audioproc.sources import open_input

    try:
        with open_input(input_uri, settings) as path:
            return decode_audio(
                path, [_WAVEFORM_RATE], max_duration_s=settings.max_duration_s, uri=input_uri
            ).signals[_WAVEFORM_RATE]
    except (AudioProcError, OSError) as exc:
        log.info("no waveform panel: %s", exc)
        return None


def _record(manifest: Manifest, name: str) -> ExtractorRecord | None:
    return next((r for r in manifest.extractors if r.name == name and r.status == "ok"), None)


def _artifacts(manifest: Manifest, manifest_uri: str, extractor: str) -> dict[str, np.ndarray]:
    record = _record(manifest, extractor)
    arrays = {}
    for name, file_name in record.artifacts.items() if record else []:
        try:
            arrays[name] = np.load(
                io.BytesIO(read_bytes(sibling_uri(manifest_uri, file_name))), allow_pickle=False
            )
        except (OSError, ValueError) as exc:
            log.info("artifact %s not readable: %s", file_name, exc)
    return arrays


def _artifact(
    manifest: Manifest, manifest_uri: str, extractor: str, name_part: str
) -> np.ndarray | None:
    """The first artifact of ``extractor`` whose name contains ``name_part``."""
    for name, array in _artifacts(manifest, manifest_uri, extractor).items():
        if name_part in name.lower():
            return np.asarray(array, dtype=np.float64)
    return None


def _times_of(extractor: str, artifact: str, n: int, duration: float) -> np.ndarray:
    """Times in seconds of the ``n`` elements of a time-series artifact."""
    hop, start = _TIME_AXES.get((extractor, artifact), (duration / max(n, 1), 0.0))
    return start + hop * np.arange(n)


def _draw_waveform(ax: Axes, waveform: np.ndarray | None, beats: np.ndarray | None) -> None:
    if waveform is not None:
        ax.plot(np.arange(waveform.size) / _WAVEFORM_RATE, waveform, linewidth=0.3, color="0.3")
        ax.set_ylabel("amplitude")
    if beats is not None:
        for beat in np.ravel(beats):
            ax.axvline(beat, color="tab:red", linewidth=0.6, alpha=0.7)
        ax.plot([], [], color="tab:red", label=f"beats ({np.size(beats)})")
        ax.legend(loc="upper right", fontsize="small")


def _draw_series(ax: Axes, series: dict[str, tuple[np.ndarray, np.ndarray]], label: str) -> None:
    for name, (times, values) in series.items():
        values = np.where(
            np.isfinite(values) & (values > -100), values, np.nan
        )  # silence floor: a gap
        ax.plot(times, values, label=name, linewidth=0.9)
    ax.set_ylabel(label)
    ax.legend(loc="upper right", fontsize="small")


def _draw_pitch(ax: Axes, f0: np.ndarray, voicing: np.ndarray | None, duration: float) -> None:
    f0 = np.ravel(f0).astype(np.float64)
    voiced = np.isfinite(f0) & (f0 > 0)
    if voicing is not None and np.size(voicing) == f0.size:
        voicing = np.ravel(voicing)
        voiced &= voicing > 0.5 if voicing.dtype != bool else voicing
    times = _times_of("pitch", "f0_hz", f0.size, duration)
    ax.plot(times, np.where(voiced, f0, np.nan), color="tab:blue", linewidth=1.0)
    ax.set_ylabel("f0 (Hz)")
