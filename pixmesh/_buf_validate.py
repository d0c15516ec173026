"""`buf.validate.validate_pb2`, built from the descriptor that the protovalidate package ships.

The generated modules of pixmesh.common.v1 import `buf.validate.validate_pb2` because
operations.proto uses buf.validate annotations (protos/buf/validate/validate.proto, vendored at
the version of the installed protovalidate). protovalidate 2.x carries that file only for its own
protobuf runtime (protobuf-py), not as a google.protobuf module, so this builds the
google.protobuf module from the very same serialized descriptor and registers it under its
import name, before any generated module is imported (pixmesh/__init__.py imports this first).
Nothing is generated into pixmesh/: the descriptor comes from the installed package, so the
annotations and the validator can never disagree. A real `buf.validate.validate_pb2` (e.g. the
BSR's generated SDK), when installed, is used instead.
"""

from __future__ import annotations

import importlib
import sys
import types

# descriptor_pb2 and the three well-known types are imported for their side effect: they put
# the files validate.proto depends on in the default pool.
from google.protobuf import (  # noqa: F401
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    timestamp_pb2,
)
from google.protobuf.internal import builder

MODULE = "buf.validate.validate_pb2"


def _install() -> types.ModuleType:
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        pass
    from protovalidate._gen.buf.validate import validate_pb

    module = types.ModuleType(MODULE, "buf/validate/validate.proto from protovalidate")
    serialized = validate_pb.desc().proto.to_binary()
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName("buf/validate/validate.proto")
    except KeyError:
        file = pool.AddSerializedFile(serialized)
    namespace = module.__dict__
    namespace["DESCRIPTOR"] = file
    builder.BuildMessageAndEnumDescriptors(file, namespace)
    builder.BuildTopDescriptorsAndMessages(file, MODULE, namespace)
    parent = sys.modules.setdefault("buf", types.ModuleType("buf"))
    package = sys.modules.setdefault("buf.validate", types.ModuleType("buf.validate"))
    parent.validate = package  # type: ignore[attr-defined]
    package.validate_pb2 = module  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    return module


validate_pb2 = _install()
