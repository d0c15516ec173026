"""Storage connections: a bucket name S3 cannot take is the caller's error, named on its field."""

from __future__ import annotations

import botocore.session
import pytest

from services.jobs.connections import Bucket
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
