"""The extractor catalog as this deployment can run it (GET /extractors)."""

from __future__ import annotations

from audioproc.extractors.catalog import CATALOG, unavailable_reason
from audioproc_api.schemas import ExtractorEntry
from audioproc_api.settings import ApiSettings


def extractor_entries(settings: ApiSettings, gpu: bool, probe: bool) -> list[ExtractorEntry]:
    """Every catalog entry with whether it can run, judged from the catalog and the settings
    (no implementation is imported). ``probe``: also check that model files exist on this
    machine (local backend); the kubernetes facade cannot see the pods' files, so it checks
    only that the settings the chart gives both name them."""
    entries = []
    for name, info in CATALOG.items():
        reason = unavailable_reason(info, settings, check_files=probe)
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
