"""The light parts of the pipeline the facade uses: input validation, output probing, manifest reading.

Contract (docs/architecture.md): ``audioproc.sources.validate_uri``,
``audioproc.storage.probe_output`` and ``audioproc.storage.read_manifest`` import nothing
heavy (boto3 only for s3 locations). ``validate_uri`` raises only ``InputError`` (its message
says what is wrong), whatever string it is given. ``probe_output(output_uri, settings)``
raises ``OutputError`` when results cannot be written there (for ``/readyz`` and a 503 on
submission).
"""

from __future__ import annotations

from audioproc.errors import InputError, OutputError
from audioproc.sources import validate_uri
from audioproc.storage import probe_output, read_manifest

__all__ = ["InputError", "OutputError", "probe_output", "read_manifest", "validate_uri"]
