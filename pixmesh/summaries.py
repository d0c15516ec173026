"""The summary of a batch: one format for `pixmesh batch DIR -o OUT`'s DEST/summary.json and the
server's `GET /v1/batches/{id}/summary.json` (issue 12).

The format is the proto's `pixmesh.common.v1.BatchSummary` in the SDK's JSON conventions
(snake_case field names, enum names, RFC 3339 timestamps), with every field present, zeros
included, so both documents have the same keys, and 64-bit counts as JSON numbers (exact below
2^53, which bytes and counts stay under) so `jq '.failed'` needs no conversion. The figures that
follow from the counts are derived here, once, by both sides. `bytes_in` counts the images that
reached a job (uploaded, or read from storage and probed), `bytes_out` their outputs.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format

from pixmesh.common.v1.batch_pb2 import BatchSummary

__all__ = ["derive", "per_image", "summary_dict", "summary_json"]


def summary_json(summary: BatchSummary, indent: int | None = 2) -> str:
    """The summary document (what summary.json holds)."""
    return json_format.MessageToJson(
        summary,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        indent=indent,
        unquote_int64_if_possible=True,
    )


def summary_dict(summary: BatchSummary) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(summary_json(summary, indent=None))
    return doc


def derive(summary: BatchSummary, succeeded_bytes_in: int) -> BatchSummary:
    """Fill the figures that follow from the counts, the bytes and `wall_seconds`
    (`succeeded_bytes_in`: the input bytes of the succeeded images, whose outputs are
    `bytes_out`). Returns `summary`."""
    s = summary
    wall = max(s.wall_seconds, 1e-9)
    ended = s.succeeded + s.failed
    taken = s.images - s.skipped
    s.compression_ratio = s.bytes_out / succeeded_bytes_in if succeeded_bytes_in else 0.0
    s.bytes_saved = succeeded_bytes_in - s.bytes_out if succeeded_bytes_in else 0
    s.space_saving_percent = (
        100.0 * s.bytes_saved / succeeded_bytes_in if succeeded_bytes_in else 0.0
    )
    s.error_rate_percent = 100.0 * s.failed / taken if taken else 0.0
    s.images_per_second = ended / wall
    s.megabytes_per_second = s.bytes_in / 1e6 / wall
    return s


def per_image(summary: BatchSummary, seconds: Sequence[float]) -> BatchSummary:
    """p50/p95/mean/min/max of the seconds per succeeded image. The percentiles interpolate
    between ranks, as Postgres's percentile_cont that the server uses. Returns `summary`."""
    if seconds:
        s = sorted(seconds)
        summary.p50_seconds, summary.p95_seconds = (_percentile(s, q) for q in (0.5, 0.95))
        summary.mean_seconds = statistics.fmean(s)
        summary.min_seconds, summary.max_seconds = s[0], s[-1]
    return summary


def _percentile(ordered: Sequence[float], q: float) -> float:
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
