"""Every imaging example in README's Operations table parses and passes validation."""

import base64
import json
import re
from pathlib import Path

import pytest
from google.protobuf import json_format
from PIL import Image

from pixmesh.common.v1 import image_pb2, operations_pb2
from services.imaging.limits import Limits
from services.imaging.ops import REGISTRY
from services.imaging.validation import validate_pipeline
from services.runtime.imageprobe import ImageHeader

from .samples import encode

README = Path(__file__).parents[3] / "README.md"


def examples() -> list[str]:
    text = README.read_text()
    section = text[
        text.index("## Operations") : text.index("\n## ", text.index("## Operations") + 1)
    ]
    # Table cells that are a whole operation: {"name": {...}}.
    return re.findall(r'`(\{"[a-z_]+": \{.*?\}\})`', section)


def test_every_imaging_operation_has_an_example() -> None:
    names = {next(iter(json.loads(e))) for e in examples()}
    assert set(REGISTRY) <= names


@pytest.mark.parametrize("example", examples())
def test_example_is_valid(example: str) -> None:
    logo = base64.b64encode(encode(Image.new("RGBA", (20, 20), (0, 0, 0, 90)), "PNG")).decode()
    op = json_format.ParseDict(
        json.loads(example.replace("<base64 PNG>", logo)), operations_pb2.Operation()
    )
    header = ImageHeader(image_pb2.JPEG, 2000, 1500, 1, 10)
    validate_pipeline([op], header, Limits(), allow_other_services=True)
