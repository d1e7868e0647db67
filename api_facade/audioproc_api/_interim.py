"""Interim stand-ins for pipeline functions not yet merged (removed once they are on main)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from audioproc.models import Manifest


class InputError(ValueError):
    pass


def validate_uri(uri: str, settings) -> None:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https", "s3"):
        return
    if parsed.scheme not in ("", "file"):
        raise InputError(f"unsupported scheme {parsed.scheme!r}")
    path = Path(parsed.path if parsed.scheme == "file" else uri).resolve()
    if not any(path.is_relative_to(Path(root).resolve()) for root in settings.allowed_roots):
        raise InputError(f"{path} is outside the allowed roots")


def read_manifest(manifest_uri: str) -> Manifest:
    path = Path(urlparse(manifest_uri).path) if manifest_uri.startswith("file://") else Path(manifest_uri)
    return Manifest.model_validate_json(path.read_text())
