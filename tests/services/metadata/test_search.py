"""The pure parts of search: filter checks, page tokens and the pHash band probes."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from pixmesh.common.v1 import metadata_pb2
from services.metadata import hashes, search
from services.runtime.errors import InvalidArgument


def box(**fields: float) -> metadata_pb2.ImageSearchFilter:
    return metadata_pb2.ImageSearchFilter(**fields)  # type: ignore[arg-type]


def violations(f: metadata_pb2.ImageSearchFilter) -> set[str]:
    with pytest.raises(InvalidArgument) as err:
        search.check_filter(f)
    assert err.value.reason == "INVALID_SEARCH_FILTER"
    return {v.field for v in err.value.violations}


def test_a_full_filter_is_accepted() -> None:
    f = metadata_pb2.ImageSearchFilter(
        camera_make="Canon",
        taken_after=datetime(2020, 1, 1, tzinfo=UTC),
        taken_before=datetime(2021, 1, 1, tzinfo=UTC),
        min_latitude=-10,
        max_latitude=10,
        min_longitude=170,
        max_longitude=-170,  # across the antimeridian: allowed
        min_width=100,
        max_width=100,
    )
    search.check_filter(f)
    search.check_filter(metadata_pb2.ImageSearchFilter())


def test_a_partial_gps_box_names_every_missing_bound() -> None:
    assert violations(box(min_latitude=1.0)) == {"max_latitude", "min_longitude", "max_longitude"}


def test_out_of_range_and_inverted_bounds_are_refused() -> None:
    f = box(min_latitude=50, max_latitude=40, min_longitude=-181, max_longitude=0)
    f.min_width, f.max_width = 500, 100
    f.taken_after.FromDatetime(datetime(2022, 1, 1))
    f.taken_before.FromDatetime(datetime(2021, 1, 1))

    assert violations(f) == {"min_latitude", "min_longitude", "min_width", "taken_after"}


def test_page_size_and_distance_defaults_and_limits() -> None:
    assert search.page_size(0) == search.DEFAULT_PAGE_SIZE
    assert search.page_size(100) == 100
    assert search.max_distance(None) == 10
    assert search.max_distance(0) == 0
    with pytest.raises(InvalidArgument):
        search.page_size(101)
    with pytest.raises(InvalidArgument):
        search.max_distance(33)


def test_page_tokens_round_trip_and_belong_to_their_filter() -> None:
    f = metadata_pb2.ImageSearchFilter(camera_make="Nikon")
    cursor = search.Cursor(datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), "ab" * 32)

    token = search.encode_token(cursor, f)

    assert search.decode_token(token, f) == cursor
    with pytest.raises(InvalidArgument) as err:
        search.decode_token(token, metadata_pb2.ImageSearchFilter(camera_make="Canon"))
    assert err.value.reason == "BAD_PAGE_TOKEN"


@pytest.mark.parametrize("token", ["x", "!!!", "eyJ0IjoxfQ", "bm90IGpzb24"])
def test_garbage_page_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        search.decode_token(token, metadata_pb2.ImageSearchFilter())
    assert err.value.reason == "BAD_PAGE_TOKEN"


@pytest.mark.parametrize("distance", [0, 3, 4, 7, 10, 11, 15])
def test_every_hash_within_the_distance_hits_a_probed_band(distance: int) -> None:
    rng = random.Random(distance)
    for _ in range(200):
        query = rng.getrandbits(64)
        other = query
        for bit in rng.sample(range(64), distance):
            other ^= 1 << bit
        probes = search.band_probes(query, distance)
        assert probes is not None
        bands = [(other >> (48 - 16 * i)) & 0xFFFF for i in range(4)]
        assert any(band in probe for band, probe in zip(bands, probes, strict=True))
        assert hashes.distance(query, other) == distance


def test_probe_sizes_and_the_scan_threshold() -> None:
    assert [len(p) for p in search.band_probes(0, 10) or []] == [137] * 4  # 1 + 16 + 120
    assert [len(p) for p in search.band_probes(0, 3) or []] == [1] * 4
    assert [len(p) for p in search.band_probes(0, 15) or []] == [697] * 4
    assert search.band_probes(0, 16) is None  # radius 4: scanning is cheaper


def test_a_format_number_that_is_no_format_is_refused() -> None:
    # {"formats": [99]} through REST (enum numbers are accepted as JSON) was a 500: the query
    # named the format with ImageFormat.Name(99).
    assert violations(metadata_pb2.ImageSearchFilter(formats=[1, 99])) == {"formats[1]"}
    search.check_filter(metadata_pb2.ImageSearchFilter(formats=[0, 1, 2]))
