"""The folder engine's local parts: files taken by content, a stable walk that leaves the
destination out, the resume journal and the summary's figures."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pixmesh import errors
from pixmesh._folder import FolderSummary, _Journal, process_folder, walk
from pixmesh.common.v1.image_pb2 import ImageFormat
from pixmesh.formats import sniff


def _encoded(fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, fmt, **kwargs)
    return out.getvalue()


def test_formats_are_known_by_their_content() -> None:
    assert sniff(_encoded("JPEG")) == ImageFormat.JPEG
    assert sniff(_encoded("PNG")) == ImageFormat.PNG
    assert sniff(_encoded("GIF")) == ImageFormat.GIF
    assert sniff(_encoded("WEBP")) == ImageFormat.WEBP
    assert sniff(_encoded("TIFF")) == ImageFormat.TIFF
    assert sniff(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 20) == ImageFormat.AVIF
    assert sniff(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20) == ImageFormat.HEIF
    assert sniff(b"not an image at all, whatever its name") is None
    assert sniff(b"") is None


async def test_the_folder_takes_every_format_an_upload_takes(tmp_path: Path) -> None:
    """BMP and ICO, which uploads take, were failed as UNSUPPORTED_FORMAT before reaching the
    server: the folder had a sniffer of its own."""
    source, dest = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for fmt in ("BMP", "ICO", "JPEG"):
        (source / f"x.{fmt.lower()}").write_bytes(_encoded(fmt))
    (source / "notes.txt").write_bytes(b"not an image at all")
    taken: list[str] = []

    class _Refusing:  # takes the pipeline, refuses every upload
        async def create_batch(self, *args: object, **kwargs: object) -> None:
            field = "source.images.image_ids"
            raise errors.InvalidArgument("no images", violations=[errors.FieldViolation(field, "")])

        async def upload(self, data: bytes, filename: str = "") -> Any:
            taken.append(filename)
            raise errors.Unavailable("down", reason="DEPENDENCY_UNAVAILABLE")

    client: Any = _Refusing()
    summary = await process_folder(client, source, dest, ["grayscale"])
    assert sorted(taken) == ["x.bmp", "x.ico", "x.jpeg"]
    assert [f["name"] for f in summary.failures if f["reason"] == "UNSUPPORTED_FORMAT"] == [
        "notes.txt"
    ]


def test_walk_is_sorted_recursive_and_skips_the_destination(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a/z.jpg", "a/b/c.jpg", ".hidden.jpg", "out/x.webp", ".git/obj"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [
        p.relative_to(tmp_path).as_posix() for p in walk(tmp_path, (tmp_path / "out").resolve())
    ]
    assert found == ["b.jpg", "a/z.jpg", "a/b/c.jpg"]


def test_the_journal_resumes_by_content_and_needs_the_outputs(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    dest.mkdir()
    for name in ("a.jpg", "b.jpg", "copy-of-a.jpg"):
        (src / name).write_bytes(b"in")
    (dest / "a.webp").write_bytes(b"out")
    (dest / "gone.webp").write_bytes(b"out")
    journal = _Journal(dest)
    journal.record("sha-a", "a.jpg", ["a.webp"])
    journal.record("sha-b", "b.jpg", ["b.webp"])  # its output was deleted since
    journal.record("sha-g", "gone.jpg", ["gone.webp"])  # a file moved since
    journal.close()
    with (dest / ".pixmesh-batch.jsonl").open("a") as f:
        f.write('{"sha256": "cut')  # a line cut by a crash is ignored
    again = _Journal(dest)
    assert again.finished("sha-a", "a.jpg", dest, src)
    assert not again.finished("sha-b", "b.jpg", dest, src)
    assert not again.finished("sha-c", "c.jpg", dest, src)
    # The same bytes under another name still in the folder: a file of its own, not done.
    assert not again.finished("sha-a", "copy-of-a.jpg", dest, src)
    # Content done under a name no longer in the folder: moved or renamed, not redone.
    assert again.finished("sha-g", "moved/gone.jpg", dest, src)
    again.close()


def test_summary_figures() -> None:
    s = FolderSummary("src", "dest", images=4, succeeded=2, skipped=1, bytes_in=4_000_000)
    s.succeeded_bytes_in = 3_000_000
    s.bytes_out = 1_000_000
    s.fail("x.jpg", "IMAGE_CORRUPT", "bad", "job_1")
    s.seconds = [1.0, 2.0]
    s.started, s.finished = 100.0, 102.0
    doc = s.to_json()
    # 64-bit counts as JSON numbers, failures grouped by reason with the file names.
    assert (doc["images"], doc["succeeded"], doc["failed"], doc["skipped"]) == (4, 2, 1, 1)
    assert doc["failures"] == [
        {
            "reason": "IMAGE_CORRUPT",
            "count": 1,
            "failures": [{"name": "x.jpg", "message": "bad", "job_id": "job_1"}],
        }
    ]
    assert doc["compression_ratio"] == 1 / 3
    assert doc["bytes_saved"] == 2_000_000
    assert round(doc["space_saving_percent"], 6) == round(200 / 3, 6)
    assert round(doc["error_rate_percent"], 6) == round(100 / 3, 6)
    assert doc["images_per_second"] == 1.5
    assert doc["megabytes_per_second"] == 2.0
    # Interpolated between ranks, like the server's percentile_cont.
    assert (doc["p50_seconds"], doc["p95_seconds"]) == (1.5, 1.95)
    assert (doc["mean_seconds"], doc["min_seconds"], doc["max_seconds"]) == (1.5, 1.0, 2.0)
    assert (doc["started_at"], doc["finished_at"]) == (
        "1970-01-01T00:01:40Z",
        "1970-01-01T00:01:42Z",
    )
    assert doc["wall_seconds"] == 2.0
    assert doc["interrupted"] is False
    assert doc["client_peak_rss_megabytes"] > 0


async def test_files_that_cannot_be_read_fail_alone_with_a_reason(tmp_path: Path) -> None:
    """A dangling symlink, a file that cannot be opened and a FIFO (whose open would wait for a
    writer forever) each fail with a reason; the run neither stops nor hangs. None reaches the
    server, so a client that answers nothing is enough."""
    src, dest = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (src / "loop.jpg").symlink_to(src / "loop.jpg")  # ELOOP on open
    os.mkfifo(src / "pipe.jpg")
    (src / "notes.txt").write_text("not an image\n")

    client: Any = _NoServer()
    summary = await asyncio.wait_for(process_folder(client, src, dest, ["grayscale"]), 10)

    reasons = {f["name"]: f["reason"] for f in summary.failures}
    assert reasons == {
        "dangling.jpg": "NOT_FOUND",
        "loop.jpg": "NOT_FOUND",
        "pipe.jpg": "UNSUPPORTED_FORMAT",
        "notes.txt": "UNSUPPORTED_FORMAT",
    }
    assert (summary.images, summary.failed) == (4, 4)
    assert (dest / "summary.json").exists()


class _NoServer:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"no file should reach the server ({name})")


async def test_the_destination_cannot_be_the_source_folder(tmp_path: Path) -> None:
    """Outputs written beside the sources overwrite a source of the output's format (x.webp
    converted to WebP is written to x.webp) and are taken as sources by the next run."""
    (tmp_path / "x.webp").write_bytes(_encoded("WEBP"))
    client: Any = _NoServer()
    for dest in (tmp_path, tmp_path / "." / "sub" / ".."):
        try:
            await process_folder(client, tmp_path, dest, ["grayscale"])
        except ValueError as exc:
            assert "destination" in str(exc)
        else:
            raise AssertionError("a destination that is the source folder was accepted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.webp"]


async def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    """A folder with no file (or only hidden ones) is most likely a wrong path: the run was
    "0 succeeded ... of 0", exit status 0 and a summary.json."""
    source, dest = tmp_path / "photos", tmp_path / "out"
    (source / ".hidden").mkdir(parents=True)
    (source / ".hidden" / "x.jpg").write_bytes(_encoded("JPEG"))
    (source / ".DS_Store").write_bytes(b"finder")
    client: Any = _NoServer()
    with pytest.raises(ValueError, match="no file to process"):
        await process_folder(client, source, dest, ["grayscale"])
    assert not dest.exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1"),
        ({"chunk": 0}, "chunk must be 1..10000"),
        ({"chunk": 10_001}, "chunk must be 1..10000"),
    ],
)
async def test_concurrency_and_chunk_are_checked_first(
    tmp_path: Path, option: dict[str, int], message: str
) -> None:
    """--concurrency 0 took no file and ended "0 succeeded ... of 0" with exit 0; --chunk 0
    uploaded every file before CreateBatch refused the empty batch (with a traceback)."""
    (tmp_path / "x.png").write_bytes(_encoded("PNG"))
    client: Any = _NoServer()
    with pytest.raises(ValueError, match=message):
        await process_folder(client, tmp_path, tmp_path / "out", ["grayscale"], **option)  # type: ignore[arg-type]


async def test_a_failed_file_whose_name_is_not_utf8_is_in_the_summary(tmp_path: Path) -> None:
    """The summary could not be written (its JSON cannot hold the name's surrogates): the run
    ended with "'utf-8' codec can't encode character" and no summary.json."""
    src, dest = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / os.fsdecode(b"notes\xff.jpg")).write_text("not an image\n")
    client: Any = _NoServer()
    summary = await process_folder(client, src, dest, ["grayscale"])
    assert [f["name"] for f in summary.failures] == ["notes\ufffd.jpg"]
    doc = json.loads((dest / "summary.json").read_text(encoding="utf-8"))
    assert doc["failures"][0]["failures"][0]["name"] == "notes\ufffd.jpg"


class _Refuses:
    """A server whose CreateBatch refuses the pipeline (a width over the deployment's limit)
    and which records every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def create_batch(self, image_ids: list[str], *args: object, **kwargs: object) -> None:
        self.calls.append(f"create_batch({len(image_ids)})")
        raise errors.InvalidArgument(
            "operations[0].resize.width: at most 16384",
            violations=[errors.FieldViolation("operations[0].resize.width", "at most 16384")],
        )

    async def upload(self, data: bytes, filename: str = "") -> object:
        self.calls.append(f"upload({filename})")
        raise AssertionError("a file was uploaded before the server checked the pipeline")


async def test_the_server_checks_the_pipeline_before_any_file_is_uploaded(tmp_path: Path) -> None:
    """`pixmesh batch --op resize=100000x` uploaded the whole folder before CreateBatch refused
    the width: the server's batch checks now run first, on a request with no images."""
    src, dest = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (src / name).write_bytes(_encoded("PNG"))
    client: Any = _Refuses()
    try:
        await asyncio.wait_for(process_folder(client, src, dest, ["resize=100000x"]), 10)
    except errors.InvalidArgument as exc:
        assert exc.violations[0].field == "operations[0].resize.width"
    else:
        raise AssertionError("the refused pipeline was not reported")
    assert client.calls == ["create_batch(0)"]
