"""Request batching: several frames of a series in one multipart answer
(``GET .../series/{seriesUid}/images/frames``), on a real Orthanc and the
embedded store. Each part must be byte for byte what the image's own URL
answers, under that URL, so a browser can store it as if asked singly."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from tests.test_api import (
    THORAX_1MM,
    assert_error,
    bulk_url,
    codec_series,
    demo_series,
    get_json,
    series_url,
)

RAW = {"Accept": "application/octet-stream"}


def frames_url(study_uid: str, series_uid: str, query: str = "") -> str:
    url = f"/api/pacs/studies/{study_uid}/series/{series_uid}/images/frames"
    return f"{url}?{query}" if query else url


def parts(answer) -> list:
    """The answer's parts, read by the standard library's MIME parser."""
    assert answer.status_code == 200, answer.data[:300]
    content_type = answer.headers["Content-Type"]
    assert content_type.startswith("multipart/related;")
    assert 'type="application/octet-stream"' in content_type
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + answer.data
    )
    assert message.is_multipart()
    return list(message.iter_parts())


def test_api100_batch_parts_are_the_single_answers(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)
    study = corpus.demo.study_uid
    listing = get_json(
        client, bulk_url(study, g.series_uid, "start=7&count=5"), headers
    )
    answer = client.get(
        frames_url(study, g.series_uid, "start=7&count=5"), headers=headers
    )
    got = parts(answer)
    assert [p["Content-Location"] for p in got] == [
        i["imageUrl"] for i in listing["images"]
    ]
    for part in got:
        single = client.get(part["Content-Location"], headers={**headers, **RAW})
        body = part.get_payload(decode=True)
        assert body == single.data
        assert int(part["Content-Length"]) == len(body)
        for name, value in single.headers.items():
            if name.startswith("X-") and not name.startswith("X-RateLimit"):
                assert part[name] == value, name
    # neighbouring images differ: each part holds its own frame
    assert got[0].get_payload(decode=True) != got[1].get_payload(decode=True)


def test_api101_batch_paging_edges(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)  # 120 images
    study = corpus.demo.study_uid
    default = parts(client.get(frames_url(study, g.series_uid), headers=headers))
    assert len(default) == 16  # start=0, count=16
    tail = parts(
        client.get(
            frames_url(study, g.series_uid, "start=110&count=32"), headers=headers
        )
    )
    assert len(tail) == 10  # the series ends
    past = frames_url(study, g.series_uid, "start=120&count=4")
    assert_error(client.get(past, headers=headers), 400, "bad_request")


def test_api102_batch_of_a_multiframe_instance(client, headers, corpus):
    series = codec_series(client, headers, corpus, "multi-frame, 10 frames")
    study = corpus.codecs_study_uid
    got = parts(
        client.get(frames_url(study, series["seriesUid"], "count=10"), headers=headers)
    )
    assert [p["Content-Location"].rsplit("/", 1)[1] for p in got] == [
        str(n) for n in range(1, 11)
    ]
    assert got[0].get_payload(decode=True) != got[9].get_payload(decode=True)


def test_api103_batch_of_undecodable_images_is_422(client, headers, corpus):
    for series in get_json(client, series_url(corpus.broken_study_uid), headers)[
        "series"
    ]:
        url = frames_url(corpus.broken_study_uid, series["seriesUid"], "count=32")
        assert_error(client.get(url, headers=headers), 422, "undecodable")


@pytest.mark.parametrize(
    "query", ["count=0", "count=33", "start=-1", "start=x", "count=1.5"]
)
def test_api104_batch_rejects_bad_paging(client, headers, corpus, query):
    g = demo_series(corpus, THORAX_1MM)
    url = frames_url(corpus.demo.study_uid, g.series_uid, query)
    assert_error(client.get(url, headers=headers), 400, "bad_request")


def test_api105_batch_needs_a_token_and_valid_ids(client, headers, corpus):
    g = demo_series(corpus, THORAX_1MM)
    url = frames_url(corpus.demo.study_uid, g.series_uid)
    assert_error(client.get(url), 401)
    bad = frames_url("1.2.x", g.series_uid)
    assert_error(client.get(bad, headers=headers), 400, "bad_request")
    unknown = frames_url("1.2.840.999999.1", "1.2.840.999999.2")
    assert_error(client.get(unknown, headers=headers), 404, "not_found")
