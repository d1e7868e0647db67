"""Feature extractors. ``catalog`` describes them; ``registry`` loads them."""

from audioproc.extractors.catalog import CATALOG, DEFAULT_EXTRACTORS, EXTRACTOR_NAMES, ExtractorInfo

__all__ = ["CATALOG", "DEFAULT_EXTRACTORS", "EXTRACTOR_NAMES", "ExtractorInfo"]
