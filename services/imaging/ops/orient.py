"""Orient: whether the source's EXIF orientation is applied (on by default).

The pipeline, not this module, turns the pixels upright: its orient step runs right after
decoding, before any operation, because the JPEG draft and every size are planned on the
oriented image. So `apply` changes nothing; what the operation does is decided by where it may
stand: first in a job, where `validation` reads it (`ignores_orientation`) to plan on the stored
size and the pipeline skips its orient step. Anywhere else it would come too late, and is
rejected there (validation knows the operation's place; this module only checks its mode).
"""

from __future__ import annotations

from PIL import Image

from pixmesh.common.v1.operations_pb2 import Orient
from services.imaging.ops.base import Context, OpSpec, Size

Mode = Orient.Mode


def validate(op: Orient, src: Size | None, ctx: Context) -> Size | None:
    # Parameter rules are the proto's, checked before this (validation.check_rules).
    # The pipeline has already oriented the pixels (or not): the size is what it gave.
    return src


def apply(img: Image.Image, op: Orient) -> Image.Image:
    return img


SPEC = OpSpec(
    name="orient",
    message=Orient,
    apply=apply,
    validate=validate,
)
