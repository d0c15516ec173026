"""Fixtures of the end-to-end tests: REST clients of the shared stack and the test photo.

The stack itself (`stack`, `api_key`, `rest_url`, ...) comes from tests/conftest.py and is started
once per session; everything here is cheap and built on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import Stack
from tests.integration.images import camera_jpeg
from tests.integration.rest import Rest


@pytest.fixture(scope="session")
def photo() -> bytes:
    """1600x1200 JPEG with Make/Model/DateTimeOriginal/GPS."""
    return camera_jpeg(1600, 1200)


@pytest.fixture(scope="session")
def photo_path(photo: bytes, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    path.write_bytes(photo)
    return path


@pytest.fixture(scope="session")
def rest(rest_url: str, api_key: str) -> Iterator[Rest]:
    """REST client of tenant "dev"."""
    client = Rest(rest_url, api_key)
    yield client
    client.close()


@pytest.fixture(scope="session")
def other_tenant(stack: Stack, rest_url: str) -> Iterator[Rest]:
    """REST client of a second tenant, "other"."""
    client = Rest(rest_url, stack.create_api_key("other"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def photo_id(rest: Rest, photo: bytes) -> str:
    """The test photo, uploaded once over REST (uploads are content-addressed anyway)."""
    image_id: str = rest.upload(photo)["image_id"]
    return image_id
