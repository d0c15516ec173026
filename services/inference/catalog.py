"""What the inference service says about itself: operations, models, metadata, statistics.

Pure conversions from the model manager's state to the KServe-v2-style messages of
pixmesh.inference.v1; no I/O.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from pixmesh import rules
from pixmesh.common.v1 import operations_pb2
from pixmesh.inference.v1 import inference_pb2 as pb
from services.inference.batcher import BatchingOptions
from services.inference.models import ModelManager, ModelStatus, State
from services.inference.repository import TensorSpec
from services.inference.runner import available_providers
from services.inference.service import TileOptions
from services.inference.stats import Histogram, ModelStats

SERVER_NAME = "pixmesh-inference"
SERVER_VERSION = "1"
EXTENSIONS = ("model_repository", "statistics")
_STATE = {
    State.UNAVAILABLE: pb.ModelInfo.UNAVAILABLE,
    State.LOADING: pb.ModelInfo.LOADING,
    State.READY: pb.ModelInfo.READY,
}


def capabilities(models: ModelManager) -> operations_pb2.Capabilities:
    ready = models.ready()
    reason = ""
    if not ready:
        problems = [f"{s.name}: {s.reason}" for s in models.statuses() if s.reason]
        reason = "no denoising model is loaded" + (f" ({'; '.join(problems)})" if problems else "")
    names = ", ".join(m.config.name for m in ready) or "none loaded"
    # The entry is the proto's (comments and buf.validate rules, pixmesh.rules); what only this
    # replica knows is added: its execution provider, the models it has loaded, availability.
    info = rules.operation_info("denoise", "inference")
    info.description += f" On {models.provider or 'no execution provider'}."
    for param in info.parameters:
        if param.name == "model":
            param.constraint = names
    info.available = bool(ready)
    info.unavailable_reason = reason
    return operations_pb2.Capabilities(operations=[info])


def model_info(status: ModelStatus) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=status.name,
        version=status.version,
        state=_STATE[status.state],
        reason=status.reason,
        execution_provider=status.loaded.provider if status.loaded else "",
        description=status.config.description if status.config else "",
    )


def list_models(models: ModelManager) -> pb.ListModelsResponse:
    ready = models.ready()
    return pb.ListModelsResponse(
        models=[model_info(s) for s in models.statuses()],
        execution_provider=ready[0].provider if ready else "",
    )


def server_metadata(
    models: ModelManager, tiles: TileOptions, batching: BatchingOptions, default_depth: int
) -> pb.GetServerMetadataResponse:
    return pb.GetServerMetadataResponse(
        name=SERVER_NAME,
        version=SERVER_VERSION,
        extensions=EXTENSIONS,
        execution_provider=models.provider,
        available_providers=available_providers(),
        default_depth=default_depth,
        batching=pb.BatchingConfig(
            tile_size=tiles.size,
            tile_overlap=tiles.overlap,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_us=round(batching.max_queue_delay_s * 1e6),
            model_concurrency=batching.max_concurrency,
        ),
    )


def model_metadata(models: ModelManager, name: str, version: str) -> pb.GetModelMetadataResponse:
    config = models.config(name, version)
    status = models.status(name)
    loaded = status.loaded if status.loaded and status.loaded.config == config else None
    if loaded is not None:
        state = State.READY
    elif status.state is State.LOADING:
        state = State.LOADING
    else:
        state = State.UNAVAILABLE
    source = config.raw.get("source", {})
    return pb.GetModelMetadataResponse(
        name=config.name,
        version=config.version,
        versions=status.versions,
        platform=config.platform,
        inputs=[_tensor(t) for t in config.inputs],
        outputs=[_tensor(t) for t in config.outputs],
        state=_STATE[state],
        execution_provider=loaded.provider if loaded else "",
        description=config.description,
        depth=config.depth,
        receptive_radius=config.receptive_radius,
        sigma_input=config.sigma_input,
        trained_sigma=config.trained_sigma or 0.0,
        sigma_min=config.sigma_range[0],
        sigma_max=config.sigma_range[1],
        sha256=config.sha256,
        source=f"{source.get('package', '')} {source.get('file', '')}".strip(),
        license=str(source.get("license", "")),
    )


def _tensor(t: TensorSpec) -> pb.TensorMetadata:
    return pb.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)


def statistics(models: ModelManager, name: str, version: str) -> pb.GetModelStatisticsResponse:
    if name:
        loaded = [models.get(name)]
        if version and loaded[0].config.version != version:
            models.config(name, version)  # NOT_FOUND for a version that does not exist
            loaded = []
    else:
        loaded = models.ready()
    return pb.GetModelStatisticsResponse(
        model_stats=[_stats(m.config.name, m.config.version, m.stats) for m in loaded]
    )


def _stats(name: str, version: str, s: ModelStats) -> pb.ModelStatistics:
    out = pb.ModelStatistics(
        name=name,
        version=version,
        inference_count=s.inferences,
        execution_count=s.executions,
        request_success=s.requests_ok,
        request_failure=s.requests_failed,
        request_latency=_histogram(s.request),
        queue_latency=_histogram(s.queue),
        compute_latency=_histogram(s.compute),
        batch_stats=[
            pb.BatchStatistics(batch_size=size, count=b.count, compute_seconds=b.compute_seconds)
            for size, b in sorted(s.batch_sizes.items())
        ],
    )
    if s.last_inference_unix:
        ts = Timestamp()
        ts.FromNanoseconds(int(s.last_inference_unix * 1e9))
        out.last_inference.CopyFrom(ts)
    return out


def _histogram(h: Histogram) -> pb.LatencyHistogram:
    return pb.LatencyHistogram(
        bounds_seconds=h.bounds, counts=h.counts, count=h.count, sum_seconds=h.total
    )
