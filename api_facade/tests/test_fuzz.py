"""Schemathesis against the served OpenAPI document (local backend): no request gets a 500.

Bounded: a few dozen generated requests per operation. Generated inputs are mostly rejected
by validation; the few that are queued (http/s3 URIs with made-up hosts) fail in the workers,
which stop with the app.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.facade_support import Media, local_settings, make_client, write_tone

pytestmark = pytest.mark.slow

# Schemathesis collects operations from the schema at import time, so the app is built here
# and its lifespan (backend start and close) is run by the module fixture below.
_root = Path(tempfile.mkdtemp(prefix="audioproc-fuzz-"))
_media = Media(_root / "media", [], _root / "media" / "missing.wav")
_media.root.mkdir()
_media.good.append(write_tone(_media.root / "tone.wav"))
# waits are cut short: a generated ?wait=true must not hold the run for minutes
_client = make_client(
    local_settings(_root, _media, api_wait_timeout_s=0.5, max_concurrent_videos=1)
)


async def _app_without_lifespan(scope, receive, send) -> None:
    """The app, minus lifespan events: Schemathesis' client runs a lifespan around every call,
    while the backend must live for the whole run (the fixture below runs the real one)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _client.app(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app_without_lifespan)


@pytest.fixture(scope="module", autouse=True)
def running_app() -> Iterator[None]:
    with _client:
        yield


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case) -> None:
    response = case.call()
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        response.status_code,
        response.text,
    )
