"""JSON logs with the AudioJob as correlation id.

kopf's JSON formatter (``kopf.configure(log_format=JSON)``) writes every ``extra`` field,
so each line about an AudioJob carries ``correlation_id`` (``namespace/name``) and, when
the facade set the annotation ``audioproc.io/request-id``, ``request_id``.
"""

from __future__ import annotations

import logging
from typing import Any

_logger = logging.getLogger("audioproc_operator")


def audiojob_logger(
    namespace: str, name: str, request_id: str | None
) -> logging.LoggerAdapter[Any]:
    extra: dict[str, Any] = {"correlation_id": f"{namespace}/{name}"}
    if request_id:
        extra["request_id"] = request_id
    return logging.LoggerAdapter(_logger, extra)
