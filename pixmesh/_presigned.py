"""The HTTP half of transfers through presigned URLs, shared by both clients (blocking; the
asyncio client runs them in a thread): an upload's PUT, and an output's GET straight from object
storage (what `pixmesh batch` does with the URLs its listing carries). The standard library's
urllib: the SDK depends on grpcio and protobuf only, and a PUT or a GET of a file needs nothing
more. urllib honours the environment's proxy settings (http_proxy, no_proxy)."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
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


# The reason of downloaded bytes that are not the output's (its sha256 or size): an error, never
# written under the output's name.
MISMATCH = "OUTPUT_MISMATCH"
# Bytes read (and written) at a time by `download`: the memory a download holds.
READ_SIZE = 256 * 1024


def check(data: bytes, sha256: str, size: int) -> None:
    """Raise the MISMATCH error unless `data` has the expected size and sha256 (either left
    unchecked when not given: 0, "")."""
    _verify(len(data), hashlib.sha256(data), sha256, size)


def _verify(got_size: int, digest: hashlib._Hash, sha256: str, size: int) -> None:
    if size and got_size != size:
        raise _mismatch(f"{got_size} bytes where the output has {size}")
    if sha256 and digest.hexdigest() != sha256:
        raise _mismatch(f"sha256 {digest.hexdigest()} where the output has {sha256}")


def _mismatch(what: str) -> errors.PixmeshError:
    return errors.PixmeshError(
        f"the downloaded output is not the job's: {what}",
        code=grpc.StatusCode.DATA_LOSS,
        reason=MISMATCH,
    )


def download(url: str, target: Path, sha256: str, size: int, timeout: float) -> int:
    """GET a presigned URL into `target` (streamed through `target`.part, READ_SIZE at a time,
    renamed into place once whole and checked against `sha256` and `size`); the bytes written.
    A body of other bytes raises the MISMATCH error and writes nothing; storage unreachable
    (refused, reset, timed out, DNS) raises Unavailable STORAGE_UNREACHABLE, an HTTP error status
    the error of its status (`_http_error`)."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise errors.PixmeshError(f"not an HTTP URL: {url[:64]!r}", reason="BAD_DOWNLOAD_URL")
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    got = 0
    try:
        with (
            urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as resp,
            partial.open("wb") as out,
        ):
            while chunk := resp.read(READ_SIZE):
                got += len(chunk)
                if size and got > size:
                    raise _mismatch(f"more than the output's {size} bytes")
                digest.update(chunk)
                out.write(chunk)
        _verify(got, digest, sha256, size)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        body = exc.read(1024).decode("utf-8", "replace")
        raise _http_error(exc.code, body, "download") from exc
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is not None:
            raise  # the local file, not the network: not storage's failure
        raise errors.Unavailable(
            f"object storage unreachable: {exc}", reason="STORAGE_UNREACHABLE"
        ) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    return got


def _http_error(status: int, body: str, what: str = "upload") -> errors.PixmeshError:
    message = f"object storage refused the {what}: HTTP {status}: {body[:300]}"
    if status == 403:  # an expired URL, or (an upload) a body of another size than declared
        return errors.PermissionDenied(message, reason=f"{what.upper()}_URL_REFUSED")
    if status >= 500:
        return errors.Unavailable(message, reason="STORAGE_ERROR")
    reason = "UPLOAD_PUT_FAILED" if what == "upload" else "DOWNLOAD_GET_FAILED"
    return errors.PixmeshError(message, code=grpc.StatusCode.UNKNOWN, reason=reason)
