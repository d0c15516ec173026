"""ListOperations: what this deployment can do (the workers' operations, cached), its limits,
formats and presets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pixmesh.common.v1 import image_pb2, operations_pb2
from pixmesh.gateway.v1 import gateway_pb2
from services.gateway.capabilities import CapabilityCache
from services.gateway.settings import GatewaySettings
from services.gateway.validation import OUTPUT_FORMATS

INPUT_FORMATS = [
    f for f in image_pb2.ImageFormat.values() if f != image_pb2.IMAGE_FORMAT_UNSPECIFIED
]


async def list_operations(
    settings: GatewaySettings,
    capabilities: CapabilityCache,
    presets: Mapping[str, Sequence[operations_pb2.Operation]],
) -> gateway_pb2.ListOperationsResponse:
    s = settings
    return gateway_pb2.ListOperationsResponse(
        operations=await capabilities.operations(),
        limits=image_pb2.Limits(
            max_input_bytes=s.max_input_bytes,
            max_pixels=s.max_pixels,
            max_frames=s.max_frames,
            max_output_dimension=s.max_output_dimension,
            max_operations=s.max_operations,
            max_renditions=s.max_renditions,
            max_video_bytes=s.max_video_bytes,
            max_video_duration_s=s.max_video_duration_s,
            max_video_streams=s.max_video_streams,
        ),
        input_formats=INPUT_FORMATS,
        output_formats=sorted(OUTPUT_FORMATS),
        presets=[
            gateway_pb2.Preset(name=name, operations=ops) for name, ops in sorted(presets.items())
        ],
    )
