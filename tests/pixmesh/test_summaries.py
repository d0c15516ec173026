"""pixmesh.summaries: one summary document for a folder run and a server-side batch."""

from __future__ import annotations

import json

from pixmesh._folder import FolderSummary
from pixmesh.common.v1.batch_pb2 import BatchSummary
from pixmesh.summaries import derive, per_image, summary_json


def test_every_field_is_present_zeros_included() -> None:
    s = BatchSummary()
    doc = json.loads(summary_json(s))
    # Messages have presence: the timestamps appear once set (both sides always set them).
    every = {f.name for f in BatchSummary.DESCRIPTOR.fields}
    assert set(doc) == every - {"started_at", "finished_at"}
    s.started_at.GetCurrentTime()
    s.finished_at.GetCurrentTime()
    assert set(json.loads(summary_json(s))) == every
    assert doc["images"] == 0 and doc["failures"] == [] and doc["interrupted"] is False


def test_a_folder_run_and_a_server_batch_have_the_same_keys() -> None:
    folder = FolderSummary("photos", "out", images=1, succeeded=1, bytes_in=10)
    folder.fail("a.txt", "UNSUPPORTED_FORMAT", "not an image")
    server = BatchSummary(images=3, succeeded=2, failed=1, bytes_in=100, bytes_out=25)
    server.wall_seconds = 2.0
    server.started_at.GetCurrentTime()
    server.finished_at.GetCurrentTime()
    derive(server, 80)
    assert set(folder.to_json()) == set(json.loads(summary_json(server)))


def test_derived_figures() -> None:
    s = BatchSummary(images=5, skipped=1, succeeded=3, failed=1, bytes_in=4_000_000)
    s.bytes_out, s.wall_seconds = 3_000_000, 2.0
    derive(s, 2_000_000)
    assert s.compression_ratio == 1.5
    assert s.bytes_saved == -1_000_000  # outputs grew
    assert s.space_saving_percent == -50.0
    assert s.error_rate_percent == 25.0
    assert (s.images_per_second, s.megabytes_per_second) == (2.0, 2.0)
    empty = derive(BatchSummary(wall_seconds=1.0), 0)
    assert (empty.compression_ratio, empty.error_rate_percent, empty.bytes_saved) == (0, 0, 0)
    one = per_image(BatchSummary(), [3.0])
    assert (one.p50_seconds, one.p95_seconds, one.min_seconds, one.max_seconds) == (3, 3, 3, 3)
    many = per_image(BatchSummary(), [float(i) for i in range(1, 101)])
    assert (round(many.p50_seconds, 6), round(many.p95_seconds, 6)) == (50.5, 95.05)
