"""Previews: upright, fitted, WEBP; rendered once per size and then read from storage."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from services.metadata.preview import Previews, preview_key, render
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.storage import input_key


def _jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "JPEG", exif=exif)
    return out.getvalue()


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets: list[str] = []

    async def get(self, key: str) -> bytes:
        self.gets.append(key)
        if key not in self.objects:
            raise NotFound(message="object not found", reason="OBJECT_NOT_FOUND")
        return self.objects[key]

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        assert content_type == "image/webp"
        self.objects[key] = data


def test_render_is_upright_fitted_webp() -> None:
    p = render(_jpeg(1600, 1200, orientation=6), 320)  # stored landscape, shown portrait
    assert (p.width, p.height) == (240, 320)
    with Image.open(io.BytesIO(p.data)) as im:
        assert im.format == "WEBP" and im.size == (240, 320)


def test_render_refuses_bytes_it_cannot_decode() -> None:
    with pytest.raises(InvalidArgument):
        render(b"\xff\xd8\xff not a jpeg", 320)


async def test_rendered_once_then_read_from_storage() -> None:
    source = _jpeg(800, 600)
    sha = hashlib.sha256(source).hexdigest()
    store = MemoryStore()
    store.objects[input_key(sha)] = source
    with ThreadPoolExecutor(1) as pool:
        previews = Previews(store, pool)
        first = await previews.get(sha, 100)
        assert (first.width, first.height) == (100, 75)
        assert store.objects[preview_key(sha, 100)] == first.data
        store.gets.clear()
        again = await previews.get(sha.upper(), 100)
        assert again.data == first.data and store.gets == [preview_key(sha, 100)]
        with pytest.raises(InvalidArgument):
            await previews.get(sha, 4096)
