"""The Orthanc client's transport: the in-flight cap measured on the wire,
retries with Retry-After, the circuit breaker against a real Orthanc that
stops and comes back."""

from __future__ import annotations

import json
import threading
import time

import pytest

from scripts.orthanc_local import LocalOrthanc
from services.breaker import CircuitBreaker
from services.models import PacsUnavailable
from services.orthanc import OrthancClient
from settings import ROOT
from tests.proxy import CountingProxy


def client_via(proxy: CountingProxy, server: LocalOrthanc, **kwargs) -> OrthancClient:
    return OrthancClient(
        proxy.url, username=server.auth[0], password=server.auth[1], **kwargs
    )


@pytest.mark.parametrize("cap", [5, 2])
def test_orc001_in_flight_never_exceeds_the_cap(orthanc_server, corpus, cap):
    with CountingProxy(orthanc_server.url, delay=0.02) as proxy:
        client = client_via(proxy, orthanc_server, max_in_flight=cap)
        series = max(corpus.demo.series, key=lambda s: s.image_count)
        images = client.list_images(corpus.demo.study_uid, series.series_uid)[:60]
        errors = []

        def fetch(chunk):
            try:
                for image in chunk:
                    client.get_frame(image.instance_id, image.frame_index)
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

        threads = [
            threading.Thread(target=fetch, args=(images[i::20],)) for i in range(20)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert proxy.forwarded >= len(images)
        assert proxy.max_in_flight == cap  # reached, never passed
        assert client.max_in_flight_seen == cap


def test_orc002_retries_503_and_honours_retry_after(orthanc_server, corpus):
    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server, backoff=0.01)
        proxy.faults.extend([(503, {}), (429, {"Retry-After": "1"})])
        started = time.monotonic()
        study = client.get_study(corpus.demo.study_uid)
        assert study.study_uid == corpus.demo.study_uid
        assert proxy.answered_faults == 2
        assert time.monotonic() - started >= 1.0  # waited as Retry-After asked
        assert client.breaker.state == "closed"


def test_orc003_gives_up_after_the_retries(orthanc_server, corpus):
    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server, retries=2, backoff=0.01)
        proxy.faults.extend([(502, {})] * 10)
        with pytest.raises(PacsUnavailable, match="502"):
            client.get_study(corpus.demo.study_uid)
        assert proxy.answered_faults == 3  # the request and two retries


def test_orc003b_bare_500_is_retried_orthancs_own_error_is_not(orthanc_server, corpus):
    """A 500 without Orthanc's JSON (a gateway on the way) is a passing fault:
    asked again. Orthanc's own 500 (here: a file it cannot decode) is the
    answer: asked once, a DecodeError, and the breaker stays closed."""
    from services.models import DecodeError

    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server, backoff=0.01)
        proxy.faults.extend([(500, {}), (500, {})])
        study = client.get_study(corpus.demo.study_uid)
        assert study.study_uid == corpus.demo.study_uid
        assert proxy.answered_faults == 2
        image = client.list_images(
            corpus.demo.study_uid, corpus.demo.series[0].series_uid
        )[0]
        orthanc_error = json.dumps(
            {"HttpStatus": 500, "OrthancError": "Bad file format", "Details": "x"}
        ).encode()
        proxy.faults.extend(
            [(500, {"Content-Type": "application/json"}, orthanc_error), (500, {})]
        )
        with pytest.raises(DecodeError, match="HTTP 500"):
            client.get_frame(image.instance_id, 0)
        assert proxy.answered_faults == 3 and len(proxy.faults) == 1  # asked once
        assert client.breaker.state == "closed"


def test_orc004_breaker_opens_while_down_and_closes_when_back(tmp_path):
    first = LocalOrthanc(workdir=tmp_path).start()
    port, auth = first.port, first.auth
    try:
        first.upload(sorted((ROOT.parent / "shared/data/ge-head-ct").glob("*.dcm"))[:2])
        breaker = CircuitBreaker("test orthanc", failure_threshold=2, reset_timeout=0.5)
        client = OrthancClient(
            first.url, username=auth[0], password=auth[1], retries=0, breaker=breaker
        )
        (study,) = client.find_studies()
        first.stop()

        for _ in range(2):
            with pytest.raises(PacsUnavailable, match="does not answer"):
                client.get_study(study.study_uid)
        assert breaker.state == "open"
        sent = client.requests_sent
        with pytest.raises(PacsUnavailable, match="circuit open"):
            client.get_study(study.study_uid)
        assert client.requests_sent == sent  # failed fast, nothing sent
        assert client.ping() is False

        second = LocalOrthanc(workdir=tmp_path, port=port, password=auth[1]).start()
        try:
            deadline = time.monotonic() + 10
            while True:  # wait for the half-open probe to go through
                try:
                    again = client.get_study(study.study_uid)
                    break
                except PacsUnavailable:
                    assert time.monotonic() < deadline, "breaker never closed"
                    time.sleep(0.05)
            assert again == study
            assert breaker.state == "closed"
        finally:
            second.stop()
    finally:
        first.stop()


def test_orc005_wrong_credentials_are_a_clear_error(orthanc_server):
    client = OrthancClient(orthanc_server.url, username="orthanc", password="wrong")
    with pytest.raises(PacsUnavailable, match="refused the credentials"):
        client.find_studies()
    assert client.ping() is False


def test_orc006_metadata_cache_serves_repeated_listings(
    orthanc_server, corpus, tmp_path
):
    client = OrthancClient(
        orthanc_server.url,
        username=orthanc_server.auth[0],
        password=orthanc_server.auth[1],
        cache_dir=tmp_path,
    )
    series = corpus.demo.series[2]
    first = client.list_images(corpus.demo.study_uid, series.series_uid)
    image = first[0]
    client.get_instance_meta(image.instance_id)
    sent, hits = client.requests_sent, client.cache_hits
    assert client.list_images(corpus.demo.study_uid, series.series_uid) == first
    # the UID lookup is remembered; the three listings come from the HTTP cache
    assert client.requests_sent - sent == 0
    assert client.cache_hits - hits == 3
