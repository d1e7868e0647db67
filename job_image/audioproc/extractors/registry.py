"""Loads extractor implementations named in the catalog, once per process."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import TYPE_CHECKING

from audioproc.errors import UnknownExtractorError
from audioproc.extractors.catalog import CATALOG, DEFAULT_EXTRACTORS, unavailable_reason

if TYPE_CHECKING:
    from audioproc.extractors.base import Extractor
    from audioproc.settings import PipelineSettings


_instances: dict[str, Extractor] = {}


def resolve_names(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """The extractors to run: the standard set when ``names`` is empty; unknown names raise."""
    if not names:
        return list(DEFAULT_EXTRACTORS)
    for name in names:
        if name not in CATALOG:
            raise UnknownExtractorError(name, CATALOG)
    return list(dict.fromkeys(names))


def usable_extractors(
    names: Iterable[str], settings: PipelineSettings
) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into those that can run here and {name: why not} for the others.

    Judged from the catalog and the settings (``catalog.unavailable_reason``), without importing
    any implementation: an implementation that fails to import is found when it runs, and is
    recorded as that extractor's error in the manifest. Unknown names raise
    UnknownExtractorError.
    """
    usable: list[str] = []
    unusable: dict[str, str] = {}
    for name in names:
        if name not in CATALOG:
            raise UnknownExtractorError(name, CATALOG)
        reason = unavailable_reason(CATALOG[name], settings)
        if reason is None:
            usable.append(name)
        else:
            unusable[name] = reason
    return usable, unusable


def get_extractor(name: str, settings: PipelineSettings) -> Extractor:
    if name not in CATALOG:
        raise UnknownExtractorError(name, CATALOG)
    if name not in _instances:
        module_name, class_name = CATALOG[name].module.split(":")
        cls = getattr(import_module(module_name), class_name)
        _instances[name] = cls(settings)
    return _instances[name]
