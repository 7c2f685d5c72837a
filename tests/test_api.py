"""The REST API (PRD "API Requirements") against a real Orthanc and the embedded
store: every endpoint, every field, paging edges, pixels, caching headers and
errors. Tests taking ``api_server`` run once per backend with the same
assertions; ``test_api080`` checks that both backends answer byte-identical JSON.

``test_api090`` is the end-to-end proof: a client that knows only the PRD logs
in over real HTTP and downloads every frame of a study from a real Orthanc.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
import requests
from flask_jwt_extended import decode_token
from PIL import Image
from werkzeug.serving import make_server

from app import create_server
from scripts.orthanc_local import LocalOrthanc
from services import orthanc_ids
from tests.conftest import API_ADMIN
from tests.corpus import _relabel, package_file

DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4"), "uint8": np.dtype("u1")}
PRD_SERIES_FIELDS = {
    "seriesUid": str,
    "seriesNumber": int,
    "seriesDescription": str,
    "imageCount": int,
    "modality": str,
    "firstImageUrl": str,
}
PRD_IMAGE_FIELDS = {
    "imageNumber": int,
    "imageUrl": str,
    "instanceUid": str,
    "frameNumber": int,
    "orthancId": str,
}
UNKNOWN_STUDY = "1.2.840.999999.1"
UNKNOWN_INSTANCE = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"


def make_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client, username: str = API_ADMIN[0], password: str = API_ADMIN[1]):
    answer = client.post(
        "/api/token/", json={"username": username, "password": password}
    )
    assert answer.status_code == 200, answer.data
    return answer.get_json()


@pytest.fixture
def ref_pacs(request, api_server):
    """An independent client of the same backend as ``api_server``."""
    return request.getfixturevalue(f"{api_server.extensions['pacs'].name}_pacs")


def get_json(client, url: str, headers: dict, status: int = 200):
    answer = client.get(url, headers=headers)
    assert answer.status_code == status, (url, answer.status_code, answer.data[:300])
    assert answer.mimetype == "application/json", (url, answer.mimetype)
    return answer.get_json()


def assert_error(answer, status: int, error: str | None = None) -> dict:
    assert answer.status_code == status, (answer.status_code, answer.data[:300])
    assert answer.mimetype == "application/json", answer.data[:300]
    body = answer.get_json()
    assert set(body) == {"error", "message"} and body["message"]
    if error:
        assert body["error"] == error
    return body


def series_url(study_uid: str) -> str:
    return f"/api/pacs/studies/{study_uid}/series/"


def bulk_url(study_uid: str, series_uid: str, query: str = "") -> str:
    url = f"/api/pacs/studies/{study_uid}/series/{series_uid}/images/bulk"
    return f"{url}?{query}" if query else url


def decode_pixels(answer) -> np.ndarray:
    """A raw frame answer as an array, shaped by its X-Image-* headers."""
    assert answer.status_code == 200, answer.data[:300]
    assert answer.mimetype == "application/octet-stream"
    rows = int(answer.headers["X-Image-Rows"])
    cols = int(answer.headers["X-Image-Columns"])
    samples = int(answer.headers["X-Image-Samples"])
    dtype = DTYPES[answer.headers["X-Image-Dtype"]]
    data = answer.data
    assert len(data) == rows * cols * samples * dtype.itemsize
    pixels = np.frombuffer(data, dtype)
    return pixels.reshape((rows, cols, samples) if samples > 1 else (rows, cols))


def demo_series(corpus, number: int):
    (series,) = [s for s in corpus.demo.series if s.series_number == number]
    return series


def demo_instance_id(corpus, series, sop_uid: str) -> str:
    return orthanc_ids.instance_id(
        corpus.demo.patient_id, corpus.demo.study_uid, series.series_uid, sop_uid
    )


def codec_series(client, headers, corpus, description: str) -> dict:
    listing = get_json(client, series_url(corpus.codecs_study_uid), headers)
    (series,) = [s for s in listing["series"] if s["seriesDescription"] == description]
    return series


def shared_ct(corpus) -> tuple[str, dict[str, bytes]]:
    """The tilted head CT from ../shared/data: its study UID and SOP UID -> file bytes."""
    files = {}
    study_uid = ""
    for path in sorted((corpus.root / "shared" / "ge-head-ct").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        files[ds.SOPInstanceUID] = path.read_bytes()
        study_uid = ds.StudyInstanceUID
    return study_uid, files


# -- tokens ---------------------------------------------------------------------


def test_api001_login_answers_access_and_refresh(api_server, client):
    tokens = login(client)
    assert set(tokens) == {"access", "refresh"}
    with api_server.app_context():
        access, refresh = (
            decode_token(tokens["access"]),
            decode_token(tokens["refresh"]),
        )
    assert access["type"] == "access" and refresh["type"] == "refresh"
    assert access["sub"] == refresh["sub"] == API_ADMIN[0]
    assert access["exp"] < refresh["exp"]
    assert get_json(client, "/api/pacs/studies/", make_headers(tokens["access"]))


def test_api002_refresh_answers_a_new_working_access_token(api_server, client):
    tokens = login(client)
    answer = client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})
    assert answer.status_code == 200, answer.data
    body = answer.get_json()
    assert set(body) == {"access"}
    with api_server.app_context():
        new = decode_token(body["access"])
        old = decode_token(tokens["access"])
    assert new["type"] == "access" and new["sub"] == API_ADMIN[0]
    assert new["jti"] != old["jti"]
    assert get_json(client, "/api/pacs/studies/", make_headers(body["access"]))


# -- series ---------------------------------------------------------------------


def test_api003_series_fields_order_and_first_image(client, headers, corpus):
    body = get_json(client, series_url(corpus.demo.study_uid), headers)
    assert set(body) == {"series"}
    listing = body["series"]
    generated = sorted(corpus.demo.series, key=lambda g: g.series_number)
    assert [s["seriesUid"] for s in listing] == [g.series_uid for g in generated]
    numbers = [s["seriesNumber"] for s in listing]
    assert numbers == sorted(numbers)
    for entry, g in zip(listing, generated, strict=True):
        for field, kind in PRD_SERIES_FIELDS.items():
            assert isinstance(entry[field], kind), (field, entry)
        assert entry["seriesNumber"] == g.series_number
        assert entry["seriesDescription"] == (g.description or "")
        assert entry["imageCount"] == g.image_count
        assert entry["modality"] == g.modality
        first = demo_instance_id(corpus, g, g.instance_uids[0])
        assert entry["firstImageUrl"] == f"/api/pacs/instances/{first}/frames/1"
    assert any(s["seriesDescription"] == "" for s in listing)


def test_api004_first_image_url_is_the_first_of_the_bulk_listing(
    client, headers, corpus
):
    """The MR of ../shared/data has files not in slice order, the CODECS study
    multi-frame instances: firstImageUrl is still image 1 in display order."""
    study_uid = pydicom.dcmread(
        next((corpus.root / "shared" / "ge-mprage-mr").glob("*.MRDC.*")),
        stop_before_pixels=True,
    ).StudyInstanceUID
    for study in (study_uid, corpus.codecs_study_uid):
        for entry in get_json(client, series_url(study), headers)["series"]:
            bulk = get_json(
                client, bulk_url(study, entry["seriesUid"], "count=1"), headers
            )
            assert entry["firstImageUrl"] == bulk["images"][0]["imageUrl"]
            assert entry["firstImageUrl"].endswith("/frames/1")
            assert bulk["totalImages"] == entry["imageCount"]


# A study with two image series between a structured report and a presentation
# state: neither of those has an image, so the series endpoint leaves them out.
@pytest.fixture(scope="module")
def mixed_study(tmp_path_factory):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    root = tmp_path_factory.mktemp("mixed")
    study_uid = generate_uid(entropy_srcs=["mixed-study"])
    for number, modality, sop_class in (
        (1, "SR", "1.2.840.10008.5.1.4.1.1.88.11"),  # Basic Text SR
        (3, "PR", "1.2.840.10008.5.1.4.1.1.11.1"),  # Grayscale Softcopy PS
    ):
        sop_uid = generate_uid(entropy_srcs=["mixed", modality])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.PatientID, ds.PatientName = "MIXED", "MIXED^TEST"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["mixed", modality, "series"])
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, 1
        ds.StudyDate = "20240302"
        ds.save_as(root / f"{modality}.dcm", enforce_file_format=True)
    images = {}
    for number, name in ((2, "MR_small.dcm"), (4, "CT_small.dcm")):
        sop = _relabel(
            package_file(name), root / name, study_uid, "MIXED", number, f"image {name}"
        )
        images[number] = sop
    return root, study_uid, images


@pytest.fixture(scope="module")
def mixed_orthanc(mixed_study, tmp_path_factory):
    root, _, _ = mixed_study
    with LocalOrthanc(workdir=tmp_path_factory.mktemp("mixed-orthanc")) as server:
        server.upload(sorted(root.glob("*.dcm")))
        yield server


@pytest.fixture(params=["orthanc", "embedded"])
def mixed_api(request, mixed_study, api_settings):
    root, _, _ = mixed_study
    if request.param == "orthanc":
        orthanc = request.getfixturevalue("mixed_orthanc")
        settings = api_settings(
            orthanc_url=orthanc.url,
            orthanc_username=orthanc.auth[0],
            orthanc_password=orthanc.auth[1],
        )
    else:
        settings = api_settings(dicom_dir=root, demo_study=False)
    return create_server(settings)


def test_api005_series_without_images_are_left_out(mixed_api, mixed_study):
    _, study_uid, images = mixed_study
    client = mixed_api.test_client()
    headers = make_headers(login(client)["access"])
    listing = get_json(client, series_url(study_uid), headers)["series"]
    assert [(s["seriesNumber"], s["modality"]) for s in listing] == [
        (2, "MR"),
        (4, "CT"),
    ]
    assert [s["imageCount"] for s in listing] == [1, 1]
    for s in listing:
        (image,) = get_json(client, bulk_url(study_uid, s["seriesUid"]), headers)[
            "images"
        ]
        assert image["instanceUid"] == images[s["seriesNumber"]]
        assert s["firstImageUrl"] == image["imageUrl"]
    ids = get_json(client, f"/api/pacs/studies/{study_uid}/image-ids/", headers)
    assert ids["total"] == 2 == len(ids["imageIds"])
    (study,) = get_json(client, "/api/pacs/studies/?patientId=MIXED", headers)[
        "studies"
    ]
    assert study["imageCount"] == 2


# -- bulk -----------------------------------------------------------------------


THORAX_1MM = 3  # demo series number: 120 images of 256 x 256


def test_api010_bulk_first_page_fields(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)
    body = get_json(
        client,
        bulk_url(corpus.demo.study_uid, g.series_uid, "start=0&count=50"),
        headers,
    )
    assert set(body) == {"images", "totalImages", "hasMore"}
    assert body["totalImages"] == 120 and body["hasMore"] is True
    images = body["images"]
    assert len(images) == 50
    for position, image in enumerate(images):
        for field, kind in PRD_IMAGE_FIELDS.items():
            assert isinstance(image[field], kind), (field, image)
        assert image["imageNumber"] == position + 1
        assert image["frameNumber"] == 1
        assert image["instanceUid"] == g.instance_uids[position]
        assert image["orthancId"] == demo_instance_id(corpus, g, image["instanceUid"])
        assert image["imageUrl"] == (
            f"/api/pacs/instances/{image['orthancId']}/frames/{image['frameNumber']}"
        )
    default = get_json(client, bulk_url(corpus.demo.study_uid, g.series_uid), headers)
    assert default == body  # start=0, count=50 are the defaults


@pytest.mark.parametrize(
    "query, numbers, has_more",
    [
        ("count=1", [1], True),
        ("start=0&count=500", list(range(1, 121)), False),
        ("start=119&count=1", [120], False),  # the last image alone
        ("start=110&count=10", list(range(111, 121)), False),  # ends exactly at the end
        ("start=110&count=11", list(range(111, 121)), False),  # asks past the end
        ("start=109&count=10", list(range(110, 120)), True),  # one image left
        ("start=120&count=50", [], False),  # just past the end
        ("start=5000", [], False),  # far beyond the end
    ],
)
def test_api011_bulk_paging_edges(client, headers, corpus, query, numbers, has_more):
    g = demo_series(corpus, THORAX_1MM)
    body = get_json(
        client, bulk_url(corpus.demo.study_uid, g.series_uid, query), headers
    )
    assert [i["imageNumber"] for i in body["images"]] == numbers
    assert body["hasMore"] is has_more
    assert body["totalImages"] == 120


def test_api012_bulk_pages_join_up_to_the_whole_series(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)
    whole = get_json(
        client, bulk_url(corpus.demo.study_uid, g.series_uid, "count=500"), headers
    )
    pages, start = [], 0
    while True:
        page = get_json(
            client,
            bulk_url(corpus.demo.study_uid, g.series_uid, f"start={start}&count=7"),
            headers,
        )
        pages.append(page)
        start += 7
        if not page["hasMore"]:
            break
    assert len(pages) == 18  # 17 full pages of 7 and one of 1
    assert [len(p["images"]) for p in pages] == [7] * 17 + [1]
    assert all(p["hasMore"] for p in pages[:-1])
    joined = [i for p in pages for i in p["images"]]
    assert joined == whole["images"]
    assert [i["imageNumber"] for i in joined] == list(range(1, 121))


@pytest.mark.parametrize(
    "query",
    [
        "count=0",
        "count=501",
        "count=-1",
        "count=abc",
        "count=1.5",
        "count=%201",
        "start=-1",
        "start=abc",
        "start=1e3",
    ],
)
def test_api013_bulk_rejects_bad_paging(client, headers, corpus, query):
    g = demo_series(corpus, THORAX_1MM)
    answer = client.get(
        bulk_url(corpus.demo.study_uid, g.series_uid, query), headers=headers
    )
    body = assert_error(answer, 400, "bad_request")
    assert query.split("=")[0] in body["message"]


def test_api014_bulk_multiframe_instance_gives_one_image_per_frame(
    client, headers, corpus
):
    series = codec_series(client, headers, corpus, "multi-frame, 10 frames")
    assert series["imageCount"] == 10
    pages = [
        get_json(
            client,
            bulk_url(
                corpus.codecs_study_uid, series["seriesUid"], f"start={s}&count=4"
            ),
            headers,
        )
        for s in (0, 4, 8)
    ]
    assert [p["hasMore"] for p in pages] == [True, True, False]
    images = [i for p in pages for i in p["images"]]
    assert [i["frameNumber"] for i in images] == list(range(1, 11))
    assert [i["imageNumber"] for i in images] == list(range(1, 11))
    assert len({i["orthancId"] for i in images}) == 1
    assert len({i["instanceUid"] for i in images}) == 1
    orthanc_id = images[0]["orthancId"]
    assert [i["imageUrl"] for i in images] == [
        f"/api/pacs/instances/{orthanc_id}/frames/{n}" for n in range(1, 11)
    ]
    assert series["firstImageUrl"] == images[0]["imageUrl"]


def test_api015_bulk_of_an_unknown_or_foreign_series_is_not_found(
    client, headers, corpus
):
    g = demo_series(corpus, THORAX_1MM)
    foreign = get_json(client, series_url(corpus.codecs_study_uid), headers)["series"][
        0
    ]
    for url in (
        bulk_url(UNKNOWN_STUDY, g.series_uid),
        bulk_url(corpus.demo.study_uid, "1.2.840.999999.2"),
        bulk_url(corpus.demo.study_uid, foreign["seriesUid"]),  # of another study
    ):
        assert_error(client.get(url, headers=headers), 404, "not_found")


# -- image ids --------------------------------------------------------------------


def test_api020_image_ids_cover_every_image_of_the_study(client, headers, corpus):
    for study_uid in (corpus.demo.study_uid, corpus.codecs_study_uid):
        body = get_json(client, f"/api/pacs/studies/{study_uid}/image-ids/", headers)
        assert set(body) == {"imageIds", "total"}
        series = get_json(client, series_url(study_uid), headers)["series"]
        assert body["total"] == sum(s["imageCount"] for s in series)
        assert body["total"] == len(body["imageIds"]) == len(set(body["imageIds"]))
        for image_id in body["imageIds"]:
            assert image_id.startswith("wadouri:/api/pacs/instances/"), image_id
        # each id names a file the API serves
        for image_id in body["imageIds"][:: max(1, len(body["imageIds"]) // 10)]:
            path = urlsplit(image_id.removeprefix("wadouri:")).path
            assert client.get(path, headers=headers).status_code == 200, image_id
    (study,) = get_json(
        client, f"/api/pacs/studies/?patientId={corpus.demo.patient_id}", headers
    )["studies"]
    demo = get_json(
        client, f"/api/pacs/studies/{corpus.demo.study_uid}/image-ids/", headers
    )
    assert (
        demo["total"]
        == study["imageCount"]
        == sum(g.image_count for g in corpus.demo.series)
    )


# -- DICOM files ------------------------------------------------------------------


def test_api030_file_is_the_stored_file(client, headers, corpus):
    for sop_uid, path in corpus.codec_files.items():
        series_uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
        instance = orthanc_ids.instance_id(
            "CODECS", corpus.codecs_study_uid, series_uid, sop_uid
        )
        answer = client.get(f"/api/pacs/instances/{instance}/file", headers=headers)
        assert answer.status_code == 200, path.name
        assert answer.mimetype == "application/dicom"
        assert answer.data == path.read_bytes(), path.name
        assert pydicom.dcmread(io.BytesIO(answer.data)).SOPInstanceUID == sop_uid


def test_api031_dicomweb_is_multipart_with_the_file(client, headers, corpus):
    g = demo_series(corpus, 1)
    instance = demo_instance_id(corpus, g, g.instance_uids[0])
    answer = client.get(f"/api/pacs/instances/{instance}/dicomweb", headers=headers)
    assert answer.status_code == 200
    content_type = answer.headers["Content-Type"]
    assert answer.mimetype == "multipart/related"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + answer.data
    )
    assert message.is_multipart()
    assert message.get_param("type") == "application/dicom"
    (part,) = message.get_payload()
    assert part.get_content_type() == "application/dicom"
    assert part.get_payload(decode=True) == g.files[0].read_bytes()


# -- frames -----------------------------------------------------------------------


def test_api040_ct_frame_is_hounsfield_units(client, headers, corpus, ref_pacs):
    g = demo_series(corpus, 2)  # CT thorax 5 mm
    instance = demo_instance_id(corpus, g, g.instance_uids[len(g.instance_uids) // 2])
    answer = client.get(f"/api/pacs/instances/{instance}/frames/1", headers=headers)
    pixels = decode_pixels(answer)
    assert answer.headers["X-Image-Dtype"] in ("int16", "float32")
    assert answer.headers["X-Image-Samples"] == "1"
    assert answer.headers["X-Photometric"] == "MONOCHROME2"
    meta = ref_pacs.get_instance_meta(instance)
    assert pixels.shape == (meta.rows, meta.columns) == (512, 512)
    assert float(answer.headers["X-Window-Center"]) == meta.window_center
    assert float(answer.headers["X-Window-Width"]) == meta.window_width
    expected = ref_pacs.get_frame(instance, 0)
    assert np.array_equal(pixels.astype(np.float32), expected)
    assert pixels.min() < -900 and pixels.max() > 300  # air and bone, in HU
    # the value range and where the slice lies, for a viewer
    assert float(answer.headers["X-Pixel-Min"]) == pixels.min()
    assert float(answer.headers["X-Pixel-Max"]) == pixels.max()
    assert float(answer.headers["X-Slice-Location"]) == meta.slice_location
    assert float(answer.headers["X-Slice-Thickness"]) == 5.0
    position = [float(v) for v in answer.headers["X-Image-Position"].split("\\")]
    assert position == pytest.approx(meta.image_position)


def test_api041_colour_frame_is_rgb_bytes(client, headers, corpus, ref_pacs):
    for description in ("RGB uncompressed", "JPEG baseline YBR colour"):
        series = codec_series(client, headers, corpus, description)
        answer = client.get(series["firstImageUrl"], headers=headers)
        pixels = decode_pixels(answer)
        assert answer.headers["X-Image-Dtype"] == "uint8"
        assert answer.headers["X-Image-Samples"] == "3"
        instance = series["firstImageUrl"].split("/")[4]
        meta = ref_pacs.get_instance_meta(instance)
        assert pixels.shape == (meta.rows, meta.columns, 3)
        assert np.array_equal(pixels, ref_pacs.get_frame(instance, 0)), description


def test_api042_frames_of_a_multiframe_instance(client, headers, corpus, ref_pacs):
    series = codec_series(client, headers, corpus, "multi-frame, 10 frames")
    images = get_json(
        client, bulk_url(corpus.codecs_study_uid, series["seriesUid"]), headers
    )["images"]
    decoded = []
    for image in images:
        pixels = decode_pixels(client.get(image["imageUrl"], headers=headers))
        expected = ref_pacs.get_frame(image["orthancId"], image["frameNumber"] - 1)
        assert np.array_equal(pixels.astype(np.float32), expected.astype(np.float32))
        decoded.append(pixels)
    assert not np.array_equal(decoded[0], decoded[-1])  # frame 10 is not frame 1


def test_api043_frame_as_png_or_jpeg_on_accept(client, headers, corpus):
    g = demo_series(corpus, 2)
    instance = demo_instance_id(corpus, g, g.instance_uids[5])
    url = f"/api/pacs/instances/{instance}/frames/1"
    png = client.get(url, headers={**headers, "Accept": "image/png"})
    assert png.status_code == 200 and png.mimetype == "image/png"
    image = Image.open(io.BytesIO(png.data))
    assert image.format == "PNG" and image.size == (512, 512) and image.mode == "L"
    jpeg = client.get(url, headers={**headers, "Accept": "image/jpeg"})
    assert jpeg.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    # a browser's generic Accept still gets the raw pixels the PRD clients expect
    raw = client.get(url, headers={**headers, "Accept": "*/*"})
    assert raw.mimetype == "application/octet-stream"


def test_api044_rendered_frame_with_window_size_and_format(client, headers, corpus):
    g = demo_series(corpus, 2)
    instance = demo_instance_id(corpus, g, g.instance_uids[20])
    base = f"/api/pacs/instances/{instance}/frames/1/rendered"

    def picture(query: str) -> Image.Image:
        answer = client.get(f"{base}?{query}", headers=headers)
        assert answer.status_code == 200, answer.data[:200]
        return Image.open(io.BytesIO(answer.data))

    soft = picture("windowCenter=40&windowWidth=400")
    assert soft.format == "PNG" and soft.size == (512, 512)
    lung = picture("windowCenter=-600&windowWidth=1500")
    assert not np.array_equal(np.asarray(soft), np.asarray(lung))
    thumb = picture("size=128&format=jpeg&quality=70")
    assert thumb.format == "JPEG" and max(thumb.size) == 128
    assert picture("").size == (512, 512)  # the image's own window
    for bad in (
        "windowCenter=40",
        "windowWidth=400",
        "windowCenter=40&windowWidth=0",
        "windowCenter=x&windowWidth=1",
        "windowCenter=nan&windowWidth=1",
        "size=4096",
        "format=gif",
        "quality=0",
    ):
        assert_error(client.get(f"{base}?{bad}", headers=headers), 400, "bad_request")


def test_api045_etag_and_long_private_cache(client, headers, corpus):
    g = demo_series(corpus, 2)
    instance = demo_instance_id(corpus, g, g.instance_uids[0])
    other = demo_instance_id(corpus, g, g.instance_uids[1])
    frames = f"/api/pacs/instances/{instance}/frames/1"
    etags = set()
    for url, accept in (
        (f"/api/pacs/instances/{instance}/file", None),
        (f"/api/pacs/instances/{instance}/dicomweb", None),
        (frames, None),
        (frames, "image/png"),
        (f"{frames}/rendered?windowCenter=40&windowWidth=400&size=64", None),
        (f"/api/pacs/instances/{other}/frames/1", None),
    ):
        request_headers = {**headers, **({"Accept": accept} if accept else {})}
        first = client.get(url, headers=request_headers)
        assert first.status_code == 200, url
        etag = first.headers["ETag"]
        etags.add(etag)
        cache = first.headers["Cache-Control"]
        assert "private" in cache and "public" not in cache
        max_age = int(cache.split("max-age=")[1].split(",")[0])
        assert max_age >= 30 * 24 * 3600, cache
        again = client.get(url, headers={**request_headers, "If-None-Match": etag})
        assert again.status_code == 304, url
        assert again.data == b""
        stale = client.get(url, headers={**request_headers, "If-None-Match": '"nope"'})
        assert stale.status_code == 200 and stale.data == first.data
    assert len(etags) == 6  # every representation has its own tag


def test_api046_big_json_is_gzipped_on_request(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)
    for url in (
        f"/api/pacs/studies/{corpus.demo.study_uid}/image-ids/",
        bulk_url(corpus.demo.study_uid, g.series_uid, "count=500"),
    ):
        plain = client.get(url, headers=headers)
        assert "Content-Encoding" not in plain.headers
        packed = client.get(
            url, headers={**headers, "Accept-Encoding": "gzip, deflate"}
        )
        assert packed.status_code == 200
        assert packed.headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in packed.headers["Vary"]
        assert (
            int(packed.headers["Content-Length"]) == len(packed.data) < len(plain.data)
        )
        assert gzip.decompress(packed.data) == plain.data
    small = client.get(
        bulk_url(corpus.demo.study_uid, g.series_uid, "count=1"),
        headers={**headers, "Accept-Encoding": "gzip"},
    )
    assert "Content-Encoding" not in small.headers  # not worth it under 1 KiB


def test_api047_frame_numbers_out_of_range(client, headers, corpus):
    g = demo_series(corpus, 2)
    single = demo_instance_id(corpus, g, g.instance_uids[0])
    multi = codec_series(client, headers, corpus, "multi-frame, 10 frames")
    multi_id = multi["firstImageUrl"].split("/")[4]
    cases = [
        (single, "0", 400),
        (single, "x", 400),
        (single, "-1", 400),
        (single, "1.0", 400),
        (single, "100001", 400),
        (single, "2", 404),  # a single-frame instance
        (single, "99999", 404),
        (multi_id, "11", 404),
        (multi_id, "10", 200),
        ("not-an-id", "1", 400),
        (UNKNOWN_INSTANCE, "1", 404),
    ]
    for instance, frame, status in cases:
        for suffix in ("", "/rendered"):
            url = f"/api/pacs/instances/{instance}/frames/{frame}{suffix}"
            answer = client.get(url, headers=headers)
            if status == 200:
                assert answer.status_code == 200, url
            else:
                assert_error(answer, status)


def test_api048_every_frame_representation_varies_on_accept(client, headers, corpus):
    g = demo_series(corpus, 2)
    url = f"/api/pacs/instances/{demo_instance_id(corpus, g, g.instance_uids[0])}/frames/1"
    for accept in ("application/octet-stream", "image/png", "image/jpeg"):
        answer = client.get(url, headers={**headers, "Accept": accept})
        assert answer.status_code == 200
        assert "Accept" in answer.headers.get("Vary", ""), accept


# -- studies search ---------------------------------------------------------------


def test_api050_studies_search_filters_and_paging(client, headers, corpus):
    everything = get_json(client, "/api/pacs/studies/?limit=500", headers)
    assert set(everything) == {"studies", "limit", "offset", "hasMore"}
    studies = everything["studies"]
    n = len(studies)
    assert n == 8 and everything["hasMore"] is False
    (demo,) = [s for s in studies if s["studyUid"] == corpus.demo.study_uid]
    assert demo == {
        "studyUid": corpus.demo.study_uid,
        "orthancId": orthanc_ids.study_id(
            corpus.demo.patient_id, corpus.demo.study_uid
        ),
        "patientName": "DEMO^PATIENT",
        "patientId": "DEMO0001",
        "studyDate": "20260115",
        "studyDescription": "Demo CT/MR study",
        "accessionNumber": "DEMO0001",
        "modalities": ["CT", "MR"],
        "seriesCount": 8,
        "imageCount": sum(g.image_count for g in corpus.demo.series),
    }
    default = get_json(client, "/api/pacs/studies/", headers)
    assert default["limit"] == 50 and default["offset"] == 0
    assert default["studies"] == studies

    pages, offset = [], 0
    while True:
        page = get_json(client, f"/api/pacs/studies/?limit=3&offset={offset}", headers)
        assert page["limit"] == 3 and page["offset"] == offset
        pages.append(page)
        offset += 3
        if not page["hasMore"]:
            break
    assert [len(p["studies"]) for p in pages] == [3, 3, n - 6]
    assert [s for p in pages for s in p["studies"]] == studies
    beyond = get_json(client, f"/api/pacs/studies/?offset={n}", headers)
    assert beyond["studies"] == [] and beyond["hasMore"] is False
    exact = get_json(client, f"/api/pacs/studies/?limit={n}", headers)
    assert len(exact["studies"]) == n and exact["hasMore"] is False

    def uids(query: str) -> list[str]:
        return [
            s["studyUid"]
            for s in get_json(client, f"/api/pacs/studies/?{query}", headers)["studies"]
        ]

    assert uids("patientName=demo*") == [corpus.demo.study_uid]  # case-insensitive
    assert uids("patientName=nobody*") == []
    assert uids("patientId=CODECS") == [corpus.codecs_study_uid]
    assert uids("accession=DEMO0001") == [corpus.demo.study_uid]
    assert uids("dateFrom=20260101&dateTo=20261231") == [corpus.demo.study_uid]
    assert uids("dateFrom=20270101") == []
    mr = set(uids("modality=MR"))
    assert {corpus.demo.study_uid, corpus.codecs_study_uid} <= mr
    assert corpus.broken_study_uid in mr and len(mr) < 7
    for bad in (
        "limit=0",
        "limit=501",
        "limit=x",
        "offset=-1",
        "dateFrom=2026",
        "dateTo=2026-01-01",
    ):
        assert_error(
            client.get(f"/api/pacs/studies/?{bad}", headers=headers), 400, "bad_request"
        )


# -- errors -----------------------------------------------------------------------


def test_api051_unknown_study_series_instance_are_json_404(client, headers, corpus):
    g = demo_series(corpus, 2)
    for url in (
        series_url(UNKNOWN_STUDY),
        f"/api/pacs/studies/{UNKNOWN_STUDY}/image-ids/",
        bulk_url(UNKNOWN_STUDY, g.series_uid),
        bulk_url(corpus.demo.study_uid, "1.2.840.999999.3"),
        f"/api/pacs/instances/{UNKNOWN_INSTANCE}/file",
        f"/api/pacs/instances/{UNKNOWN_INSTANCE}/dicomweb",
        f"/api/pacs/instances/{UNKNOWN_INSTANCE}/frames/1",
        f"/api/pacs/instances/{UNKNOWN_INSTANCE}/frames/1/rendered",
    ):
        assert_error(client.get(url, headers=headers), 404, "not_found")


def test_api052_unknown_api_paths_are_json_404(client, headers):
    for method, url in (
        ("GET", "/api/xyz"),
        ("POST", "/api/xyz"),
        ("DELETE", "/api/xyz/abc"),
        ("GET", "/api/pacs/"),
        ("GET", "/api/pacs/series/"),
        ("GET", "/api/pacs/studies/1.2.3/nothing/"),
        ("GET", "/api/pacs/instances/"),
    ):
        answer = client.open(url, method=method, headers=headers)
        body = assert_error(answer, 404, "not_found")
        assert url in body["message"]


def test_api053_wrong_method_on_a_route_is_json_405(client, headers, corpus):
    for method, url, allowed in (
        ("POST", "/api/pacs/studies/", "GET"),
        ("DELETE", series_url(corpus.demo.study_uid), "GET"),
        ("PUT", "/api/pacs/instances/" + UNKNOWN_INSTANCE + "/file", "GET"),
        ("GET", "/api/token/", "POST"),
        ("GET", "/api/token/refresh/", "POST"),
    ):
        answer = client.open(url, method=method, headers=headers)
        assert_error(answer, 405, "method_not_allowed")
        assert allowed in answer.headers["Allow"], (url, answer.headers.get("Allow"))


def test_api060_tilted_ct_from_shared_data_end_to_end(
    client, headers, corpus, ref_pacs
):
    study_uid, files = shared_ct(corpus)
    (study,) = get_json(
        client, "/api/pacs/studies/?patientName=REMOVED&modality=CT", headers
    )["studies"]
    assert study["studyUid"] == study_uid and study["imageCount"] == 28
    (series,) = get_json(client, series_url(study_uid), headers)["series"]
    assert series["seriesDescription"] == "" and series["modality"] == "CT"
    assert series["imageCount"] == 28
    body = get_json(
        client, bulk_url(study_uid, series["seriesUid"], "count=50"), headers
    )
    assert body["totalImages"] == 28 and body["hasMore"] is False
    images = body["images"]
    assert {i["instanceUid"] for i in images} == set(files)
    assert series["firstImageUrl"] == images[0]["imageUrl"]
    # along the tilted stack: the gantry tilt must not shuffle the slices
    positions = []
    for image in images:
        meta = ref_pacs.get_instance_meta(image["orthancId"])
        iop = np.array(meta.image_orientation)
        positions.append(float(np.dot(np.cross(iop[:3], iop[3:]), meta.image_position)))
    assert positions == sorted(positions)
    for image in (images[0], images[14], images[-1]):
        hu = decode_pixels(client.get(image["imageUrl"], headers=headers))
        assert np.array_equal(
            hu.astype(np.float32), ref_pacs.get_frame(image["orthancId"])
        )
        assert hu.min() < -500 and hu.max() > 500  # air around the head, skull
        dicom = client.get(
            f"/api/pacs/instances/{image['orthancId']}/file", headers=headers
        )
        assert dicom.data == files[image["instanceUid"]]
        png = client.get(
            f"{image['imageUrl']}/rendered?windowCenter=40&windowWidth=80",
            headers=headers,
        )
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.data)).size == hu.shape[::-1]


def test_api061_undecodable_files_answer_422(client, headers, corpus):
    listing = get_json(client, series_url(corpus.broken_study_uid), headers)["series"]
    assert len(listing) == len(corpus.broken_files)
    for series in listing:
        for url in (series["firstImageUrl"], series["firstImageUrl"] + "/rendered"):
            assert_error(client.get(url, headers=headers), 422, "undecodable")


# -- Orthanc down -------------------------------------------------------------------


@pytest.fixture(scope="module")
def down_api(api_settings):
    """An API whose Orthanc does not answer (the discard port)."""
    return create_server(api_settings(orthanc_url="http://127.0.0.1:9"))


def test_api070_orthanc_down_is_503_with_retry_after(down_api, corpus):
    client = down_api.test_client()
    headers = make_headers(login(client)["access"])  # users do not need the PACS
    g = demo_series(corpus, 2)
    instance = demo_instance_id(corpus, g, g.instance_uids[0])
    for url in (
        "/api/pacs/studies/",
        series_url(corpus.demo.study_uid),
        bulk_url(corpus.demo.study_uid, g.series_uid),
        f"/api/pacs/studies/{corpus.demo.study_uid}/image-ids/",
        f"/api/pacs/instances/{instance}/file",
        f"/api/pacs/instances/{instance}/dicomweb",
        f"/api/pacs/instances/{instance}/frames/1",
        f"/api/pacs/instances/{instance}/frames/1/rendered",
    ):
        answer = client.get(url, headers=headers)
        assert_error(answer, 503, "pacs_unavailable")
        assert int(answer.headers["Retry-After"]) > 0, url


def test_api071_retry_after_only_where_it_means_something(down_api, api_server, corpus):
    """503 from a down PACS: retry in 5 s (not the rate limiter's window);
    successful answers carry no Retry-After at all."""
    client = down_api.test_client()
    headers = make_headers(login(client)["access"])
    answer = client.get(series_url(corpus.demo.study_uid), headers=headers)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    up = api_server.test_client()
    ok = up.get(
        series_url(corpus.demo.study_uid), headers=make_headers(login(up)["access"])
    )
    assert ok.status_code == 200
    assert "Retry-After" not in ok.headers


# -- both backends ------------------------------------------------------------------


def test_api080_both_backends_answer_the_same_json(orthanc_api, embedded_api, corpus):
    clients = [orthanc_api.test_client(), embedded_api.test_client()]
    heads = [make_headers(login(c)["access"]) for c in clients]

    def both(url: str):
        first, second = (
            get_json(c, url, h) for c, h in zip(clients, heads, strict=True)
        )
        assert first == second, url
        return first

    studies = both("/api/pacs/studies/?limit=500")["studies"]
    assert len(studies) == 8
    for study in studies:
        uid = study["studyUid"]
        both(f"/api/pacs/studies/{uid}/image-ids/")
        for series in both(series_url(uid))["series"]:
            both(bulk_url(uid, series["seriesUid"], "count=500"))
            both(bulk_url(uid, series["seriesUid"], "start=3&count=2"))


# -- the must-show ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live_orthanc_api(orthanc_api):
    """``orthanc_api`` served over real HTTP by werkzeug in a thread."""
    server = make_server("127.0.0.1", 0, orthanc_api, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.mark.parametrize("study", ["demo", "codecs"])
def test_api090_prd_client_downloads_every_frame_over_http(
    live_orthanc_api, orthanc_pacs, corpus, study
):
    """A client that knows only the PRD: log in, list the series, page through
    each with the bulk endpoint, download every frame, 4 at a time."""
    base = live_orthanc_api
    study_uid = {"demo": corpus.demo.study_uid, "codecs": corpus.codecs_study_uid}[
        study
    ]
    login_answer = requests.post(
        f"{base}/api/token/",
        json={"username": API_ADMIN[0], "password": API_ADMIN[1]},
        timeout=30,
    )
    assert login_answer.status_code == 200
    access = login_answer.json()["access"]
    session = requests.Session()
    session.headers.update(make_headers(access))

    listing = session.get(f"{base}/api/pacs/studies/{study_uid}/series/", timeout=30)
    assert listing.status_code == 200
    series = listing.json()["series"]
    assert series

    urls: list[tuple[str, str]] = []  # (imageUrl, orthancId)
    for s in series:
        start, pages = 0, 0
        while True:
            page = session.get(
                f"{base}/api/pacs/studies/{study_uid}/series/{s['seriesUid']}/images/bulk",
                params={"start": start, "count": 7},
                timeout=30,
            )
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["totalImages"] == s["imageCount"]
            urls += [(i["imageUrl"], i["orthancId"]) for i in body["images"]]
            start += 7
            pages += 1
            if not body["hasMore"]:
                break
        assert pages == -(-s["imageCount"] // 7)  # ceil: several pages where needed
    assert urls[0][0] == series[0]["firstImageUrl"]
    assert len(set(urls)) == len(urls)

    local = threading.local()

    def fetch(item: tuple[str, str]) -> tuple[str, str, int, dict]:
        url, orthanc_id = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers.update(make_headers(access))
        answer = local.session.get(base + url, timeout=60)
        return (
            url,
            orthanc_id,
            answer.status_code,
            {
                "length": len(answer.content),
                "dtype": answer.headers.get("X-Image-Dtype"),
                "type": answer.headers.get("Content-Type"),
            },
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(fetch, urls))

    for url, orthanc_id, status, info in results:
        assert status == 200, url
        assert info["type"] == "application/octet-stream", url
        meta = orthanc_pacs.get_instance_meta(orthanc_id)
        colour = meta.photometric.startswith(("RGB", "YBR"))
        assert info["dtype"] in (("uint8",) if colour else ("int16", "float32")), url
        expected = (
            meta.rows
            * meta.columns
            * DTYPES[info["dtype"]].itemsize
            * (3 if colour else 1)
        )
        assert info["length"] == expected, (url, meta.photometric, info)
    image_count = orthanc_pacs.get_study(study_uid).image_count
    assert len(results) == image_count
    if study == "demo":
        assert image_count == sum(g.image_count for g in corpus.demo.series)
