"""What every imaging operation provides, and the helpers they share.

An operation is a proto message (its parameters), a pure `apply(image, params) -> image`, and a
`validate(params, size, ctx) -> size` that checks the parameters before any pixel is touched and
predicts the output size (None when the input size is unknown), so that a whole pipeline can be
checked at the gateway, from the header alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from PIL import Image

from pixmesh.common.v1 import operations_pb2
from services.imaging.errors import INVALID_OPERATION
from services.runtime.errors import FieldViolation, InvalidArgument

SERVICE = "imaging"

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def of(cls, image: Image.Image) -> Size:
        return cls(image.width, image.height)


@dataclass(frozen=True)
class Context:
    """Where an operation sits in the request, for field paths, and the limits it must respect."""

    path: str  # e.g. "operations[2].resize"
    max_output_dimension: int

    def error(
        self, field: str, description: str, reason: str = INVALID_OPERATION
    ) -> InvalidArgument:
        where = f"{self.path}.{field}" if field else self.path
        return InvalidArgument(
            message=f"{where}: {description}",
            reason=reason,
            violations=(FieldViolation(where, description),),
        )


@dataclass(frozen=True)
class OpSpec(Generic[M]):
    name: str  # the Operation oneof field
    message: type[M]
    apply: Callable[[Image.Image, M], Image.Image]
    validate: Callable[[M, Size | None, Context], Size | None]
    info: operations_pb2.OperationInfo


_SCALAR_TYPES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def describe(
    name: str, message: type[Message], description: str, **params: tuple[str, str]
) -> operations_pb2.OperationInfo:
    """ListOperations entry for `message`; `params` maps each field to (description, constraint).

    Types come from the proto descriptor, and every field must be described: a field added to the
    proto without a description fails at import, not silently in ListOperations.
    """
    fields = {f.name: f for f in message.DESCRIPTOR.fields}
    if set(fields) != set(params):
        raise ValueError(f"{name}: describe exactly the fields {sorted(fields)}")
    return operations_pb2.OperationInfo(
        name=name,
        service=SERVICE,
        description=description,
        available=True,
        parameters=[
            operations_pb2.ParameterInfo(
                name=field,
                type=_type_name(fields[field]),
                description=text,
                constraint=constraint,
            )
            for field, (text, constraint) in params.items()
        ],
    )


def _type_name(field: Any) -> str:  # a FieldDescriptor (pure-Python or upb flavour)
    if field.enum_type is not None:
        return str(field.enum_type.full_name)
    if field.message_type is not None:
        return str(field.message_type.full_name)
    return _SCALAR_TYPES[field.type]


def round_half_up(value: float) -> int:
    # Python's round() rounds half to even; sizes should not depend on parity.
    return int(value + 0.5)
