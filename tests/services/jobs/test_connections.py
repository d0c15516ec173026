"""Storage connections: a bucket name S3 cannot take is the caller's error, named on its field."""

from __future__ import annotations

import botocore.session
import pytest

from services.jobs.connections import Bucket, check_location
from services.runtime.errors import InvalidArgument


@pytest.mark.parametrize("name", ["../..", "a b", "x" * 300])
async def test_a_bucket_name_s3_cannot_take_is_invalid_argument(name: str) -> None:
    # It was "storage endpoint unreachable: ParamValidationError" (STORAGE_UNREACHABLE): no
    # request is ever sent, botocore refuses the name itself.
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    with pytest.raises(InvalidArgument) as err:
        await Bucket(client, name).check()
    assert [v.field for v in err.value.violations] == ["bucket"]


@pytest.mark.parametrize(
    ("endpoint", "region", "field"),
    [
        ("https://", "", "endpoint"),
        ("http://[::1", "", "endpoint"),
        ("http://127.0.0.1:99999", "", "endpoint"),
        ("http://a b", "", "endpoint"),
        ("ftp://x", "", "endpoint"),
        ("http://127.0.0.1:8333", "a b", "region"),
        ("", "../..", "region"),
        ("", "x" * 300, "region"),
    ],
)
def test_an_endpoint_or_region_botocore_refuses_is_invalid_argument(
    endpoint: str, region: str, field: str
) -> None:
    """They were a ValueError from botocore or urllib when the client was made or the first
    request sent: CreateStorageConnection answered 500 INTERNAL."""
    with pytest.raises(InvalidArgument) as err:
        check_location(endpoint, region)
    assert [v.field for v in err.value.violations] == [field]


@pytest.mark.parametrize(
    ("endpoint", "region"),
    [
        ("", ""),
        ("https://s3.example.com", "eu-west-1"),
        ("http://[::1]:9000", ""),
        ("http://127.0.0.1:8333/", "us-east-1"),
    ],
)
def test_endpoints_and_regions_botocore_takes_pass(endpoint: str, region: str) -> None:
    check_location(endpoint, region)
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or "us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    assert client.meta.region_name == (region or "us-east-1")
