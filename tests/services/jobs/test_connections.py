"""Storage connections: a bucket name, endpoint or region S3 cannot take is the caller's error,
named on its field; a link-local endpoint is refused."""

from __future__ import annotations

from datetime import datetime

import botocore.session
import pytest

from pixmesh.common.v1 import batch_pb2
from services.jobs.connections import (
    Bucket,
    Connection,
    ConnectionStore,
    check_location,
    endpoint_refusal,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument


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


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",  # the instance metadata service of most clouds
        "http://169.254.170.2:80/",  # ECS task credentials
        "http://[fe80::1]:9000",
        "http://[::ffff:169.254.169.254]",
    ],
)
async def test_a_link_local_endpoint_is_refused_before_any_request(endpoint: str) -> None:
    """They were accepted and the jobs service sent its S3 requests there (SSRF towards the
    cloud's instance credentials)."""
    why = await endpoint_refusal(endpoint)
    assert why is not None and "link-local" in why
    store = ConnectionStore(pool=None, secrets=None)  # type: ignore[arg-type]  # refused first
    credentials = batch_pb2.StorageCredentials(access_key_id="a", secret_access_key="b")
    with pytest.raises(InvalidArgument) as err:
        await store.create("t", "n", endpoint, "bucket", "", credentials)
    assert [v.field for v in err.value.violations] == ["endpoint"]
    # A connection stored before (or whose host now resolves there) is refused on use.
    conn = Connection("c", "t", "n", endpoint, "bucket", "", "a", "b", "", datetime.now())
    with pytest.raises(FailedPrecondition) as refused:
        await conn.open()
    assert refused.value.reason == "ENDPOINT_REFUSED"


@pytest.mark.parametrize(
    "endpoint", ["", "http://127.0.0.1:8333", "http://localhost:9000", "http://10.0.0.7:9000"]
)
async def test_aws_loopback_and_private_endpoints_are_allowed(endpoint: str) -> None:
    # An S3-compatible store inside the cluster (or on the machine) is a normal endpoint.
    assert await endpoint_refusal(endpoint) is None
    conn = Connection("c", "t", "n", endpoint, "bucket", "", "a", "b", "", datetime.now())
    assert (await conn.open()).bucket == "bucket"
