"""Frames out of videos: exact seeks against an independent full decode, BEST_NEAR, sheets,
previews, and the hostile files that get past the header."""

from __future__ import annotations

import io
from typing import IO, cast

import numpy as np
import pytest
from PIL import Image

from services.imaging.video.decode import KEYFRAMES_TOO_SPARSE, Video
from services.imaging.video.frames import NOTHING_ACCEPTABLE, Select, extract, positions_s
from services.imaging.video.preview import frame_count, preview
from services.imaging.video.score import score_luma
from services.imaging.video.sheet import contact_sheet, sheet_size
from services.runtime.errors import InvalidArgument
from services.runtime.video import VIDEO_CORRUPT, RangeReader, VideoLimits, frame_renditions
from tests.services.imaging import videos

LIMITS = VideoLimits()


@pytest.fixture(scope="module")
def clip() -> bytes:
    # 8 s at 25 fps with a keyframe every 2 s: every position needs a seek and a decode forward.
    return videos.clip_bytes(8.0, gop=50)


@pytest.fixture(scope="module")
def reference(clip: bytes) -> list[tuple[float, np.ndarray]]:
    return videos.decode_all(clip)


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a.astype(int) - b.astype(int)).mean() < 1.0)


def test_exact_frames_match_an_independent_full_decode(
    clip: bytes, reference: list[tuple[float, np.ndarray]]
) -> None:
    with Video(io.BytesIO(clip), LIMITS) as video:
        wanted = positions_s(video)
        assert wanted == pytest.approx([0.8, 4.0, 7.6])
        got = extract(video, wanted, Select.EXACT)
        # One seek per position, and far fewer frames decoded than the 200 of the clip.
        assert video.seeks == 3
        assert video.decoded < 110
    for frame, t in zip(got, wanted, strict=True):
        i = videos.shown_at(reference, t)
        assert frame.time_s == pytest.approx(reference[i][0])
        assert _close(np.asarray(frame.image), reference[i][1])
        assert not frame.warnings


def test_timestamps_past_the_end_give_the_last_frame(
    clip: bytes, reference: list[tuple[float, np.ndarray]]
) -> None:
    with Video(io.BytesIO(clip), LIMITS) as video:
        [last] = extract(video, positions_s(video, timestamps_s=[99.0]))
    assert _close(np.asarray(last.image), reference[-1][1])


def test_best_near_skips_a_black_segment() -> None:
    data = videos.clip_bytes(8.0, gop=50, black=[(3.5, 4.6)])
    with Video(io.BytesIO(data), LIMITS) as video:
        [exact] = extract(video, [4.0], Select.EXACT)
        [best] = extract(video, [4.0], Select.BEST_NEAR, window_s=1.0)
    assert np.asarray(exact.image).mean() < 10  # the exact frame is black
    assert best.score is not None and best.score.acceptable
    assert 3.0 <= best.time_s <= 5.0
    assert not 3.5 <= best.time_s < 4.6
    assert np.asarray(best.image).mean() > 60


def test_best_near_prefers_sharp_frames_over_blurred_ones() -> None:
    def soft_then_sharp(width: int, height: int, index: int) -> np.ndarray:
        frame = videos.scene(width, height, index)
        if index < 100:  # 0..4 s: a heavy box blur of the same scene
            k = 9
            padded = np.pad(frame.astype(np.float32), ((k, k), (k, k), (0, 0)), mode="edge")
            c = padded.cumsum(0).cumsum(1)
            s = (
                c[2 * k :, 2 * k :]
                - c[: -2 * k, 2 * k :]
                - c[2 * k :, : -2 * k]
                + c[: -2 * k, : -2 * k]
            )
            frame = (s / (2 * k) ** 2).astype(np.uint8)[:height, :width]
        return frame

    data = videos.clip_bytes(8.0, gop=50, content=soft_then_sharp)
    with Video(io.BytesIO(data), LIMITS) as video:
        [best] = extract(video, [3.8], Select.BEST_NEAR, window_s=1.0)
    assert best.time_s >= 4.0


def test_all_black_gives_exact_frames_and_a_warning() -> None:
    with Video(io.BytesIO(videos.all_black()), LIMITS) as video:
        frames = extract(video, positions_s(video), Select.BEST_NEAR)
    assert len(frames) == 3
    assert all(f.warnings == (NOTHING_ACCEPTABLE,) for f in frames)
    assert all(np.asarray(f.image).max() < 10 for f in frames)


def test_score_tells_black_flat_and_blurred_apart() -> None:
    black = score_luma(np.zeros((90, 160), np.uint8))
    flat = score_luma(np.full((90, 160), 128, np.uint8))
    sharp = score_luma(videos.scene(160, 90, 0)[..., 0])
    assert black.black and not black.acceptable
    assert flat.flat and flat.blurred and not flat.black
    assert sharp.acceptable and sharp.value > 0


def test_rotated_frames_come_out_upright() -> None:
    data = videos.clip_bytes(1.0, rotation=90)
    with Video(io.BytesIO(data), LIMITS) as video:
        [frame] = extract(video, [0.5])
    assert frame.image.size == (96, 160)


def test_sparse_keyframes_are_refused_not_ground_through() -> None:
    data = videos.clip_bytes(8.0, gop=1000)  # one keyframe for 200 frames
    video = Video(io.BytesIO(data), LIMITS, max_decoded_per_seek=50)
    with video, pytest.raises(InvalidArgument) as err:
        extract(video, [6.0])
    assert err.value.reason == KEYFRAMES_TOO_SPARSE


def test_truncated_media_is_a_permanent_failure() -> None:
    video = Video(io.BytesIO(videos.truncated_media()), LIMITS)
    with video, pytest.raises(InvalidArgument) as err:
        extract(video, [0.95])
    assert err.value.reason == VIDEO_CORRUPT


def test_fps_0_avi_is_read_at_the_bitstream_rate() -> None:
    with Video(io.BytesIO(videos.avi_rate_zero()), LIMITS) as video:
        assert video.header.fps == pytest.approx(25.0)
        assert len(extract(video, positions_s(video))) == 3


def test_contact_sheet_grid(clip: bytes, reference: list[tuple[float, np.ndarray]]) -> None:
    with Video(io.BytesIO(clip), LIMITS) as video:
        assert sheet_size(video, 6, 3, 80, 2) == (3 * 80 + 4 * 2, 2 * 48 + 3 * 2)
        sheet = contact_sheet(video, 6, columns=3, tile_width=80, gap=2)
    assert sheet.size == (248, 102)
    pixels = np.asarray(sheet)
    assert pixels[:2].max() == 0  # the gap
    # The last tile is the frame at the middle of the last sixth, shrunk.
    i = videos.shown_at(reference, 5.5 / 6 * 8.0)
    expected = np.asarray(Image.fromarray(reference[i][1]).resize((80, 48)))
    tile = pixels[2 + 48 + 2 : 2 + 48 + 2 + 48, 2 + 2 * 82 : 2 + 2 * 82 + 80]
    assert np.abs(tile.astype(int) - expected.astype(int)).mean() < 12


def test_preview_frames_and_timing(clip: bytes, reference: list[tuple[float, np.ndarray]]) -> None:
    with Video(io.BytesIO(clip), LIMITS) as video:
        result = preview(video, start_s=2.0, duration_s=1.5, fps=10, width=80)
    assert frame_count(1.5, 10) == 15
    assert len(result.frames) == 15
    assert sum(result.durations_ms) == 1500
    assert {f.size for f in result.frames} == {(80, 48)}
    # Frame k shows the video at 2.0 + k/10 s: the bar of source frame 50 + 2.5k.
    first = np.asarray(result.frames[0].resize((160, 96)))
    i = videos.shown_at(reference, 2.0)
    assert np.abs(first.astype(int) - reference[i][1].astype(int)).mean() < 12


def test_preview_is_cut_at_the_end(clip: bytes) -> None:
    with Video(io.BytesIO(clip), LIMITS) as video:
        result = preview(video, start_s=7.5, duration_s=3.0, fps=4, width=0)
    assert len(result.frames) == 2
    assert result.frames[0].size == (160, 96)


def test_a_video_job_is_planned_on_what_its_video_operation_makes() -> None:
    from pixmesh.common.v1 import image_pb2, operations_pb2
    from services.imaging.limits import Limits
    from services.imaging.plan import plan_pipeline

    video = image_pb2.Image(
        kind=image_pb2.Image.VIDEO,
        width=1920,
        height=1080,
        video=image_pb2.VideoInfo(duration_s=60.0, fps=30.0),
    )
    frames = operations_pb2.Operation(video_frames=operations_pb2.VideoFrames())
    resize = operations_pb2.Operation(resize=operations_pb2.Resize(width=640))
    renditions = frame_renditions(frames.video_frames, [])
    plan = plan_pipeline(video, [frames, resize], Limits(), renditions=renditions)
    assert [r.name for r in plan.renditions] == ["frame-1", "frame-2", "frame-3"]
    assert (plan.output_width, plan.output_height) == (640, 360)
    assert plan.output_format == image_pb2.JPEG
    assert plan.operations[0].operation == frames

    preview = operations_pb2.Operation(
        video_preview=operations_pb2.VideoPreview(duration_s=5, fps=10, width=320)
    )
    plan = plan_pipeline(video, [preview], Limits())
    assert (plan.output_width, plan.output_height, plan.output_frames) == (320, 180, 50)
    assert plan.output_format == image_pb2.WEBP
    too_long = operations_pb2.Operation(
        video_preview=operations_pb2.VideoPreview(duration_s=30, fps=10)
    )
    with pytest.raises(InvalidArgument) as err:
        plan_pipeline(video, [too_long], Limits())
    assert err.value.reason == "TOO_MANY_FRAMES"
    with pytest.raises(InvalidArgument) as err:  # an image job on a video
        plan_pipeline(video, [resize], Limits())
    assert err.value.reason == "INVALID_OPERATION"


def test_to_image_gives_the_pixels_pyav_gives(clip: bytes) -> None:
    # decode.to_image converts with one copy instead of PyAV's three; the pixels are the same.
    import av

    from services.imaging.video.decode import to_image

    with av.open(io.BytesIO(clip)) as media:
        frame = next(media.decode(video=0))
        ours, pyav = to_image(frame), frame.to_image()
    assert ours.mode == pyav.mode == "RGB"
    assert ours.size == pyav.size
    assert ours.tobytes() == pyav.tobytes()


def test_the_imaging_service_process_never_imports_a_decoder() -> None:
    # The service process plans, probes headers and unpickles the children's results; PyAV and
    # numpy (~30 MiB) load in the forkserver only (BENCHMARKS.md, Video, third pass).
    import subprocess
    import sys

    code = (
        "import pickle, sys\n"
        "import services.imaging.app\n"
        "from services.imaging.video.outputs import VideoOutputs\n"
        "pickle.loads(pickle.dumps(VideoOutputs((), {}, ())))\n"
        "print(sorted({'av', 'numpy'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _SmallBlocks(RangeReader):
    # Small fetches, so that FFmpeg's reads of these small clips miss, jump and read on too.
    block = 2 * 1024
    max_block = 8 * 1024


def _posters(source: IO[bytes]) -> list[tuple[float, bytes] | str]:
    """Each default position's frame (time, pixels), or the reason it was refused."""
    got: list[tuple[float, bytes] | str] = []
    with Video(source, LIMITS) as video:
        for t in positions_s(video):
            try:
                [frame] = extract(video, [t], Select.EXACT)
                got.append((frame.time_s, frame.image.tobytes()))
            except InvalidArgument as exc:
                got.append(exc.reason)
    return got


@pytest.mark.parametrize(
    ("container", "codec", "faststart"),
    [
        ("mp4", "libx264", False),  # `moov` at the end: FFmpeg jumps there and back
        ("mp4", "libx264", True),
        ("matroska", "libx264", False),
        ("webm", "libvpx-vp9", False),
        ("mpegts", "libx264", False),
        ("avi", "mpeg4", False),
    ],
)
def test_frames_read_through_a_url_are_the_frames_of_the_bytes(
    container: str, codec: str, faststart: bool
) -> None:
    data = videos.clip_bytes(4.0, gop=25, container=container, codec=codec, faststart=faststart)
    with videos.RangeServer() as server, _SmallBlocks(server.url(data)) as remote:
        got = _posters(cast(IO[bytes], remote))
        assert remote.requests > 1  # FFmpeg read past the head, through fetches
        assert None not in server.sizes()  # every request has an end
    assert got == _posters(io.BytesIO(data))
    assert all(not isinstance(frame, str) for frame in got)


@pytest.mark.parametrize(
    ("container", "codec"),
    [("mpegts", "libx264"), ("matroska", "libx264"), ("avi", "mpeg4"), ("mp4", "libx264")],
)
def test_exact_frames_in_every_container_are_those_of_a_full_decode(
    container: str, codec: str
) -> None:
    # MPEG-TS has no index: FFmpeg seeks it by bytes and can land past the keyframe before
    # the position, so the first frame decoded was a GOP late (0.4 s gave the 1.0 s frame) or
    # none came near the end (VIDEO_CORRUPT at 95%); the seek now goes back until it is not.
    data = videos.clip_bytes(4.0, gop=25, container=container, codec=codec)
    reference = videos.decode_all(data)
    with Video(io.BytesIO(data), LIMITS) as video:
        for t in [0.0, 0.4, 2.0, 3.8, 3.99]:
            [frame] = extract(video, [t], Select.EXACT)
            i = videos.shown_at(reference, t)
            assert frame.time_s == pytest.approx(reference[i][0]), (container, t)
            assert _close(np.asarray(frame.image), reference[i][1]), (container, t)


def test_a_job_on_a_url_reads_it_through_bounded_range_requests(clip: bytes) -> None:
    # The worker hands the child a presigned URL: the outputs are those of the bytes, and no
    # request is FFmpeg's open-ended GET.
    from pixmesh.common.v1 import image_pb2, operations_pb2
    from services.imaging.limits import Limits
    from services.imaging.video.run import run

    job = [
        operations_pb2.Operation(video_frames=operations_pb2.VideoFrames()),
        operations_pb2.Operation(convert=operations_pb2.Convert(format=image_pb2.JPEG)),
    ]
    with videos.RangeServer() as server:
        remote = run(server.url(clip), job, limits=Limits())
        assert server.ranges
        assert None not in server.sizes()
    local = run(clip, job, limits=Limits())
    assert [n for n, _ in remote.renditions] == ["frame-1", "frame-2", "frame-3"]
    assert [r.data for _, r in remote.renditions] == [r.data for _, r in local.renditions]
