"""Typed errors of the pipeline. Messages say what is wrong and how to fix it.

``InputError`` and its subclasses are problems with an item's input: retrying will not help
(the pod contract maps them to exit code 3). Everything else is internal (exit code 1).
"""

from __future__ import annotations

from collections.abc import Iterable


class AudioProcError(Exception):
    """Base of the pipeline's errors."""


class InputError(AudioProcError):
    """The input cannot be used as given; retrying the same request will fail again."""


class InvalidRequestError(InputError):
    """A request field that can never work (an invalid video id)."""


class InvalidURIError(InputError):
    """An input URI that is malformed (bad port, host, escape, character...); ``problem`` says what."""

    def __init__(self, uri: str, problem: str) -> None:
        super().__init__(f"invalid input URI {_shorten(uri)!r}: {problem}")
        self.problem = problem


class UnsupportedURIError(InvalidURIError):
    def __init__(self, uri: str, problem: str = "unsupported scheme") -> None:
        super().__init__(
            uri, f"{problem}; use a local path, file://, http://, https:// or s3://bucket/key"
        )


class NonFiniteAudioError(InputError):
    def __init__(self, uri: str, first_s: float) -> None:
        super().__init__(
            f"input {uri!r} has non-finite samples (NaN or ±Inf), the first at {first_s:.3f} s; "
            "its float samples are corrupt: re-encode it from a sound source"
        )
        self.first_s = first_s


class PathNotAllowedError(InputError):
    def __init__(self, path: str, allowed_roots: list[str]) -> None:
        roots = ", ".join(allowed_roots) or "(none)"
        super().__init__(
            f"input path {path!r} is outside the allowed roots ({roots}); "
            "move the file under one of them or add its directory to ALLOWED_ROOTS"
        )


class InputNotFoundError(InputError):
    def __init__(self, uri: str, detail: str = "") -> None:
        super().__init__(f"input {uri!r} not found" + (f": {detail}" if detail else ""))


class DownloadError(InputError):
    """An http(s) or s3 input could not be fetched (refused, too large, too slow, HTTP error)."""


class NoAudioStreamError(InputError):
    def __init__(self, uri: str) -> None:
        super().__init__(
            f"input {uri!r} has no audio stream (a video-only file?); nothing to analyse"
        )


class CorruptMediaError(InputError):
    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(
            f"input {uri!r} is truncated or corrupt ({detail}); re-encode or re-upload the file"
        )


class EmptyAudioError(InputError):
    def __init__(self, uri: str) -> None:
        super().__init__(f"input {uri!r} has an audio stream with no samples (zero-length audio)")


class AudioTooLongError(InputError):
    def __init__(self, uri: str, duration_s: float, max_duration_s: float) -> None:
        super().__init__(
            f"input {uri!r} lasts {duration_s:.0f} s or more, over the limit of {max_duration_s:g} s; "
            "cut it into parts or raise MAX_DURATION_S"
        )
        self.duration_s = duration_s
        self.max_duration_s = max_duration_s


class ExtractorError(AudioProcError):
    """An extractor failed on one item; recorded in that item's manifest."""


class UnknownExtractorError(InvalidRequestError):
    """A request names an extractor the catalog does not have."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"unknown extractor {name!r}; known: {', '.join(known)}")
        self.name = name


class ExtractorUnavailableError(ExtractorError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"extractor {name!r} is not available here: {reason}")
        self.name = name


class ClapUnavailableError(ExtractorUnavailableError):
    """No usable CLAP checkpoint in this deployment."""

    def __init__(self, reason: str) -> None:
        super().__init__("clap", reason)


class ClapCheckpointError(ExtractorError):
    """The configured checkpoint exists but cannot be loaded as a CLAP audio model."""


class StorageError(AudioProcError):
    """Writing or reading results failed (after retries)."""


class OutputError(StorageError):
    """The output location cannot take results: malformed, or not writable (found before any work).

    Not an :class:`InputError`: the item's input is fine, the deployment's output is not.
    """


class AudioTooShortError(ExtractorError):
    def __init__(
        self, name: str, duration_s: float, n_samples: int, sample_rate: int, min_samples: int
    ) -> None:
        super().__init__(
            f"audio too short for {name}: {1000 * duration_s:.2f} ms gives {n_samples} sample(s) at "
            f"{sample_rate} Hz; it needs at least {min_samples} ({1000 * min_samples / sample_rate:.2f} ms)"
        )
        self.name = name


class ConfigError(AudioProcError):
    """Settings from the environment are invalid; the message names each variable, on one line."""


def _shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters for a message (an overlong URI is itself the problem)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
