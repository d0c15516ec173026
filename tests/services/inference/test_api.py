"""The KServe-v2-style RPCs and the synchronous Denoise RPC, over a real in-process gRPC server
with the runtime's error interceptor (so errors arrive as clients see them)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from pixmesh.common.v1 import image_pb2
from pixmesh.common.v1.operations_pb2 import Denoise
from pixmesh.inference.v1 import inference_pb2 as pb
from pixmesh.inference.v1 import inference_pb2_grpc
from services.inference.api import InferenceApi
from services.inference.batcher import BatchingOptions
from services.inference.models import ModelManager
from services.inference.runner import RunnerOptions
from services.inference.service import InferenceService, TileOptions
from services.inference.settings import InferenceSettings
from services.runtime.errors import from_rpc_error
from services.runtime.server import ErrorInterceptor
from tests.services.inference.conftest import LIMITS, add_noise, decode, encode, psnr, scene

READY = pb.ModelInfo.READY


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of two 6-layer models, plus one whose file does not match its checksum."""
    root = tmp_path_factory.mktemp("models")
    source = InferenceSettings().models_dir
    for name in ("dncnn6-n", "dncnn6-h", "dncnn6-m"):
        shutil.copytree(source / name, root / name)
    with (root / "dncnn6-m" / "1" / "model.onnx").open("ab") as f:
        f.write(b"tampered")
    return root


@pytest.fixture(scope="module")
async def stub(
    repo: Path, executor: ThreadPoolExecutor
) -> AsyncIterator[inference_pb2_grpc.InferenceServiceStub]:
    batching = BatchingOptions(max_batch_size=4, max_queue_delay_s=0.001)
    models = ModelManager(repo, executor, RunnerOptions("cpu"), batching)
    await models.load_many(())
    service = InferenceService(models, executor, LIMITS, TileOptions(size=32))
    api = InferenceApi(service, models, batching, sync_max_pixels=10_000, sync_concurrency=2)
    server = grpc.aio.server(interceptors=[ErrorInterceptor()])
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(api, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
    await server.stop(None)
    await models.close()


async def error_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call  # type: ignore[misc]
    err = from_rpc_error(exc.value)
    return err.code, err.reason


async def test_list_models_and_operations(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    resp = await stub.ListModels(pb.ListModelsRequest())
    states = {m.name: (m.state, m.reason) for m in resp.models}
    assert states["dncnn6-n"] == (READY, "") and states["dncnn6-h"] == (READY, "")
    assert states["dncnn6-m"][0] == pb.ModelInfo.UNAVAILABLE
    assert "sha256" in states["dncnn6-m"][1]
    assert resp.execution_provider == "CPUExecutionProvider"
    ops = (await stub.ListOperations(pb.ListOperationsRequest())).capabilities.operations
    assert [(o.name, o.available) for o in ops] == [("denoise", True)]


async def test_server_and_model_metadata(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    server = await stub.GetServerMetadata(pb.GetServerMetadataRequest())
    assert server.execution_provider == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in server.available_providers
    assert server.default_depth == 6 and server.batching.max_batch_size == 4
    meta = await stub.GetModelMetadata(pb.GetModelMetadataRequest(name="dncnn6-n"))
    assert (meta.name, meta.version, list(meta.versions)) == ("dncnn6-n", "2", ["2"])
    assert meta.platform == "onnxruntime_onnx" and meta.state == READY
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("image", "FP32", [-1, 1, -1, -1]),
        ("sigma", "FP32", [-1]),
    ]
    assert meta.sigma_input and meta.depth == 6 and meta.receptive_radius == 6
    assert meta.execution_provider == "CPUExecutionProvider"
    assert meta.license == "BSD-3-Clause" and "dncnn6N.mpk" in meta.source
    h = await stub.GetModelMetadata(pb.GetModelMetadataRequest(name="dncnn6-h"))
    assert h.trained_sigma == pytest.approx(51.0) and not h.sigma_input
    code, reason = await error_of(stub.GetModelMetadata(pb.GetModelMetadataRequest(name="x")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")


async def test_model_ready(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="dncnn6-n"))).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name="dncnn6-n", version="2"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="dncnn6-n", version="1"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="dncnn6-m"))).ready
    code, _ = await error_of(stub.ModelReady(pb.ModelReadyRequest(name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_sync_denoise_and_its_statistics(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    clean = scene()[..., 0]
    noisy = add_noise(clean, 20)
    resp = await stub.Denoise(
        pb.DenoiseRequest(image=encode(noisy), denoise=Denoise(auto=True), format=image_pb2.WEBP)
    )
    assert (resp.content_type, resp.width, resp.height) == ("image/webp", 64, 48)
    assert psnr(decode(resp.image)[..., 0], clean) > psnr(noisy, clean) + 4  # WebP has no grey
    assert resp.report.model == "dncnn6-n"
    assert resp.report.execution_provider == "CPUExecutionProvider"
    stats = await stub.GetModelStatistics(pb.GetModelStatisticsRequest(name="dncnn6-n"))
    [s] = stats.model_stats
    assert s.request_success >= 1 and s.inference_count >= 6
    assert s.request_latency.count == s.request_success
    assert len(s.request_latency.counts) == len(s.request_latency.bounds_seconds) + 1
    assert sum(b.batch_size * b.count for b in s.batch_stats) == s.inference_count
    assert s.last_inference.seconds > 0
    everything = await stub.GetModelStatistics(pb.GetModelStatisticsRequest())
    assert {m.name for m in everything.model_stats} == {"dncnn6-n", "dncnn6-h"}


async def test_sync_denoise_refuses_large_images(
    stub: inference_pb2_grpc.InferenceServiceStub,
) -> None:
    big = encode(np.zeros((120, 100), np.uint8))  # 12,000 pixels > sync_max_pixels
    code, reason = await error_of(stub.Denoise(pb.DenoiseRequest(image=big, denoise=Denoise())))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "SYNC_IMAGE_TOO_LARGE")


async def test_unload_and_load(stub: inference_pb2_grpc.InferenceServiceStub) -> None:
    resp = await stub.UnloadModel(pb.UnloadModelRequest(name="dncnn6-h"))
    assert (resp.model.state, resp.model.reason) == (pb.ModelInfo.UNAVAILABLE, "unloaded")
    noisy = encode(add_noise(scene()[..., 0], 20))
    code, reason = await error_of(
        stub.Denoise(pb.DenoiseRequest(image=noisy, denoise=Denoise(model="dncnn6-h")))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_UNAVAILABLE")
    loaded = await stub.LoadModel(pb.LoadModelRequest(name="dncnn6-h"))
    assert loaded.model.state == READY
    assert loaded.model.execution_provider == "CPUExecutionProvider"
    code, reason = await error_of(stub.LoadModel(pb.LoadModelRequest(name="dncnn6-m")))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MODEL_LOAD_FAILED")
    code, reason = await error_of(stub.LoadModel(pb.LoadModelRequest(name="dncnn6-n", version="7")))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL")
