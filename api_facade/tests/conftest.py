"""Fixtures for the facade's tests: generated media, and the app on the local backend.

Helpers (settings, clients, a served facade, polling) are in facade_support.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.facade_support import Media, local_settings, make_client, make_media


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return make_media(tmp_path_factory.mktemp("media"))


@pytest.fixture
def client(tmp_path: Path, media: Media) -> Iterator[TestClient]:
    with make_client(local_settings(tmp_path, media)) as test_client:
        yield test_client
