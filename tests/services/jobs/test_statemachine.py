from datetime import UTC, datetime

import pytest

from services.jobs import statemachine as sm
from services.runtime.errors import InvalidArgument

V = sm.StageView


def test_next_stage_reads_latest_image_output() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.webp"),
        V(1, "inference", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 0, "inputs/src") == "outputs/a.webp"


def test_metadata_stage_reads_the_source_not_the_stripped_output() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.webp"),
        V(1, "metadata", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 0, "inputs/src") == "inputs/src"


def test_stage_after_metadata_reads_the_image_before_it() -> None:
    stages = [
        V(0, "imaging", sm.SUCCEEDED, "inputs/src", "outputs/a.png"),
        V(1, "metadata", sm.SUCCEEDED, "inputs/src", None),
        V(2, "imaging", sm.PENDING, None, None),
    ]
    assert sm.next_input_key(stages, 1, "inputs/src") == "outputs/a.png"
    assert sm.final_output_stage(stages) == stages[0]


def test_metadata_only_job_has_no_output_and_full_progress() -> None:
    stages = [V(0, "metadata", sm.SUCCEEDED, "inputs/src", None)]
    assert sm.final_output_stage(stages) is None
    assert sm.progress(stages) == 1.0
    assert sm.progress([]) == 0.0


def test_page_token_round_trip_and_garbage() -> None:
    when = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    token = sm.encode_page_token(when, "job_abc")
    assert sm.decode_page_token(token) == (when, "job_abc")
    with pytest.raises(InvalidArgument) as exc:
        sm.decode_page_token("!!!not-a-token")
    assert exc.value.reason == "BAD_PAGE_TOKEN"
