"""CORS on the REST API (issue #9): only the origins in ``CORS_ORIGINS`` get
CORS headers, with credentials; preflights are answered on ``/api/...`` only;
pages and Dash's routes never carry CORS headers; empty setting, no CORS."""

from __future__ import annotations

import pytest

from app import create_server
from settings import Settings, parse_origins
from tests.conftest import API_ADMIN

ALLOWED = "https://app.example:8443"
OTHER = "https://evil.example"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
)


@pytest.fixture(scope="module")
def empty_dicom(tmp_path_factory):
    return tmp_path_factory.mktemp("cors-dicom")


def server_with(api_settings, empty_dicom, origins: str):
    """An API server on an empty embedded store, CORS_ORIGINS as given."""
    return create_server(
        api_settings(
            dicom_dir=empty_dicom,
            demo_study=False,
            cors_origins=parse_origins(origins),
        )
    )


@pytest.fixture(scope="module")
def cors_client(api_settings, empty_dicom):
    return server_with(api_settings, empty_dicom, f"{ALLOWED}, http://localhost:3000/")
    # (the trailing slash and spaces are forgiven)


@pytest.fixture(scope="module")
def token(cors_client):
    answer = cors_client.test_client().post(
        "/api/token/", json={"username": API_ADMIN[0], "password": API_ADMIN[1]}
    )
    assert answer.status_code == 200, answer.json
    return answer.json["access"]


def preflight(client, path: str, origin: str, method: str = "GET", headers: str = ""):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def no_cors(response) -> None:
    present = [h for h in CORS_HEADERS if h in response.headers]
    assert present == [], f"unexpected CORS headers {present}"


def test_cors001_allowed_origin_gets_origin_and_credentials(cors_client, token):
    client = cors_client.test_client()
    answer = client.get(
        "/api/pacs/studies/",
        headers={"Origin": ALLOWED, "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in answer.headers["Vary"]
    exposed = answer.headers["Access-Control-Expose-Headers"].lower()
    assert "x-image-rows" in exposed and "retry-after" in exposed
    # the second listed origin too, and errors carry the headers (readable 401)
    refused = client.get(
        "/api/pacs/studies/", headers={"Origin": "http://localhost:3000"}
    )
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_cors002_preflight_answers_methods_and_headers(cors_client):
    client = cors_client.test_client()
    for path, method in [
        ("/api/pacs/studies/", "GET"),
        ("/api/token/", "POST"),
        ("/api/token/revoke/", "POST"),
    ]:
        answer = preflight(
            client, path, ALLOWED, method, "Authorization, Content-Type, X-CSRF-TOKEN"
        )
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert answer.headers["Access-Control-Allow-Credentials"] == "true"
        methods = {
            m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")
        }
        assert {"GET", "POST"} <= methods
        allowed = {
            h.strip().lower()
            for h in answer.headers["Access-Control-Allow-Headers"].split(",")
        }
        assert allowed == {"authorization", "content-type", "x-csrf-token"}
        assert int(answer.headers["Access-Control-Max-Age"]) > 0
    # a header outside the list is not allowed
    answer = preflight(client, "/api/pacs/studies/", ALLOWED, "GET", "X-Secret")
    assert (
        "x-secret" not in answer.headers.get("Access-Control-Allow-Headers", "").lower()
    )


def test_cors003_other_origin_gets_nothing(cors_client, token):
    client = cors_client.test_client()
    for origin in (OTHER, "https://app.example", "http://app.example:8443", "null"):
        answer = client.get(
            "/api/pacs/studies/",
            headers={"Origin": origin, "Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200
        no_cors(answer)
        no_cors(preflight(client, "/api/pacs/studies/", origin, "GET", "Authorization"))


def test_cors004_pages_and_dash_routes_get_no_cors(cors_client):
    client = cors_client.test_client()
    for path in (
        "/",
        "/login",
        "/viewer/1.2/3.4",
        "/_dash-update-component",
        "/healthz",
    ):
        no_cors(preflight(client, path, ALLOWED, "POST", "Content-Type"))
        no_cors(client.get(path, headers={"Origin": ALLOWED}))


def test_cors005_empty_setting_allows_no_origin(api_settings, empty_dicom):
    server = server_with(api_settings, empty_dicom, "")
    assert server.extensions["settings"].cors_origins == ()
    client = server.test_client()
    token = client.post(
        "/api/token/", json={"username": API_ADMIN[0], "password": API_ADMIN[1]}
    ).json["access"]
    for origin in (ALLOWED, OTHER):
        answer = client.get(
            "/api/pacs/studies/",
            headers={"Origin": origin, "Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200
        no_cors(answer)
        no_cors(preflight(client, "/api/pacs/studies/", origin, "GET", "Authorization"))
        no_cors(preflight(client, "/api/token/", origin, "POST", "Content-Type"))


def test_cors006_origins_setting_is_checked():
    assert Settings.from_env({}).cors_origins == ()
    assert Settings.from_env(
        {"CORS_ORIGINS": "https://A.example/, http://localhost:3000"}
    ).cors_origins == ("https://a.example", "http://localhost:3000")
    for bad in (
        "*",
        "https://*.example",
        "app.example",
        "https://a.example/path",
        "ftp://a.example",
        "https://user@a.example",
        "https://a.example?x",
    ):
        with pytest.raises(ValueError, match="CORS_ORIGINS"):
            Settings.from_env({"CORS_ORIGINS": bad})
