from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from pixmesh import cli, ops
from pixmesh._render import Progress, output_name, progress_line
from pixmesh.cli import main
from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.job_pb2 import Job, Output, Stage
from tests.pixmesh.conftest import API_KEY
from tests.pixmesh.fake_gateway import Abort, FakeGateway


def run(target: str, *args: str) -> int:
    return main(["--target", target, "--api-key", API_KEY, *args])


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"jpeg bytes")
    return path


def test_process_writes_the_output_and_reports_progress(
    sync_target: str,
    fake: FakeGateway,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = run(
        sync_target, "process", str(photo), "--op", "resize=800x600", "--op", "convert=webp",
        "-o", str(out),
    )  # fmt: skip
    assert code == 0
    assert (out / "photo.webp").read_bytes() == b"out:jpeg bytes"
    assert list(out.iterdir()) == [out / "photo.webp"]
    captured = capsys.readouterr()
    assert f"saved {out / 'photo.webp'}" in captured.out
    # Not a terminal: one plain line per change, with the stage and its service.
    lines = captured.err.splitlines()
    assert len(lines) == 3
    assert "PENDING" in lines[0]
    assert "RUNNING stage 1/1 imaging [imaging running] 0%" in lines[1]
    assert "SUCCEEDED" in lines[2] and "100%" in lines[2]
    request = fake.create_requests[0]
    assert list(request.operations) == [ops.resize(800, 600), ops.convert("webp")]


def test_process_prints_extracted_metadata(
    sync_target: str, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sync_target, "process", str(photo), "--op", "metadata", "-o", str(tmp_path)) == 0
    out = capsys.readouterr().out
    metadata = json.loads(out[out.index("{") :])
    assert metadata == {"width": 640, "height": 480, "mode": "RGB"}


def test_process_never_overwrites_its_input(
    sync_target: str, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run(sync_target, "process", str(photo), "--op", "rotate=90", "-o", str(photo.parent)) == 0
    )
    assert photo.read_bytes() == b"jpeg bytes"
    assert (photo.parent / "photo-out.jpg").read_bytes() == b"out:jpeg bytes"


def test_a_failed_job_exits_non_zero_with_its_reason(
    sync_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"CORRUPT")
    code = run(sync_target, "process", str(bad), "--op", "resize=10x10", "-o", str(tmp_path / "o"))
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED: IMAGE_CORRUPT: the image data is truncated" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_rejected_call_exits_non_zero_with_reason_and_violations(
    sync_target: str, fake: FakeGateway, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_next(
        "CreateJob",
        Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid pipeline",
            "OPERATION_INVALID",
            [("operations[0].resize.width", "must be at most 16384")],
        ),
    )
    assert run(sync_target, "process", str(photo), "--op", "resize=99999x1") == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT OPERATION_INVALID: invalid pipeline" in err
    assert "operations[0].resize.width: must be at most 16384" in err


def test_a_status_without_details_is_reported_once(
    sync_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_next("ListOperations", Abort(grpc.StatusCode.UNAUTHENTICATED, "missing API key"))
    assert run(sync_target, "ops") == 1
    assert capsys.readouterr().err == "pixmesh: error: UNAUTHENTICATED: missing API key\n"


def test_a_bad_op_is_a_usage_error(sync_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(sync_target, "process", "x.jpg", "--op", "resize=800")
    assert info.value.code == 2
    assert "resize needs WIDTHxHEIGHT" in capsys.readouterr().err


def test_an_op_naming_a_missing_file_is_a_usage_error(
    sync_target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI ended in a FileNotFoundError traceback while parsing its arguments.
    logo = tmp_path / "logo.png"
    for args in (["--op", f"watermark={logo}"], ["--rendition", f"a=watermark={logo}"]):
        with pytest.raises(SystemExit) as info:
            run(sync_target, "process", "x.jpg", *args)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert f"cannot read {logo}: No such file or directory" in err
        assert "Traceback" not in err


@pytest.mark.parametrize("limit", ["-5", "ten"])
def test_a_negative_limit_is_a_usage_error(
    sync_target: str, fake: FakeGateway, limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # -5 listed every job of the tenant, as --limit 0 does.
    with pytest.raises(SystemExit) as info:
        run(sync_target, "jobs", "list", "--limit", limit)
    assert info.value.code == 2
    assert "expected a whole number >= 0" in capsys.readouterr().err
    assert fake.calls == []


def test_a_missing_file_exits_non_zero(
    sync_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sync_target, "upload", "nope.jpg") == 1
    assert "nope.jpg" in capsys.readouterr().err
    assert fake.calls == []


def test_jobs_commands(
    sync_target: str, fake: FakeGateway, photo: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert run(sync_target, "upload", str(photo)) == 0
    image = json.loads(capsys.readouterr().out)
    assert image["filename"] == "photo.jpg"

    assert run(sync_target, "process", str(photo), "--op", "flip", "-o", str(tmp_path / "o")) == 0
    job_id = next(iter(fake.timelines))
    capsys.readouterr()

    assert run(sync_target, "jobs", "get", job_id) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["job_id"] == job_id and got["state"] == "SUCCEEDED"

    assert run(sync_target, "jobs", "list", "--state", "succeeded") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("JOB")
    assert job_id in table[1] and "flip horizontal" in table[1]

    assert run(sync_target, "jobs", "watch", job_id) == 0
    assert "SUCCEEDED" in capsys.readouterr().out

    target = tmp_path / "copy.jpg"
    assert run(sync_target, "download", job_id, "-o", str(target)) == 0
    assert target.read_bytes() == b"out:jpeg bytes"

    assert run(sync_target, "download", job_id, "-i", "3") == 1
    assert "has no output 3" in capsys.readouterr().err

    assert run(sync_target, "jobs", "cancel", job_id) == 1
    assert "FAILED_PRECONDITION JOB_FINISHED" in capsys.readouterr().err


def test_ops_lists_operations_and_limits(
    sync_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sync_target, "ops") == 0
    out = capsys.readouterr().out
    assert "resize (imaging)" in out
    assert "- width (uint32, 0..16384)" in out
    assert "denoise (inference)  [unavailable: no model]" in out
    assert "output formats: webp" in out
    assert "16 operations, 10 renditions" in out


def test_target_and_key_come_from_the_environment(
    sync_target: str, fake: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIXMESH_TARGET", sync_target)
    monkeypatch.setenv("PIXMESH_API_KEY", "env-key")
    assert main(["ops"]) == 0
    assert fake.calls[0].metadata["authorization"] == "Bearer env-key"


def test_global_options_also_work_after_the_command(sync_target: str, fake: FakeGateway) -> None:
    assert main(["ops", "--target", sync_target, "--api-key", "late"]) == 0
    assert fake.calls[0].metadata["authorization"] == "Bearer late"


def test_output_names() -> None:
    webp = Output(index=0, format=image_pb2.WEBP)
    jpeg = Output(index=1, format=image_pb2.JPEG)
    unknown = Output(index=2, content_type="image/png")
    assert output_name("photo", webp, 1) == "photo.webp"
    assert output_name("photo", jpeg, 3) == "photo-1.jpg"
    assert output_name("photo", unknown, 3) == "photo-2.png"
    assert output_name("photo", Output(index=0), 1) == "photo.bin"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rewrites_one_line_on_a_terminal() -> None:
    job = Job(job_id="job_1", state=Job.RUNNING, progress=0.5)
    job.stages.add(index=0, service="imaging", state=Stage.SUCCEEDED, attempts=1)
    job.stages.add(index=1, service="inference", state=Stage.RUNNING, attempts=2)
    assert progress_line(job) == (
        "job_1 RUNNING stage 2/2 inference [imaging succeeded, inference running (attempt 2)] 50%"
    )
    screen = _Terminal()
    progress = Progress(screen)
    progress.update(job)
    progress.update(job)  # unchanged: not redrawn
    progress.finish()
    assert screen.getvalue() == "\r\x1b[K" + progress_line(job) + "\n"


def test_process_with_renditions_saves_one_file_per_rendition(
    sync_target: str,
    fake: FakeGateway,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    code = run(
        sync_target, "process", str(photo), "--op", "flip",
        "--rendition", "thumb=resize=200x200,fill;convert=webp",
        "--rendition", "original", "-o", str(out),
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo-original.jpg", "photo-thumb.webp"]
    assert (out / "photo-thumb.webp").read_bytes() == b"out:jpeg bytes:thumb"
    assert (out / "photo-original.jpg").read_bytes() == b"out:jpeg bytes:original"
    request = fake.create_requests[0]
    assert list(request.operations) == [ops.flip()]
    assert list(request.renditions) == [
        ops.rendition("thumb", [ops.resize(200, 200, "fill"), ops.convert("webp")]),
        ops.rendition("original"),
    ]
    assert "saved" in capsys.readouterr().out
    # Only renditions, or only a preset, is a pipeline too.
    assert run(sync_target, "process", str(photo), "--rendition", "a", "-o", str(out)) == 0
    assert run(sync_target, "process", str(photo), "--preset", "thumb", "-o", str(out)) == 0
    assert fake.create_requests[2].preset == "thumb"


def test_download_every_output_or_one_by_rendition(
    sync_target: str,
    fake: FakeGateway,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(
        sync_target, "process", str(photo), "--rendition", "a=grayscale",
        "--rendition", "b=convert=png", "-o", str(tmp_path / "first"),
    ) == 0  # fmt: skip
    job_id = next(iter(fake.timelines))
    capsys.readouterr()
    assert run(sync_target, "jobs", "list") == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("  renditions: a, b")
    every = tmp_path / "every"
    assert run(sync_target, "download", job_id, "--all", "-o", str(every)) == 0
    assert sorted(p.name for p in every.iterdir()) == [f"{job_id}-a.jpg", f"{job_id}-b.png"]
    assert (every / f"{job_id}-b.png").read_bytes() == b"out:jpeg bytes:b"
    one = tmp_path / "one.png"
    assert run(sync_target, "download", job_id, "-r", "b", "-o", str(one)) == 0
    assert one.read_bytes() == b"out:jpeg bytes:b"
    monkeypatch.chdir(tmp_path)
    assert run(sync_target, "download", job_id, "--rendition", "a") == 0
    assert (tmp_path / f"{job_id}-a.jpg").read_bytes() == b"out:jpeg bytes:a"
    capsys.readouterr()
    assert run(sync_target, "download", job_id, "-r", "zzz") == 1
    assert "has no output of rendition 'zzz'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one of -i, -r and --all
        run(sync_target, "download", job_id, "-r", "a", "--all")


def test_plan_prints_the_plan_of_each_rendition(
    sync_target: str, fake: FakeGateway, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(sync_target, "upload", str(photo)) == 0
    image_id = json.loads(capsys.readouterr().out)["image_id"]
    assert run(sync_target, "plan", image_id, "--rendition", "t=convert=webp") == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert plan["renditions"] == [{"name": "t", "plan": {"output_format": "WEBP"}}]
    assert fake.timelines == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rendition", "Thumb=flip"], "rendition names are 1..64"),
        (["--rendition", "t=resize=10"], "resize needs WIDTHxHEIGHT"),
        ([], "give at least one --op, a --preset or a --rendition"),
    ],
)
def test_bad_or_missing_renditions_are_usage_errors(
    sync_target: str, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(sync_target, "process", "x.jpg", *args)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_output_names_use_the_rendition() -> None:
    thumb = Output(index=1, format=image_pb2.WEBP, rendition="thumb")
    assert output_name("photo", thumb, 3) == "photo-thumb.webp"
    assert output_name("photo", thumb, 1) == "photo-thumb.webp"


# --- pixmesh status -----------------------------------------------------------------------------


def test_status_prints_the_fleet_table(
    sync_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.pixmesh.test_fleet_status import sample

    fake.fleet = sample()
    assert run(sync_target, "status") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["SERVICE", "REPLICAS", "QUEUE"]
    assert out[3].split() == ["imaging", "3", "imaging-tasks", "12", "6", "2m05s", "1", "4"]
    assert "0.50 created, 0.45 finished" in out[8]
    assert fake.count("GetFleetStatus") == 1


def test_status_json_is_the_rest_json(
    sync_target: str, fake: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.pixmesh.test_fleet_status import sample

    fake.fleet = sample()
    assert run(sync_target, "status", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    imaging = data["services"][2]
    assert imaging["queues"][0]["ack_pending"] == "6"  # uint64 is a string in proto JSON
    assert imaging["queues"][0]["oldest_age"] == "125s"
    assert data["jobs"]["created_per_second"] == 0.5


def test_status_watch_refreshes_until_interrupted_and_outlives_an_error(
    sync_target: str,
    fake: FakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr("pixmesh.cli.sleep", sleep)
    fake.fleet.services.add(service="gateway", replicas=1)
    fake.fail_next("GetFleetStatus", Abort(grpc.StatusCode.INTERNAL, "boom"))
    assert run(sync_target, "status", "--json", "--watch", "0.5") == 130
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2  # one JSON object per line: the first call failed
    assert [json.loads(line)["services"] for line in lines] == [
        [{"service": "gateway", "replicas": 1}]
    ] * 2
    assert "INTERNAL: boom" in captured.err
    assert sleeps == [0.5, 0.5, 0.5]


def test_status_watch_needs_a_positive_interval(
    sync_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(sync_target, "status", "--watch", "0")
    assert info.value.code == 2
    assert "positive number of seconds" in capsys.readouterr().err


def test_process_no_reuse_asks_for_recomputation(
    sync_target: str, fake: FakeGateway, photo: Path, tmp_path: Path
) -> None:
    assert run(sync_target, "process", str(photo), "--op", "grayscale", "-o", str(tmp_path)) == 0
    assert not fake.create_requests[0].HasField("reuse")  # the default: reuse
    args = ["process", str(photo), "--op", "grayscale", "--no-reuse", "-o", str(tmp_path / "b")]
    assert run(sync_target, *args) == 0
    request = fake.create_requests[1]
    assert request.HasField("reuse") and request.reuse is False


def test_listing_commands_print_rest_json_with_snake_case_names(
    sync_target: str, fake: FakeGateway, photo: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert run(sync_target, "process", str(photo), "--op", "flip", "-o", str(tmp_path / "o")) == 0
    job_id = next(iter(fake.timelines))
    capsys.readouterr()

    assert run(sync_target, "jobs", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    (job,) = listed["jobs"]  # REST's ListJobsResponse: {"jobs": [...]}
    assert job["job_id"] == job_id and job["image_id"] and "jobId" not in job
    assert job["operations"] == [{"flip": {"axis": "HORIZONTAL"}}]

    assert run(sync_target, "ops", "--json") == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert {"operations", "limits", "input_formats", "output_formats"} <= set(catalogue)
    assert catalogue["limits"]["max_renditions"] == 10
    resize = next(o for o in catalogue["operations"] if o["name"] == "resize")
    assert resize["parameters"][0]["name"] == "width"


def test_every_listing_command_takes_json() -> None:
    def commands(parser: argparse.ArgumentParser, path: str = "") -> dict[str, Any]:
        found: dict[str, Any] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{path} {name}".strip()] = sub
                    found |= commands(sub, f"{path} {name}")
        return found

    every = commands(cli.build_parser())
    listings = [p for p in every if p.split()[-1] in {"list", "ops", "usage", "status"}]
    assert {"jobs list", "keys list", "ops", "usage", "status"} <= set(listings)
    for path in listings:
        options = {o for a in every[path]._actions for o in a.option_strings}
        assert "--json" in options, path
