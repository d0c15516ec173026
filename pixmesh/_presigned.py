"""The HTTP half of an upload through a presigned URL, shared by both clients (blocking; the
asyncio client runs it in a thread). The standard library's urllib: the SDK depends on grpcio and
protobuf only, and a PUT of a file needs nothing more."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import urlsplit

import grpc

from pixmesh import errors


def measure(reader: BinaryIO) -> tuple[BinaryIO, int]:
    """The reader (at its position) and the bytes left in it; a stream that cannot seek is
    read into memory, since its size must be declared before the upload."""
    if reader.seekable():
        start = reader.tell()
        end = reader.seek(0, io.SEEK_END)
        reader.seek(start)
        return reader, end - start
    data = reader.read()
    return io.BytesIO(data), len(data)


def put(url: str, headers: Mapping[str, str], body: BinaryIO, timeout: float) -> None:
    """PUT `body` to a presigned URL with the headers it was signed with, streamed from the
    reader; failures raise PixmeshError subclasses like the RPCs."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise errors.PixmeshError(f"not an HTTP URL: {url[:64]!r}", reason="BAD_UPLOAD_URL")
    # urllib would label the body a form (application/x-www-form-urlencoded) otherwise; the
    # gateway sniffs the real format from the bytes at registration.
    sent = {"Content-Type": "application/octet-stream", **headers}
    request = urllib.request.Request(url, data=body, method="PUT", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc.code, exc.read(1024).decode("utf-8", "replace")) from exc
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out, DNS
        raise errors.Unavailable(
            f"object storage unreachable: {exc}", reason="STORAGE_UNREACHABLE"
        ) from exc


def _http_error(status: int, body: str) -> errors.PixmeshError:
    message = f"object storage refused the upload: HTTP {status}: {body[:300]}"
    if status == 403:  # an expired URL, or a body of another size than the declared one
        return errors.PermissionDenied(message, reason="UPLOAD_URL_REFUSED")
    if status >= 500:
        return errors.Unavailable(message, reason="STORAGE_ERROR")
    return errors.PixmeshError(message, code=grpc.StatusCode.UNKNOWN, reason="UPLOAD_PUT_FAILED")
