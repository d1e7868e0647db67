"""What extractors exist, described without importing them.

The facade and the operator validate extractor names and list them from this table;
the pipeline loads an implementation only when it runs (see ``registry.py``). Whether an
extractor can run here is judged from this table and the settings alone
(:func:`unavailable_reason`), so listing extractors and refusing an unavailable one never
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audioproc.settings import PipelineSettings


@dataclass(frozen=True)
class ModelFile:
    """A local model file an extractor loads, named by a setting."""

    setting: str  # the PipelineSettings field (its environment variable is the upper-cased name)
    what: str  # e.g. "CLAP checkpoint"
    hint: (
        str  # what the setting must name, e.g. "a laion-clap .pt file or a Hugging Face directory"
    )


@dataclass(frozen=True)
class ExtractorInfo:
    name: str
    version: str
    devices: tuple[str, ...]
    description: str
    module: str  # "package.module:ClassName" of the implementation
    default: bool = True  # part of the standard set run when a request names none
    model: ModelFile | None = None  # the model it needs; None: it needs no file


def unavailable_reason(
    info: ExtractorInfo, settings: PipelineSettings, check_files: bool = True
) -> str | None:
    """Why ``info``'s extractor cannot run with ``settings``, or None when it can.

    Judged from the catalog and the settings, without importing the implementation: a model
    file that is not configured, or (with ``check_files``) configured but absent on this
    machine. The Kubernetes facade passes ``check_files=False``: the file is on the pods.
    """
    if info.model is None:
        return None
    path = getattr(settings, info.model.setting)
    if path is None:
        return f"no {info.model.what} configured (set {info.model.setting.upper()} to {info.model.hint})"
    if check_files and not Path(path).exists():
        return f"{info.model.what} {path} does not exist"
    return None


CATALOG: dict[str, ExtractorInfo] = {
    info.name: info
    for info in (
        ExtractorInfo(
            "loudness",
            "1.1.0",
            ("cpu", "cuda"),
            "Integrated loudness (LUFS, ITU-R BS.1770-4), loudness range, true peak, RMS; "
            "short-term loudness curve and peak envelope.",
            "audioproc.extractors.loudness:LoudnessExtractor",
        ),
        ExtractorInfo(
            "spectral",
            "1.0.0",
            ("cpu", "cuda"),
            "Spectral centroid, bandwidth, roll-off, flatness and zero-crossing rate statistics.",
            "audioproc.extractors.spectral:SpectralExtractor",
        ),
        ExtractorInfo(
            "mfcc",
            "1.0.0",
            ("cpu", "cuda"),
            "20 MFCCs and their deltas: mean and standard deviation.",
            "audioproc.extractors.mfcc:MfccExtractor",
        ),
        ExtractorInfo(
            "tempo",
            "1.3.0",
            ("cpu", "cuda"),
            "Tempo (BPM) with confidence and an alternative tempo (its relative strength), beat times "
            "that follow tempo changes, beat count and tempo stability.",
            "audioproc.extractors.tempo:TempoExtractor",
        ),
        ExtractorInfo(
            "pitch",
            "1.0.0",
            ("cpu", "cuda"),
            "f0 contour at a 10 ms hop with voicing, and its statistics; "
            "neural tracker (CREPE) on GPU, classical tracker on CPU.",
            "audioproc.extractors.pitch:PitchExtractor",
        ),
        ExtractorInfo(
            "clap",
            "1.0.0",
            ("cpu", "cuda"),
            "512-d LAION-CLAP audio embedding from a local checkpoint (CLAP_CHECKPOINT).",
            "audioproc.extractors.clap:ClapExtractor",
            default=False,
            model=ModelFile(
                "clap_checkpoint",
                "CLAP checkpoint",
                "a laion-clap .pt file or a Hugging Face directory",
            ),
        ),
    )
}

EXTRACTOR_NAMES: tuple[str, ...] = tuple(CATALOG)
DEFAULT_EXTRACTORS: tuple[str, ...] = tuple(n for n, i in CATALOG.items() if i.default)
