"""Issue 5 end to end: every upload gets a metadata record, readable over REST (Envoy), the SDK and
grpcurl; SearchImages filters it; FindSimilar finds resized copies and not unrelated pictures;
no query crosses tenants.

Tenants "dev" and "other" are shared with the other integration tests, so every test here tags
its uploads with a camera make of its own and searches by it.
"""

from __future__ import annotations

import io
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from PIL import Image, ImageCms, ImageDraw, ImageFilter

import pixmesh
from tests.integration.rest import Json, Rest, reason
from tests.integration.test_grpcurl import grpcurl

pytestmark = pytest.mark.integration

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmp:Rating="4">'
    b"<dc:subject><rdf:Bag><rdf:li>harbour</rdf:li><rdf:li>dawn</rdf:li></rdf:Bag></dc:subject>"
    b"</rdf:Description></rdf:RDF></x:xmpmeta>"
)


def picture(seed: int, size: tuple[int, int] = (1200, 900)) -> Image.Image:
    """Soft overlapping shapes: photo-like low frequencies, different for every seed."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(40, size[0] // 4)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image.filter(ImageFilter.GaussianBlur(3))


def camera_photo(
    seed: int,
    make: str,
    *,
    model: str = "Model X",
    taken: datetime = datetime(2021, 6, 15, 14, 30),
    gps: tuple[float, float] = (48.8583, 2.2945),
    size: tuple[int, int] = (1200, 900),
) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    sub[0x9011] = "+02:00"
    sub[0x8827] = 200
    gps_ifd = exif.get_ifd(0x8825)
    lat, lon = gps
    gps_ifd[1], gps_ifd[2] = ("N" if lat >= 0 else "S"), (abs(lat), 0.0, 0.0)
    gps_ifd[3], gps_ifd[4] = ("E" if lon >= 0 else "W"), (abs(lon), 0.0, 0.0)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    picture(seed, size).save(out, "JPEG", quality=90, exif=exif, xmp=XMP, icc_profile=icc)
    return out.getvalue()


def resized_copy(data: bytes, scale: float, quality: int) -> bytes:
    """What a user finds elsewhere on the web: smaller, recompressed, no metadata."""
    image = Image.open(io.BytesIO(data))
    small = image.resize((int(image.width * scale), int(image.height * scale)))
    out = io.BytesIO()
    small.save(out, "WEBP", quality=quality)
    return out.getvalue()


def wait_metadata(rest: Rest, image_id: str, timeout: float = 30.0) -> Json:
    """GET the metadata; 503 METADATA_PENDING until the upload has been read."""
    deadline = time.monotonic() + timeout
    while True:
        resp = rest.http.get(f"/v1/images/{image_id}/metadata")
        if resp.status_code == 200:
            md: Json = resp.json()["metadata"]
            return md
        assert resp.status_code == 503 and reason(resp) == "METADATA_PENDING", resp.text
        assert time.monotonic() < deadline, f"metadata of {image_id} never arrived"
        time.sleep(0.1)


def search(rest: Rest, **params: object) -> Json:
    resp = rest.http.get("/v1/images:search", params=params)  # type: ignore[arg-type]
    assert resp.status_code == 200, resp.text
    page: Json = resp.json()
    return page


def similar(rest: Rest, image_id: str, **params: object) -> list[tuple[str, int]]:
    resp = rest.http.get(f"/v1/images/{image_id}:similar", params=params)  # type: ignore[arg-type]
    assert resp.status_code == 200, resp.text
    return [(i["image_id"], i["distance"]) for i in resp.json()["images"]]


@pytest.fixture
def make() -> str:
    """A camera make no other test uses: searches by it see only this test's uploads."""
    return f"Cam-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def photo_record(rest: Rest) -> Iterator[tuple[str, bytes]]:
    data = camera_photo(1, "PixCam Meta")
    image_id: str = rest.upload(data)["image_id"]
    wait_metadata(rest, image_id)
    yield image_id, data


def test_uploaded_photo_metadata_over_rest(rest: Rest, photo_record: tuple[str, bytes]) -> None:
    image_id, data = photo_record

    md = wait_metadata(rest, image_id)

    assert (md["format"], md["width"], md["height"], md["mode"]) == ("JPEG", 1200, 900, "RGB")
    assert (md["bit_depth"], md["frame_count"], md["size_bytes"]) == (8, 1, str(len(data)))
    exif = md["exif"]
    assert (exif["make"], exif["model"], exif["iso"]) == ("PixCam Meta", "Model X", 200)
    assert (exif["date_taken"], exif["date_taken_offset"]) == ("2021-06-15T14:30:00Z", "+02:00")
    assert exif["gps"]["latitude"] == pytest.approx(48.8583)
    assert exif["gps"]["longitude"] == pytest.approx(2.2945)
    assert md["xmp"] == {"xmp:Rating": "4", "dc:subject[1]": "harbour", "dc:subject[2]": "dawn"}
    assert md["icc_profile"] == "sRGB built-in"
    assert md["colors"]["average"].startswith("#") and 1 <= len(md["colors"]["palette"]) <= 5
    assert md["placeholders"]["blurhash"] and md["placeholders"]["thumbhash"]
    assert len(md["perceptual_hashes"]["phash"]) == len(md["perceptual_hashes"]["dhash"]) == 16
    assert md["warnings"] == []


def test_metadata_through_the_sdk_and_grpcurl(
    grpc_target: str, api_key: str, rest: Rest, photo_record: tuple[str, bytes]
) -> None:
    image_id, _ = photo_record
    over_rest = wait_metadata(rest, image_id)

    with pixmesh.Client(grpc_target, api_key=api_key) as client:
        md = client.get_image_metadata(image_id)
        copies = client.find_similar(image_id)
        found = list(client.search_images(camera_make="pixcam meta"))
    answer = json.loads(
        grpcurl(
            "-H",
            f"authorization: Bearer {api_key}",
            "-d",
            json.dumps({"image_id": image_id}),
            grpc_target,
            "pixmesh.gateway.v1.GatewayService/GetImageMetadata",
        )
    )

    assert md.exif.make == "PixCam Meta" and md.perceptual_hashes.phash
    assert md.perceptual_hashes.phash == over_rest["perceptual_hashes"]["phash"]
    assert answer["metadata"]["exif"]["model"] == "Model X"
    assert answer["metadata"]["perceptual_hashes"]["phash"] == md.perceptual_hashes.phash
    assert image_id in {r.image_id for r in found}
    assert image_id not in {s.image_id for s in copies}  # never itself


def test_find_similar_finds_a_resized_recompressed_copy_and_not_an_unrelated_image(
    rest: Rest, make: str
) -> None:
    original = camera_photo(11, make)
    ids = {
        "original": rest.upload(original)["image_id"],
        "copy": rest.upload(resized_copy(original, 0.4, 55), "image/webp")["image_id"],
        "unrelated": rest.upload(camera_photo(12, make))["image_id"],
    }
    for image_id in ids.values():
        wait_metadata(rest, image_id)

    near = similar(rest, ids["original"])  # max_distance defaults to 10
    everything = dict(similar(rest, ids["original"], max_distance=32, page_size=100))

    assert ids["copy"] in dict(near)
    assert dict(near)[ids["copy"]] <= 4
    assert ids["unrelated"] not in dict(near)
    assert everything.get(ids["unrelated"], 64) > 10
    # Similarity is symmetric: the copy finds the original.
    assert ids["original"] in dict(similar(rest, ids["copy"], max_distance=6))


def test_search_filters_and_pages(rest: Rest, make: str) -> None:
    photos = {
        "paris_2021": camera_photo(21, make, taken=datetime(2021, 6, 1), gps=(48.86, 2.35)),
        "sydney_2022": camera_photo(22, make, taken=datetime(2022, 3, 1), gps=(-33.87, 151.21)),
        "paris_2023_big": camera_photo(
            23, make, model="Model Y", taken=datetime(2023, 1, 1), gps=(48.85, 2.29),
            size=(1600, 1200),
        ),
    }  # fmt: skip
    ids = {name: rest.upload(data)["image_id"] for name, data in photos.items()}
    for image_id in ids.values():
        wait_metadata(rest, image_id)

    def names(**params: object) -> set[str]:
        found = {i["image_id"] for i in search(rest, camera_make=make.upper(), **params)["images"]}
        return {name for name, image_id in ids.items() if image_id in found}

    assert names() == set(ids)
    assert names(camera_model="model y") == {"paris_2023_big"}
    assert names(taken_after="2022-01-01T00:00:00Z") == {"sydney_2022", "paris_2023_big"}
    assert names(taken_before="2022-01-01T00:00:00Z") == {"paris_2021"}
    paris = {"min_latitude": 48, "max_latitude": 49, "min_longitude": 2, "max_longitude": 3}
    assert names(**paris) == {"paris_2021", "paris_2023_big"}
    assert names(min_width=1500) == {"paris_2023_big"}
    assert names(max_height=900, formats="JPEG") == {"paris_2021", "sydney_2022"}
    assert names(formats="PNG") == set()

    # The same search as a POST body, and page by page (newest first, no repeats).
    resp = rest.http.post("/v1/images:search", json={"camera_make": make, "min_width": 1500})
    assert [i["image_id"] for i in resp.json()["images"]] == [ids["paris_2023_big"]]
    seen, token = [], ""
    while True:
        page = search(rest, camera_make=make, page_size=2, page_token=token)
        seen += [i["image_id"] for i in page["images"]]
        if not (token := page["next_page_token"]):
            break
    assert seen == [ids["paris_2023_big"], ids["sydney_2022"], ids["paris_2021"]]


def test_queries_never_cross_tenants(rest: Rest, other_tenant: Rest, make: str) -> None:
    data = camera_photo(31, make)
    mine = rest.upload(data)["image_id"]
    theirs = other_tenant.upload(data)["image_id"]  # the very same bytes
    their_copy = other_tenant.upload(resized_copy(data, 0.5, 60), "image/webp")["image_id"]
    for client, image_id in ((rest, mine), (other_tenant, theirs), (other_tenant, their_copy)):
        wait_metadata(client, image_id)

    assert mine != theirs
    # Each sees its own record and not the other's image.
    assert rest.http.get(f"/v1/images/{theirs}/metadata").status_code == 404
    assert other_tenant.http.get(f"/v1/images/{mine}/metadata").status_code == 404
    assert reason(rest.http.get(f"/v1/images/{theirs}:similar")) == "IMAGE_NOT_FOUND"
    # Search and similarity answer from the caller's images only.
    assert [i["image_id"] for i in search(rest, camera_make=make)["images"]] == [mine]
    assert [i["image_id"] for i in search(other_tenant, camera_make=make)["images"]] == [theirs]
    assert [i for i, _ in similar(rest, mine, max_distance=32, page_size=100)].count(
        their_copy
    ) == 0
    assert their_copy in dict(similar(other_tenant, theirs))


def test_query_errors(rest: Rest) -> None:
    cases: list[tuple[httpx.Response, int, str]] = [
        (rest.http.get("/v1/images/img_missing/metadata"), 404, "IMAGE_NOT_FOUND"),
        (rest.http.get("/v1/images/img_missing:similar"), 404, "IMAGE_NOT_FOUND"),
        (rest.http.get("/v1/images:search", params={"min_latitude": 1}), 400, "INVALID_SEARCH_FILTER"),
        (rest.http.get("/v1/images:search", params={"page_token": "junk"}), 400, "BAD_PAGE_TOKEN"),
        (rest.http.get("/v1/images:search", params={"page_size": 1000}), 400, "INVALID_ARGUMENT"),
    ]  # fmt: skip
    for resp, status, expected in cases:
        assert (resp.status_code, reason(resp)) == (status, expected), resp.text
    bad_box = rest.http.get("/v1/images:search", params={"min_latitude": 1}).json()
    fields = {
        v["field"]
        for d in bad_box["details"]
        if d["@type"].endswith("BadRequest")
        for v in d["field_violations"]
    }
    assert fields == {"max_latitude", "min_longitude", "max_longitude"}
