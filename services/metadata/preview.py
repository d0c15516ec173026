"""Small upright previews of uploaded images for galleries (the web console's library).

Rendered from the source once per (content, size) on the metadata service's bounded executor,
then kept in object storage under previews/<sha256>-<size>.webp, so every later request is one
GET. Decoding pixels is this service's job already (colours, hashes); the gateway never does it.
JPEG sources decode at a reduced DCT scale (`draft`), so a 12 MP photo costs tens of ms."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from PIL import Image, ImageOps

from services.metadata import errors
from services.runtime.errors import InvalidArgument, NotFound, invalid
from services.runtime.storage import input_key

DEFAULT_SIZE = 320
MIN_SIZE, MAX_SIZE = 16, 1024
CONTENT_TYPE = "image/webp"
QUALITY = 70


class PreviewStore(Protocol):
    async def get(self, key: str) -> bytes: ...

    async def put(self, key: str, data: bytes, content_type: str) -> None: ...


@dataclass(frozen=True)
class Preview:
    data: bytes
    width: int
    height: int


def preview_key(sha256: str, size: int) -> str:
    return f"previews/{sha256}-{size}.webp"


def render(data: bytes, size: int) -> Preview:
    """The first frame, upright, fitted in size x size, as WEBP. Raises InvalidArgument for
    bytes Pillow cannot decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest sufficient scale
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(
            message="the image cannot be decoded for a preview", reason="IMAGE_CORRUPT"
        ) from exc
    mode = "RGBA" if "A" in upright.getbands() or "transparency" in upright.info else "RGB"
    upright = upright.convert(mode)
    upright.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    upright.save(out, format="WEBP", quality=QUALITY, method=4)
    return Preview(out.getvalue(), upright.width, upright.height)


class Previews:
    def __init__(self, store: PreviewStore, executor: Executor) -> None:
        self._store = store
        self._executor = executor

    async def get(self, sha256: str, size: int = 0) -> Preview:
        sha256 = errors.checked_sha256(sha256)
        size = size or DEFAULT_SIZE
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise invalid("max_size", f"must be {MIN_SIZE}..{MAX_SIZE} (0: {DEFAULT_SIZE})")
        key = preview_key(sha256, size)
        try:
            data = await self._store.get(key)
        except NotFound:
            pass
        else:
            with Image.open(io.BytesIO(data)) as im:  # header only
                return Preview(data, im.width, im.height)
        source = await self._store.get(input_key(sha256))
        loop = asyncio.get_running_loop()
        preview = await loop.run_in_executor(self._executor, render, source, size)
        # Two replicas may render the same preview at once: the bytes are the same either way.
        await self._store.put(key, preview.data, CONTENT_TYPE)
        return preview
