"""The SDK's presigned-URL calls (sync, asyncio, CLI) against a fake gateway that hands out URLs
of a local HTTP server standing in for S3."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

import pixmesh
from pixmesh import _presigned, errors
from pixmesh.cli import main
from pixmesh.common.v1 import image_pb2, job_pb2
from pixmesh.gateway.v1 import gateway_pb2 as gw
from pixmesh.gateway.v1 import gateway_pb2_grpc
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import AsyncServicer, FakeGateway, SyncServicer

OUTPUT = job_pb2.Output(index=1, content_type="image/webp", rendition="thumb", size_bytes=9)


@dataclass
class Bucket:
    """What the fake S3 received: key -> (body, headers); `status` answers every PUT."""

    objects: dict[str, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    status: int = 200
    url: str = ""


@dataclass
class Uploads:
    bucket: Bucket
    requests: list[gw.CreateUploadUrlRequest] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    output_requests: list[gw.GetOutputUrlRequest] = field(default_factory=list)

    def create(self, request: gw.CreateUploadUrlRequest) -> gw.CreateUploadUrlResponse:
        self.requests.append(request)
        upload_id = f"upl_{len(self.requests)}"
        return gw.CreateUploadUrlResponse(
            upload_id=upload_id,
            url=f"{self.bucket.url}/uploads/{upload_id}?X-Amz-Signature=abc",
            headers={"Content-Length": str(request.size_bytes)},
        )

    def register(self, request: gw.RegisterUploadRequest) -> gw.RegisterUploadResponse:
        self.registered.append(request.upload_id)
        body, _ = self.bucket.objects[f"/uploads/{request.upload_id}"]
        size = len(body)
        image = image_pb2.Image(image_id=f"img_{request.upload_id}", size_bytes=size)
        return gw.RegisterUploadResponse(image=image)

    def output_url(self, request: gw.GetOutputUrlRequest) -> gw.GetOutputUrlResponse:
        self.output_requests.append(request)
        url = f"{self.bucket.url}/outputs/{request.job_id}/{request.index}"
        return gw.GetOutputUrlResponse(url=url, output=OUTPUT)


@pytest.fixture
def bucket() -> Iterator[Bucket]:
    state = Bucket()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length)
            if state.status == 200:
                key = self.path.split("?")[0]
                state.objects[key] = (body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            key = self.path.split("?")[0]
            status = state.status if key in state.objects else 404
            body = state.objects[key][0] if status == 200 else b"<Error/>"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def uploads(bucket: Bucket) -> Uploads:
    return Uploads(bucket)


@pytest.fixture
def sync_target(fake: FakeGateway, uploads: Uploads) -> Iterator[str]:
    class Servicer(SyncServicer):
        def CreateUploadUrl(self, request: Any, context: Any) -> Any:
            return self._run("CreateUploadUrl", context, lambda: uploads.create(request))

        def RegisterUpload(self, request: Any, context: Any) -> Any:
            return self._run("RegisterUpload", context, lambda: uploads.register(request))

        def GetOutputUrl(self, request: Any, context: Any) -> Any:
            return self._run("GetOutputUrl", context, lambda: uploads.output_url(request))

    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Servicer(fake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


@pytest.fixture
async def aio_target(fake: FakeGateway, uploads: Uploads) -> AsyncIterator[str]:
    class Servicer(AsyncServicer):
        async def CreateUploadUrl(self, request: Any, context: Any) -> Any:
            return await self._run("CreateUploadUrl", context, lambda: uploads.create(request))

        async def RegisterUpload(self, request: Any, context: Any) -> Any:
            return await self._run("RegisterUpload", context, lambda: uploads.register(request))

        async def GetOutputUrl(self, request: Any, context: Any) -> Any:
            return await self._run("GetOutputUrl", context, lambda: uploads.output_url(request))

    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Servicer(fake), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


def test_upload_via_url_declares_the_size_puts_the_bytes_and_registers(
    sync_target: str, fake: FakeGateway, uploads: Uploads, bucket: Bucket, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"x" * 70_000)

    with pixmesh.Client(sync_target, api_key=API_KEY) as client:
        image = client.upload_via_url(path)
        from_bytes = client.upload_via_url(b"raw bytes", "raw.png")

    assert [(r.filename, r.size_bytes) for r in uploads.requests] == [
        ("photo.jpg", 70_000),
        ("raw.png", 9),
    ]
    body, headers = bucket.objects["/uploads/upl_1"]
    assert body == b"x" * 70_000 and headers["content-length"] == "70000"
    assert "authorization" not in headers  # the API key never goes to object storage
    assert headers["content-type"] == "application/octet-stream"
    assert bucket.objects["/uploads/upl_2"][0] == b"raw bytes"
    assert uploads.registered == ["upl_1", "upl_2"]
    assert (image.image_id, image.size_bytes) == ("img_upl_1", 70_000)
    assert from_bytes.size_bytes == 9
    assert [c.method for c in fake.calls] == ["CreateUploadUrl", "RegisterUpload"] * 2
    assert all(c.metadata["authorization"] == f"Bearer {API_KEY}" for c in fake.calls)


def test_a_file_object_is_sent_from_its_position(
    sync_target: str, uploads: Uploads, bucket: Bucket
) -> None:
    stream = io.BytesIO(b"headerPIXELS")
    stream.seek(6)
    with pixmesh.Client(sync_target, api_key=API_KEY) as client:
        client.upload_via_url(stream)
    assert uploads.requests[0].size_bytes == 6
    assert bucket.objects["/uploads/upl_1"][0] == b"PIXELS"


def test_a_refused_put_raises_and_registers_nothing(
    sync_target: str, uploads: Uploads, bucket: Bucket
) -> None:
    bucket.status = 403
    with (
        pixmesh.Client(sync_target, api_key=API_KEY) as client,
        pytest.raises(errors.PermissionDenied) as err,
    ):
        client.upload_via_url(b"pixels")
    assert err.value.reason == "UPLOAD_URL_REFUSED"
    assert uploads.registered == []


def test_an_unreachable_bucket_is_unavailable(sync_target: str, uploads: Uploads) -> None:
    uploads.bucket.url = "http://127.0.0.1:9"  # discard port: nothing listens
    with (
        pixmesh.Client(sync_target, api_key=API_KEY) as client,
        pytest.raises(errors.Unavailable) as err,
    ):
        client.upload_via_url(b"pixels")
    assert err.value.reason == "STORAGE_UNREACHABLE"


def test_output_url(sync_target: str, fake: FakeGateway, uploads: Uploads) -> None:
    with pixmesh.Client(sync_target, api_key=API_KEY) as client:
        resp = client.output_url("job_7", 1)
    assert resp.url.endswith("/outputs/job_7/1") and resp.output == OUTPUT
    assert [(r.job_id, r.index) for r in uploads.output_requests] == [("job_7", 1)]
    assert fake.calls[0].metadata["authorization"] == f"Bearer {API_KEY}"


async def test_async_upload_via_url_and_output_url(
    aio_target: str, uploads: Uploads, bucket: Bucket, tmp_path: Path
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"y" * 5000)
    async with pixmesh.AsyncClient(aio_target, api_key=API_KEY) as client:
        image = await client.upload_via_url(path)
        resp = await client.output_url("job_9", 2)

    assert (uploads.requests[0].filename, uploads.requests[0].size_bytes) == ("photo.jpg", 5000)
    assert bucket.objects["/uploads/upl_1"][0] == b"y" * 5000
    assert image.image_id == "img_upl_1"
    assert resp.output == OUTPUT and resp.url.endswith("/outputs/job_9/2")


def test_cli_upload_presigned(
    sync_target: str,
    uploads: Uploads,
    bucket: Bucket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"jpeg bytes")

    code = main(["--target", sync_target, "--api-key", API_KEY, "upload", "--presigned", str(path)])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["image_id"] == "img_upl_1"
    assert bucket.objects["/uploads/upl_1"][0] == b"jpeg bytes"


# ---- an output's GET (what `pixmesh batch` does with the URLs its listing carries) ---------------

BODY = bytes(range(256)) * 2500  # 640,000 bytes: several reads of READ_SIZE


def test_a_download_is_streamed_into_place_and_checked(bucket: Bucket, tmp_path: Path) -> None:
    bucket.objects["/outputs/a.webp"] = (BODY, {})
    target = tmp_path / "a.webp"
    sha = hashlib.sha256(BODY).hexdigest()
    got = _presigned.download(
        f"{bucket.url}/outputs/a.webp?X-Amz-Signature=s", target, sha, len(BODY), 5
    )
    assert got == len(BODY) and target.read_bytes() == BODY
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("declared", ["sha256", "size", "longer"])
def test_bytes_that_are_not_the_output_are_an_error_and_write_nothing(
    bucket: Bucket, tmp_path: Path, declared: str
) -> None:
    bucket.objects["/outputs/a.webp"] = (BODY, {})
    sha, size = hashlib.sha256(BODY).hexdigest(), len(BODY)
    if declared == "sha256":
        sha = hashlib.sha256(b"other").hexdigest()
    elif declared == "size":
        size += 1
    else:  # the body is longer than the output: stopped as soon as it is
        size -= 1
    target = tmp_path / "a.webp"
    with pytest.raises(errors.PixmeshError) as err:
        _presigned.download(f"{bucket.url}/outputs/a.webp", target, sha, size, 5)
    assert (err.value.reason, err.value.code) == (_presigned.MISMATCH, grpc.StatusCode.DATA_LOSS)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_download_raises_and_writes_nothing(bucket: Bucket, tmp_path: Path) -> None:
    bucket.objects["/outputs/a.webp"] = (BODY, {})
    bucket.status = 403
    with pytest.raises(errors.PermissionDenied) as err:
        _presigned.download(f"{bucket.url}/outputs/a.webp", tmp_path / "a.webp", "", 0, 5)
    assert err.value.reason == "DOWNLOAD_URL_REFUSED"
    assert list(tmp_path.iterdir()) == []


def test_storage_out_of_reach_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(errors.Unavailable) as err:
        _presigned.download("http://127.0.0.1:9/outputs/a.webp", tmp_path / "a.webp", "", 0, 5)
    assert err.value.reason == "STORAGE_UNREACHABLE"
    assert list(tmp_path.iterdir()) == []
