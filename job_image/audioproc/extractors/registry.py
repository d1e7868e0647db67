"""Loads extractor implementations named in the catalog, once per process."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from audioproc.errors import UnknownExtractorError
from audioproc.extractors.catalog import CATALOG, DEFAULT_EXTRACTORS

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


def get_extractor(name: str, settings: PipelineSettings) -> Extractor:
    if name not in CATALOG:
        raise UnknownExtractorError(name, CATALOG)
    if name not in _instances:
        module_name, class_name = CATALOG[name].module.split(":")
        cls = getattr(import_module(module_name), class_name)
        _instances[name] = cls(settings)
    return _instances[name]


def unavailable_reason(name: str, settings: PipelineSettings) -> str | None:
    """Why extractor ``name`` cannot run here (None: it can). The one availability probe.

    Loads the implementation (it imports the pipeline's stack) and asks it; one that cannot be
    imported or built is unavailable, and the reason says why. Raises UnknownExtractorError.
    """
    if name not in CATALOG:
        raise UnknownExtractorError(name, CATALOG)
    try:
        return get_extractor(name, settings).unavailable_reason()
    except Exception as exc:  # not installed, or a broken model: unavailable, and say why
        return f"cannot load its implementation ({type(exc).__name__}: {exc})"
