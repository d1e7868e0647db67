"""The light parts of the pipeline the facade uses: input validation and manifest reading.

Contract (docs/architecture.md): ``audioproc.sources.validate_uri`` and
``audioproc.storage.read_manifest`` import nothing heavy. ``validate_uri`` raises only
``InputError`` (its message says what is wrong), whatever string it is given.
"""

from __future__ import annotations

from audioproc.errors import InputError
from audioproc.sources import validate_uri
from audioproc.storage import read_manifest

__all__ = ["InputError", "read_manifest", "validate_uri"]
