"""What extractors exist, described without importing them.

The facade and the operator validate extractor names and list them from this table;
the pipeline loads an implementation only when it runs (see ``registry.py``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractorInfo:
    name: str
    version: str
    devices: tuple[str, ...]
    description: str
    module: str  # "package.module:ClassName" of the implementation
    default: bool = True  # part of the standard set run when a request names none


CATALOG: dict[str, ExtractorInfo] = {
    info.name: info
    for info in (
        ExtractorInfo(
            "loudness", "1.0.0", ("cpu", "cuda"),
            "Integrated loudness (LUFS, ITU-R BS.1770-4), loudness range, true peak, RMS.",
            "audioproc.extractors.loudness:LoudnessExtractor",
        ),
        ExtractorInfo(
            "spectral", "1.0.0", ("cpu", "cuda"),
            "Spectral centroid, bandwidth, roll-off, flatness and zero-crossing rate statistics.",
            "audioproc.extractors.spectral:SpectralExtractor",
        ),
        ExtractorInfo(
            "mfcc", "1.0.0", ("cpu", "cuda"),
            "20 MFCCs and their deltas: mean and standard deviation.",
            "audioproc.extractors.mfcc:MfccExtractor",
        ),
        ExtractorInfo(
            "tempo", "1.2.0", ("cpu", "cuda"),
            "Tempo (BPM) with confidence and an alternative tempo (its relative strength), beat times "
            "that follow tempo changes, beat count and tempo stability.",
            "audioproc.extractors.tempo:TempoExtractor",
        ),
        ExtractorInfo(
            "pitch", "1.0.0", ("cpu", "cuda"),
            "f0 contour at a 10 ms hop with voicing, and its statistics; "
            "neural tracker (CREPE) on GPU, classical tracker on CPU.",
            "audioproc.extractors.pitch:PitchExtractor",
        ),
        ExtractorInfo(
            "clap", "1.0.0", ("cpu", "cuda"),
            "512-d LAION-CLAP audio embedding from a local checkpoint (CLAP_CHECKPOINT).",
            "audioproc.extractors.clap:ClapExtractor",
            default=False,
        ),
    )
}

EXTRACTOR_NAMES: tuple[str, ...] = tuple(CATALOG)
DEFAULT_EXTRACTORS: tuple[str, ...] = tuple(n for n, i in CATALOG.items() if i.default)
