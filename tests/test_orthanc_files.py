"""Instance files straight from urllib3's pool (services/orthanc.py
``_get_binary``): the same retries, Retry-After, errors, breaker and cap as
every other request, against a real Orthanc behind the counting proxy."""

from __future__ import annotations

import json
import time

import pytest

from services.models import NotFound, PacsUnavailable
from services.orthanc import OrthancClient, OrthancRefused
from tests.proxy import CountingProxy


@pytest.fixture
def instance_id(orthanc_pacs, corpus):
    series = corpus.demo.series[0]
    return orthanc_pacs.list_images(corpus.demo.study_uid, series.series_uid)[
        0
    ].instance_id


def client_via(proxy, server, **kwargs) -> OrthancClient:
    return OrthancClient(
        proxy.url, username=server.auth[0], password=server.auth[1], **kwargs
    )


def test_orf001_file_is_the_stored_file_uncompressed_without_requests(
    orthanc_server, instance_id
):
    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server)
        assert client._direct_headers is not None  # the direct path is on
        assert client.session.trust_env is False  # environment read once
        data = client.get_instance_file(instance_id)
        assert data[128:132] == b"DICM"
        assert proxy.forwarded == 1 and client.requests_sent == 1
        # a session given to the client is used as it is (requests' path)
        import requests

        own = requests.Session()
        own.auth = orthanc_server.auth
        other = OrthancClient(proxy.url, session=own)
        assert other._direct_headers is None
        assert other.get_instance_file(instance_id) == data


def test_orf002_file_retries_503_and_honours_retry_after(orthanc_server, instance_id):
    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server, backoff=0.01)
        proxy.faults.extend([(503, {}), (429, {"Retry-After": "1"}), (500, {})])
        started = time.monotonic()
        assert client.get_instance_file(instance_id)[128:132] == b"DICM"
        assert proxy.answered_faults == 3
        assert time.monotonic() - started >= 1.0
        assert client.breaker.state == "closed"


def test_orf003_file_errors_map_to_the_pacs_errors(orthanc_server, instance_id):
    with CountingProxy(orthanc_server.url) as proxy:
        client = client_via(proxy, orthanc_server, retries=2, backoff=0.01)
        proxy.faults.extend([(502, {})] * 3)
        with pytest.raises(PacsUnavailable, match="502"):
            client.get_instance_file(instance_id)
        assert proxy.answered_faults == 3  # the request and two retries
        orthanc_error = json.dumps(
            {"HttpStatus": 500, "OrthancError": "Bad file format", "Details": "x"}
        ).encode()
        proxy.faults.extend(
            [(500, {"Content-Type": "application/json"}, orthanc_error), (500, {})]
        )
        with pytest.raises(OrthancRefused, match="Bad file format|HTTP 500"):
            client.get_instance_file(instance_id)
        assert len(proxy.faults) == 1  # Orthanc's own error: asked once
        proxy.faults.clear()
        with pytest.raises(NotFound):
            client.get_instance_file("0" * 8 + "-" + "-".join(["0" * 8] * 4))
        with pytest.raises(NotFound):  # never reaches Orthanc
            client.get_instance_file("../../system")


def test_orf004_file_from_a_stopped_server_is_pacs_unavailable(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = OrthancClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.01)
    with pytest.raises(PacsUnavailable, match="does not answer"):
        client.get_instance_file("0" * 8 + "-" + "-".join(["0" * 8] * 4))
    assert client.in_flight == 0
