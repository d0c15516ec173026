"""The XMP packet that Convert.provenance embeds: how the output was made, in a few hundred bytes.

Only facts that the output's key already stands for go in (source and input, the operations
as sent, the engine's library versions, the key scheme): the same work gives the same bytes,
so an output made by one job can be reused by the next. The worker, trace and timings of a job
are in its record (Job.outputs[].provenance), not in the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import quoteattr

from google.protobuf import json_format

from pixmesh.common.v1 import job_pb2, operations_pb2

NAMESPACE = "https://pixmesh.dev/ns/provenance/1/"
# The engine entries worth naming in a file (the record has them all).
_ENGINE = ("pillow", "libjpeg-turbo", "libwebp", "libavif", "libheif", "zlib-ng", "zlib")


def provenance_xmp(
    fields: Mapping[str, str], operations: Sequence[operations_pb2.Operation]
) -> bytes:
    """An XMP packet with `fields` ("sourceSha256", "inputKey", "keyScheme", "engine.<lib>")
    and `operations` (compact JSON) as attributes in the pixmesh namespace."""
    ops = json_format.MessageToDict(
        job_pb2.Job(operations=operations), preserving_proto_field_name=True
    ).get("operations", [])
    attrs = {k: v for k, v in fields.items() if not k.startswith("engine.")}
    engine = [
        f"{name}={fields[f'engine.{name}']}" for name in _ENGINE if f"engine.{name}" in fields
    ]
    attrs["engine"] = "; ".join(engine)
    attrs["operations"] = json.dumps(ops, separators=(",", ":"), sort_keys=True)
    described = " ".join(f"pixmesh:{k}={quoteattr(v)}" for k, v in sorted(attrs.items()))
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:pixmesh="{NAMESPACE}" {described}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    )
    return packet.encode()
