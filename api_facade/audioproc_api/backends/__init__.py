"""Where tasks run: ``kubernetes`` (AudioJobs) or ``local`` (worker processes + SQLite)."""

from audioproc_api.backends.base import (
    Backend,
    BackendUnavailable,
    ResultNotAvailable,
    Submission,
    TaskNotFound,
    UnsupportedRequest,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "ResultNotAvailable",
    "Submission",
    "TaskNotFound",
    "UnsupportedRequest",
]
