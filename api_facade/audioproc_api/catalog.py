"""The extractor catalog as this deployment can run it (GET /extractors)."""

from __future__ import annotations

from audioproc.extractors.catalog import CATALOG, ExtractorInfo
from audioproc_api.schemas import ExtractorEntry
from audioproc_api.settings import ApiSettings


def _probe(name: str, settings: ApiSettings) -> str | None:
    """Ask the implementation why it cannot run here (local backend: the pipeline is installed)."""
    from audioproc.extractors.registry import unavailable_reason

    return unavailable_reason(name, settings)


def _configured(info: ExtractorInfo, settings: ApiSettings) -> str | None:
    """Without the pipeline installed (the kubernetes facade image), judge from the settings
    the chart gives both the facade and the pods."""
    if info.name == "clap" and settings.clap_checkpoint is None:
        return "no CLAP checkpoint configured (CLAP_CHECKPOINT)"
    return None


def extractor_entries(settings: ApiSettings, gpu: bool, probe: bool) -> list[ExtractorEntry]:
    entries = []
    for name, info in CATALOG.items():
        reason = _probe(name, settings) if probe else _configured(info, settings)
        entries.append(
            ExtractorEntry(
                name=name,
                version=info.version,
                device="cuda" if gpu and "cuda" in info.devices else "cpu",
                devices=list(info.devices),
                description=info.description,
                default=info.default,
                available=reason is None,
                reason=reason,
            )
        )
    return entries
