# Generated from pixmesh/aio.py by `python -m pixmesh._unasync` (make sdk): do not edit.
"""The pixmesh clients: `pixmesh.AsyncClient` (asyncio, pixmesh/aio.py, written by hand) and
`pixmesh.Client` (synchronous, pixmesh/client.py, generated from aio.py by unasync: `make sdk`;
`make lint` fails when it is stale), so the two have the same methods, arguments and behaviour.

    import pixmesh
    from pixmesh import ops

    with pixmesh.Client() as client:
        job = client.process("photo.jpg", [ops.resize(800, 600), ops.convert("webp")])
        if job.state == job.SUCCEEDED:
            client.save_output(job.job_id, "photo.webp")

        # Several outputs of one source, decoded once: one per rendition, in order.
        job = client.process(
            "photo.jpg",
            renditions={"thumb": ["resize=200x200,fill", "convert=webp"], "large": ["resize=1600x"]},
        )
        client.save_output(job.job_id, "thumb.webp", rendition="thumb")

    async with pixmesh.AsyncClient() as client:
        job = await client.process("photo.jpg", ["resize=800x600", "convert=webp"])

Create an AsyncClient inside the running event loop: a grpc.aio channel belongs to one loop. Its
file reads run on a worker thread so a large upload does not stall the loop.

Every call carries a deadline and the API key; failures raise `pixmesh.errors.PixmeshError`
subclasses. See `pixmesh._common` for what is retried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Unpack

import grpc
from google.protobuf.message import Message

from pixmesh import _presigned, errors, ops
from pixmesh._common import (
    DEFAULT_TARGET,
    METADATA_POLL_S,
    Deadline,
    SearchFilters,
    Settings,
    Source,
    UploadSource,
    is_pending,
    is_terminal,
    job_pipeline,
    job_state,
    new_idempotency_key,
    outage_delay,
    rendition_index,
    retry_delay,
    search_request,
    write_atomically,
)
from pixmesh._folder import FolderSummary
from pixmesh._folder import Progress as FolderProgress
from pixmesh._sync_io import open_channel, run_folder, sleep, to_thread, upload_requests
from pixmesh.common.v1.batch_pb2 import (
    Batch,
    BatchItem,
    StorageConnection,
    StorageCredentials,
    StorageLocation,
)
from pixmesh.common.v1.fleet_pb2 import FleetStatus
from pixmesh.common.v1.image_pb2 import Image
from pixmesh.common.v1.job_pb2 import Job
from pixmesh.common.v1.metadata_pb2 import ImageMetadata, ImageRecord, SimilarImage
from pixmesh.gateway.v1 import batches_pb2 as bt
from pixmesh.gateway.v1 import gateway_pb2 as gw
from pixmesh.gateway.v1.gateway_pb2_grpc import GatewayServiceStub
from pixmesh.webhooks import WebhookLike, to_webhook

__all__ = ["Client"]


class Client:
    """A connection to the pixmesh gateway (directly, or through Envoy's gRPC listener).

    api_key: defaults to $PIXMESH_API_KEY, then the file .pixmesh/api-key.
    timeout: deadline in seconds for each unary call and for a whole upload.
    retries: how many times an UNAVAILABLE call is retried (0..4).
    watch_timeout: deadline for following a job with watch_job / process.
    credentials: pass grpc.ssl_channel_credentials() for a TLS endpoint.

    In AsyncClient every method is a coroutine, and list_jobs / watch_job / search_images are
    async iterators (wrap watch_job in `contextlib.aclosing` when you may stop early, so the
    stream is cancelled at once); Client, generated from it, is the same without async.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        watch_timeout: float = 3600.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.settings = Settings.resolve(target, api_key, timeout, retries, watch_timeout)
        self.credentials = credentials
        self._channel = open_channel(target, credentials, self.settings.channel_options())
        self._stub = GatewayServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- images -------------------------------------------------------------------------------

    def upload(
        self, source: Source, filename: str | None = None, *, timeout: float | None = None
    ) -> Image:
        """Upload bytes, a file path or a binary file object; returns the sniffed Image."""
        src = UploadSource(source, filename)
        deadline = Deadline(timeout or self.settings.timeout)
        retries = self.settings.retries if src.replayable else 0
        attempt = 0
        while True:
            try:
                with src.open() as reader:
                    resp: gw.UploadImageResponse = self._stub.UploadImage(
                        upload_requests(src, reader),
                        timeout=deadline.timeout(),
                        metadata=self.settings.metadata,
                    )
                return resp.image
            except grpc.RpcError as exc:
                error = errors.from_rpc_error(exc)
                delay = retry_delay(error, attempt, retries, deadline)
                if delay is None:
                    raise error from exc
            sleep(delay)
            attempt += 1

    def upload_via_url(
        self, source: Source, filename: str | None = None, *, timeout: float | None = None
    ) -> Image:
        """Upload through a presigned S3 URL: the bytes go straight to object storage, not
        through the gateway (CreateUploadUrl, an HTTP PUT, RegisterUpload); returns the Image,
        as `upload` would. `timeout` bounds the whole. The PUT is not retried."""
        src = UploadSource(source, filename)
        deadline = Deadline(timeout or self.settings.timeout)
        with src.open() as reader:
            body, size = to_thread(_presigned.measure, reader)
            request = gw.CreateUploadUrlRequest(filename=src.filename, size_bytes=size)
            ticket: gw.CreateUploadUrlResponse = self._unary(
                self._stub.CreateUploadUrl, request, deadline.timeout()
            )
            to_thread(_presigned.put, ticket.url, ticket.headers, body, deadline.timeout())
        registered: gw.RegisterUploadResponse = self._unary(
            self._stub.RegisterUpload,
            gw.RegisterUploadRequest(upload_id=ticket.upload_id),
            deadline.timeout(),
        )
        return registered.image

    # --- jobs ---------------------------------------------------------------------------------

    def create_job(
        self,
        image_id: str,
        operations: Iterable[ops.OperationLike] = (),
        idempotency_key: str | None = None,
        *,
        preset: str = "",
        renditions: ops.RenditionsLike | None = None,
        webhook: WebhookLike | None = None,
        reuse: bool = True,
        timeout: float | None = None,
    ) -> Job:
        """Start a pipeline. Without a key one is generated, so gRPC's retries cannot duplicate
        the job; pass your own to make a retry of the whole program safe too.

        `renditions` asks for several outputs of one source: Rendition messages
        (`ops.rendition(...)`) or a mapping name -> operations, e.g. {"thumb": ["resize=200x200,
        fill", "convert=webp"], "large": [ops.resize(1600)]}. Each runs after `operations`
        (which may then be empty) and the job's outputs are theirs, in order.

        `webhook` (a URL, or `pixmesh.webhooks.Webhook(url=..., secret=...)`) is POSTed the job,
        signed, once it ends; receivers check it with `pixmesh.webhooks.verify` (README,
        "Webhooks"). `job.webhook` shows the delivery.

        `reuse=False` recomputes every output even when identical work already stored it
        (outputs are content-addressed and reused by default; README, "Reuse and provenance")."""
        pipeline, branches = job_pipeline(operations, preset, renditions)
        request = gw.CreateJobRequest(
            image_id=image_id,
            operations=pipeline,
            idempotency_key=idempotency_key or new_idempotency_key(),
            preset=preset,
            renditions=branches,
            webhook=to_webhook(webhook),
            reuse=None if reuse else False,
        )
        resp: gw.CreateJobResponse = self._unary(self._stub.CreateJob, request, timeout)
        return resp.job

    def plan_job(
        self,
        image_id: str,
        operations: Iterable[ops.OperationLike] = (),
        *,
        preset: str = "",
        renditions: ops.RenditionsLike | None = None,
        timeout: float | None = None,
    ) -> gw.PlanJobResponse:
        """Dry run: the resolved operations, output size and format, and an estimated cost
        (with renditions, `plan.renditions` holds each one's plan)."""
        pipeline, branches = job_pipeline(operations, preset, renditions)
        request = gw.PlanJobRequest(
            image_id=image_id, operations=pipeline, preset=preset, renditions=branches
        )
        resp: gw.PlanJobResponse = self._unary(self._stub.PlanJob, request, timeout)
        return resp

    def get_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        resp: gw.GetJobResponse = self._unary(
            self._stub.GetJob, gw.GetJobRequest(job_id=job_id), timeout
        )
        return resp.job

    def list_jobs(
        self,
        state: int | str | None = None,
        *,
        page_size: int = 50,
        timeout: float | None = None,
    ) -> Iterator[Job]:
        """Every job of the caller, newest first, fetching pages lazily (one deadline each)."""
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be within 1..100")
        request = gw.ListJobsRequest(page_size=page_size, state=job_state(state))
        while True:
            resp: gw.ListJobsResponse = self._unary(self._stub.ListJobs, request, timeout)
            yield from resp.jobs
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    def watch_job(self, job_id: str, *, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job on every change; stops after the terminal state.

        A broken stream (UNAVAILABLE, or an end before a terminal state) is re-opened up to
        `retries` times without progress; the repeated current state a new stream starts with is
        skipped.
        """
        deadline = Deadline(timeout or self.settings.watch_timeout)
        request = gw.WatchJobRequest(job_id=job_id)
        last: Job | None = None
        failures = 0
        while True:
            call = self._stub.WatchJob(
                request, timeout=deadline.timeout(), metadata=self.settings.metadata
            )
            cause: grpc.RpcError | None = None
            try:
                for resp in call:
                    if resp.job == last:
                        continue
                    last = resp.job
                    failures = 0  # only progress resets the budget, not a repeated state
                    yield last
                    if is_terminal(last):
                        return
                error: errors.PixmeshError = errors.Unavailable(
                    "the watch stream ended before the job finished"
                )
            except grpc.RpcError as exc:
                error, cause = errors.from_rpc_error(exc), exc
            finally:
                call.cancel()  # a no-op when finished; frees the stream when the caller stops
            delay = retry_delay(error, failures, self.settings.retries, deadline)
            if delay is None:
                raise error from cause
            sleep(delay)
            failures += 1

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        resp: gw.CancelJobResponse = self._unary(
            self._stub.CancelJob, gw.CancelJobRequest(job_id=job_id), timeout
        )
        return resp.job

    def download_output(
        self,
        job_id: str,
        index: int = 0,
        *,
        rendition: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """The bytes of one output of a succeeded job: by index, or by the rendition's name
        (which costs a GetJob to find its index)."""
        if rendition is not None:
            index = rendition_index(self.get_job(job_id, timeout=timeout), rendition)
        request = gw.DownloadOutputRequest(job_id=job_id, index=index)
        resp: gw.DownloadOutputResponse = self._unary(self._stub.DownloadOutput, request, timeout)
        return bytes(resp.body.data)  # google.api messages are untyped

    def output_url(
        self,
        job_id: str,
        index: int = 0,
        *,
        rendition: str | None = None,
        timeout: float | None = None,
    ) -> gw.GetOutputUrlResponse:
        """A presigned GET URL of one output (by index or rendition name), with its expiry and
        the Output: fetch it with any HTTP client, without the gateway."""
        if rendition is not None:
            index = rendition_index(self.get_job(job_id, timeout=timeout), rendition)
        request = gw.GetOutputUrlRequest(job_id=job_id, index=index)
        resp: gw.GetOutputUrlResponse = self._unary(self._stub.GetOutputUrl, request, timeout)
        return resp

    def save_output(
        self,
        job_id: str,
        path: str | os.PathLike[str],
        index: int = 0,
        *,
        rendition: str | None = None,
        timeout: float | None = None,
    ) -> Path:
        """Download one output (by index or rendition name) into `path` (written whole, then
        renamed into place)."""
        data = self.download_output(job_id, index, rendition=rendition, timeout=timeout)
        return to_thread(write_atomically, Path(path), data)

    def list_operations(self, *, timeout: float | None = None) -> gw.ListOperationsResponse:
        """Supported operations with their parameters, the limits and the formats."""
        resp: gw.ListOperationsResponse = self._unary(
            self._stub.ListOperations, gw.ListOperationsRequest(), timeout
        )
        return resp

    # --- operators ----------------------------------------------------------------------------

    def fleet_status(self, *, timeout: float | None = None) -> FleetStatus:
        """The deployment's status: per service its replicas, queues (pending, in progress, the
        oldest's age, redelivered) and dead letters; jobs created and finished per second
        (`pixmesh status` prints it as a table). Parts that could not be read are listed in
        `warnings`."""
        resp: gw.GetFleetStatusResponse = self._unary(
            self._stub.GetFleetStatus, gw.GetFleetStatusRequest(), timeout
        )
        return resp.status

    # --- API keys and usage -------------------------------------------------------------------

    def create_api_key(
        self,
        name: str = "",
        scopes: Sequence[str] = (),
        *,
        ttl: timedelta | None = None,
        timeout: float | None = None,
    ) -> gw.CreateApiKeyResponse:
        """A new key of the caller's tenant (admin scope): `.secret` is the key, shown only
        here; `.key` its record. Scopes: "read", "write", "admin" (default read and write)."""
        request = gw.CreateApiKeyRequest(name=name, scopes=list(scopes))
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        resp: gw.CreateApiKeyResponse = self._unary(self._stub.CreateApiKey, request, timeout)
        return resp

    def list_api_keys(
        self, *, include_revoked: bool = False, timeout: float | None = None
    ) -> list[gw.ApiKey]:
        """The tenant's keys (admin scope): prefix, name, scopes, created, last used, expiry."""
        request = gw.ListApiKeysRequest(include_revoked=include_revoked)
        resp: gw.ListApiKeysResponse = self._unary(self._stub.ListApiKeys, request, timeout)
        return list(resp.keys)

    def revoke_api_key(self, key_id: str, *, timeout: float | None = None) -> gw.ApiKey:
        """Revoke a key now, on every gateway replica (admin scope)."""
        request = gw.RevokeApiKeyRequest(key_id=key_id)
        resp: gw.RevokeApiKeyResponse = self._unary(self._stub.RevokeApiKey, request, timeout)
        return resp.key

    def rotate_api_key(
        self,
        key_id: str,
        *,
        grace_period: timedelta | None = None,
        timeout: float | None = None,
    ) -> gw.RotateApiKeyResponse:
        """A new key replacing `key_id` (admin scope); the old one keeps working for
        `grace_period` (default one day)."""
        request = gw.RotateApiKeyRequest(key_id=key_id)
        if grace_period is not None:
            request.grace_period.FromTimedelta(grace_period)
        resp: gw.RotateApiKeyResponse = self._unary(self._stub.RotateApiKey, request, timeout)
        return resp

    def usage(self, *, timeout: float | None = None) -> gw.GetUsageResponse:
        """The tenant's limits and how much of each is used (0 as a limit: unlimited)."""
        resp: gw.GetUsageResponse = self._unary(self._stub.GetUsage, gw.GetUsageRequest(), timeout)
        return resp

    # --- deletion ----------------------------------------------------------------------------

    def delete_image(self, image_id: str, *, timeout: float | None = None) -> gw.DeletionReport:
        """Delete an image, its finished jobs, their outputs and its metadata (objects another
        image or job still uses stay). A job still running: FailedPrecondition JOBS_RUNNING."""
        request = gw.DeleteImageRequest(image_id=image_id)
        resp: gw.DeleteImageResponse = self._unary(self._stub.DeleteImage, request, timeout)
        return resp.report

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> gw.DeletionReport:
        """Delete a finished job and its outputs (those another job uses stay)."""
        request = gw.DeleteJobRequest(job_id=job_id)
        resp: gw.DeleteJobResponse = self._unary(self._stub.DeleteJob, request, timeout)
        return resp.report

    # --- upload rules -------------------------------------------------------------------------

    def set_upload_rule(
        self, kind: str, preset: str, *, timeout: float | None = None
    ) -> gw.UploadRule:
        """Every upload of `kind` ("image" or "video") then runs the gateway's preset `preset`
        as a job of its own, e.g. poster frames for every video. Replaces the kind's rule."""
        request = gw.SetUploadRuleRequest(kind=Image.Kind.Value(kind.upper()), preset=preset)
        resp: gw.SetUploadRuleResponse = self._unary(self._stub.SetUploadRule, request, timeout)
        return resp.rule

    def list_upload_rules(self, *, timeout: float | None = None) -> list[gw.UploadRule]:
        request = gw.ListUploadRulesRequest()
        resp: gw.ListUploadRulesResponse = self._unary(self._stub.ListUploadRules, request, timeout)
        return list(resp.rules)

    def delete_upload_rule(self, kind: str, *, timeout: float | None = None) -> bool:
        """Whether `kind` had a rule (idempotent)."""
        request = gw.DeleteUploadRuleRequest(kind=Image.Kind.Value(kind.upper()))
        resp: gw.DeleteUploadRuleResponse = self._unary(
            self._stub.DeleteUploadRule, request, timeout
        )
        return resp.deleted

    # --- image metadata -----------------------------------------------------------------------

    def get_image_metadata(
        self, image_id: str, *, wait: bool = True, timeout: float | None = None
    ) -> ImageMetadata:
        """The metadata of an uploaded image (EXIF, IPTC, XMP, ICC, colours, placeholders,
        hashes). Every upload is read in the background; until that is done this asks again
        within the deadline (`wait=False` raises the Unavailable METADATA_PENDING error instead)."""
        deadline = Deadline(timeout or self.settings.timeout)
        request = gw.GetImageMetadataRequest(image_id=image_id)
        while True:
            try:
                resp: gw.GetImageMetadataResponse = self._unary(
                    self._stub.GetImageMetadata, request, deadline.timeout()
                )
                return resp.metadata
            except errors.Unavailable as error:
                if not (wait and is_pending(error, deadline)):
                    raise
            sleep(METADATA_POLL_S)

    def search_images(
        self,
        *,
        page_size: int = 50,
        timeout: float | None = None,
        **filters: Unpack[SearchFilters],
    ) -> Iterator[ImageRecord]:
        """The caller's images matching every filter given (the fields of SearchImagesRequest:
        camera_make, camera_model, taken_after/taken_before (datetime), min/max_latitude and
        min/max_longitude (all four), min/max_width, min/max_height, formats (["JPEG", ...])),
        newest first, fetching pages lazily (one deadline each)."""
        request = search_request(page_size, filters)
        while True:
            resp: gw.SearchImagesResponse = self._unary(self._stub.SearchImages, request, timeout)
            yield from resp.images
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    def find_similar(
        self,
        image_id: str,
        max_distance: int | None = None,
        *,
        limit: int = 20,
        timeout: float | None = None,
    ) -> list[SimilarImage]:
        """Near-duplicates of an image: the caller's images whose pHash is within
        `max_distance` bits (default 10, at most 32), nearest first, at most `limit`."""
        request = gw.FindSimilarRequest(image_id=image_id, page_size=limit)
        if max_distance is not None:
            request.max_distance = max_distance
        resp: gw.FindSimilarResponse = self._unary(self._stub.FindSimilar, request, timeout)
        return list(resp.images)

    def process(
        self,
        source: Source,
        operations: Iterable[ops.OperationLike] = (),
        *,
        preset: str = "",
        renditions: ops.RenditionsLike | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
        on_update: Callable[[Job], None] | None = None,
        reuse: bool = True,
    ) -> Job:
        """Upload, create the job and follow it to its terminal state, which is returned (check
        `job.state`: a failed job is a result, not an exception). `on_update` sees every change;
        `reuse=False` recomputes outputs that identical work already stored."""
        # Fail on a bad op before uploading anything.
        pipeline, branches = job_pipeline(operations, preset, renditions)
        image = self.upload(source, filename)
        job = self.create_job(
            image.image_id,
            pipeline,
            idempotency_key,
            preset=preset,
            renditions=branches,
            reuse=reuse,
        )
        if on_update:
            on_update(job)
        if is_terminal(job):
            return job
        for update in self.watch_job(job.job_id):
            if on_update and update != job:  # the stream starts with the state we just saw
                on_update(update)
            job = update
        return job

    # --- bulk work: batches, archives, storage connections (issue 12) -------------------------

    def create_batch(
        self,
        source: Sequence[str] | StorageLocation,
        operations: Iterable[ops.OperationLike] = (),
        *,
        preset: str = "",
        renditions: ops.RenditionsLike | None = None,
        destination: StorageLocation | None = None,
        idempotency_key: str | None = None,
        webhook: WebhookLike | None = None,
        timeout: float | None = None,
    ) -> Batch:
        """One pipeline over many images: uploaded image ids, or a StorageLocation (a prefix of
        the platform's storage, or of a storage connection's bucket). Its jobs are created by
        the server at the pace the workers take them; follow it with get_batch / watch_batch."""
        pipeline, branches = job_pipeline(operations, preset, renditions)
        request = bt.CreateBatchRequest(
            operations=pipeline,
            preset=preset,
            renditions=branches,
            idempotency_key=idempotency_key or new_idempotency_key(),
            webhook=to_webhook(webhook),
        )
        if isinstance(source, StorageLocation):
            request.source.storage.CopyFrom(source)
        else:
            request.source.images.image_ids.extend(source)
        if destination is not None:
            request.destination.CopyFrom(destination)
        resp: bt.CreateBatchResponse = self._unary(self._stub.CreateBatch, request, timeout)
        return resp.batch

    def get_batch(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        """The batch with its progress (and its summary once it ended)."""
        resp: bt.GetBatchResponse = self._unary(
            self._stub.GetBatch, bt.GetBatchRequest(batch_id=batch_id), timeout
        )
        return resp.batch

    def watch_batch(self, batch_id: str, *, timeout: float | None = None) -> Iterator[Batch]:
        """Yield the batch as its progress changes, until it ended."""
        call = self._stub.WatchBatch(
            bt.WatchBatchRequest(batch_id=batch_id),
            timeout=timeout or self.settings.watch_timeout,
            metadata=self.settings.metadata,
        )
        try:
            for resp in call:
                yield resp.batch
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from exc
        finally:
            call.cancel()

    def list_batch_jobs(
        self,
        batch_id: str,
        state: int | str | None = None,
        *,
        page_size: int = 500,
        output_urls: bool = False,
        timeout: float | None = None,
    ) -> Iterator[BatchItem]:
        """The images of a batch in source order (their job, state, error, and a succeeded
        one's outputs), pages fetched lazily. `output_urls`: each output also carries a
        presigned GET URL (`download_url`) to fetch its bytes from object storage, not through
        the gateway (see `pixmesh._presigned.download`)."""
        request = bt.ListBatchJobsRequest(
            batch_id=batch_id, page_size=page_size, state=job_state(state), output_urls=output_urls
        )
        while True:
            resp: bt.ListBatchJobsResponse = self._unary(self._stub.ListBatchJobs, request, timeout)
            yield from resp.items
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    def cancel_batch(self, batch_id: str, *, timeout: float | None = None) -> Batch:
        resp: bt.CancelBatchResponse = self._unary(
            self._stub.CancelBatch, bt.CancelBatchRequest(batch_id=batch_id), timeout
        )
        return resp.batch

    def save_archive(
        self,
        path: str | os.PathLike[str],
        *,
        job_id: str = "",
        batch_id: str = "",
        timeout: float | None = None,
    ) -> Path:
        """Stream the zip of a job's outputs (job_id) or a batch's (batch_id) into `path`."""
        if bool(job_id) == bool(batch_id):
            raise ValueError("give a job_id or a batch_id")
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        deadline = timeout or self.settings.watch_timeout
        if job_id:
            call: Any = self._stub.DownloadJobArchive(
                bt.DownloadJobArchiveRequest(job_id=job_id),
                timeout=deadline,
                metadata=self.settings.metadata,
            )
        else:
            call = self._stub.DownloadBatchArchive(
                bt.DownloadBatchArchiveRequest(batch_id=batch_id),
                timeout=deadline,
                metadata=self.settings.metadata,
            )
        out = to_thread(partial.open, "wb")
        try:
            for resp in call:
                to_thread(out.write, bytes(resp.body.data))
        except grpc.RpcError as exc:
            raise errors.from_rpc_error(exc) from exc
        finally:
            out.close()
            call.cancel()
        partial.replace(target)
        return target

    def create_storage_connection(
        self,
        bucket: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        endpoint: str = "",
        region: str = "",
        name: str = "",
        session_token: str = "",
        timeout: float | None = None,
    ) -> StorageConnection:
        """Register an S3-compatible bucket (checked now: wrong credentials or a missing bucket
        are refused with the reason); the secret is sealed and never returned."""
        request = bt.CreateStorageConnectionRequest(
            name=name,
            endpoint=endpoint,
            bucket=bucket,
            region=region,
            credentials=StorageCredentials(
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                session_token=session_token,
            ),
        )
        resp: bt.CreateStorageConnectionResponse = self._unary(
            self._stub.CreateStorageConnection, request, timeout
        )
        return resp.connection

    def list_storage_connections(self, *, timeout: float | None = None) -> list[StorageConnection]:
        resp: bt.ListStorageConnectionsResponse = self._unary(
            self._stub.ListStorageConnections, bt.ListStorageConnectionsRequest(), timeout
        )
        return list(resp.connections)

    def delete_storage_connection(
        self, connection_id: str, *, timeout: float | None = None
    ) -> None:
        self._unary(
            self._stub.DeleteStorageConnection,
            bt.DeleteStorageConnectionRequest(connection_id=connection_id),
            timeout,
        )

    def process_folder(
        self,
        source: str | os.PathLike[str],
        destination: str | os.PathLike[str],
        operations: Iterable[ops.OperationLike] = (),
        *,
        preset: str = "",
        renditions: ops.RenditionsLike | None = None,
        concurrency: int = 4,
        on_progress: Callable[[FolderProgress], None] | None = None,
    ) -> FolderSummary:
        """Every image under `source` (by content, recursively) through one pipeline, outputs
        into `destination` under the same relative paths, with resume and DEST/summary.json
        (see pixmesh._folder). Failed images are listed in the summary, not raised."""
        return run_folder(
            self,
            Path(source),
            Path(destination),
            operations,
            preset=preset,
            renditions=renditions,
            concurrency=concurrency,
            on_progress=on_progress,
        )

    def _unary(self, rpc: Any, request: Message, timeout: float | None) -> Any:
        deadline = Deadline(timeout or self.settings.timeout)
        while True:
            try:
                return rpc(request, timeout=deadline.timeout(), metadata=self.settings.metadata)
            except grpc.RpcError as exc:
                error = errors.from_rpc_error(exc)
                delay = outage_delay(error, request, deadline) if self.settings.retries else None
                if delay is None:
                    raise error from exc
                sleep(delay)
