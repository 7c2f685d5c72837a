"""Security of the REST API and the pages: tokens, login, rate limits, cookies
and CSRF, path tricks, the users CLI, production settings, and logs.

Most tests use ``create_server`` servers through Flask's test client; the
cookie, CSRF and rate-limit tests that involve Dash run against the real app
(``python app.py``) in a child process over real HTTP, behind
``TRUSTED_PROXIES=1`` so that each test is its own client address
(``X-Forwarded-For``) with its own rate-limit budget.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import requests
from flask_jwt_extended import create_access_token

from app import create_server
from services.users import UserStore
from settings import ROOT, Settings
from tests.conftest import API_ADMIN

UNKNOWN_INSTANCE = "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff"


def make_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client, username: str = API_ADMIN[0], password: str = API_ADMIN[1]) -> dict:
    answer = client.post(
        "/api/token/", json={"username": username, "password": password}
    )
    assert answer.status_code == 200, answer.data
    return answer.get_json()


def assert_json_error(answer, status: int, error: str | None = None) -> dict:
    """An API error: the status and ``{"error", "message"}`` JSON (test client
    or requests answer)."""
    code = getattr(answer, "status_code", None)
    assert code == status, (code, getattr(answer, "data", None) or answer.content[:300])
    body = answer.get_json() if hasattr(answer, "get_json") else answer.json()
    assert set(body) == {"error", "message"}, body
    if error:
        assert body["error"] == error, body
    return body


def b64url(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def server(corpus, api_settings):
    """The API on the embedded store over the corpus (alice is the admin)."""
    return create_server(api_settings(dicom_dir=corpus.root, demo_study=False))


@pytest.fixture
def client(server):
    return server.test_client()


def data_urls(corpus) -> list[str]:
    """One URL per JWT-protected endpoint, each valid with a token."""
    demo = corpus.demo
    series = demo.series[1]
    from services import orthanc_ids

    instance = orthanc_ids.instance_id(
        demo.patient_id, demo.study_uid, series.series_uid, series.instance_uids[0]
    )
    return [
        "/api/pacs/studies/",
        f"/api/pacs/studies/{demo.study_uid}/series/",
        f"/api/pacs/studies/{demo.study_uid}/series/{series.series_uid}/images/bulk",
        f"/api/pacs/studies/{demo.study_uid}/image-ids/",
        f"/api/pacs/instances/{instance}/file",
        f"/api/pacs/instances/{instance}/dicomweb",
        f"/api/pacs/instances/{instance}/frames/1",
        f"/api/pacs/instances/{instance}/frames/1/rendered",
    ]


def add_user(server, name: str, password: str) -> None:
    runner = server.test_cli_runner()
    with server.app_context():
        result = runner.invoke(args=["users", "add", name, "--password", password])
    assert result.exit_code == 0, result.output


# -- 401 for every kind of bad token --------------------------------------------------


def test_sec001_no_or_malformed_authorization_is_401(client, corpus):
    valid = login(client)["access"]
    for url in data_urls(corpus):
        assert client.get(url, headers=make_headers(valid)).status_code == 200, url
        body = assert_json_error(client.get(url), 401, "unauthorized")
        assert "Missing" in body["message"]
    url = data_urls(corpus)[1]
    for header in (
        "Bearer",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        f"Basic {base64.b64encode(b'alice:alice-password-1').decode()}",
        f"Token {valid}",
        valid,  # no scheme
    ):
        assert_json_error(client.get(url, headers={"Authorization": header}), 401)


def test_sec002_expired_access_token_is_401(server, client, corpus):
    with server.app_context():
        expired = create_access_token(
            identity=API_ADMIN[0], expires_delta=timedelta(seconds=-1)
        )
        fresh = create_access_token(identity=API_ADMIN[0])
    url = data_urls(corpus)[0]
    assert client.get(url, headers=make_headers(fresh)).status_code == 200
    body = assert_json_error(
        client.get(url, headers=make_headers(expired)), 401, "unauthorized"
    )
    assert "expired" in body["message"]


def test_sec003_tampered_token_is_401(client, corpus):
    token = login(client)["access"]
    header, payload, signature = token.split(".")
    url = data_urls(corpus)[1]
    # one character of the payload flipped
    i = len(payload) // 2
    flipped = payload[:i] + ("A" if payload[i] != "A" else "B") + payload[i + 1 :]
    # a well-formed payload naming another user, the original signature kept
    claims = claims_of(token)
    forged = b64url({**claims, "sub": "mallory", "exp": claims["exp"] + 10**6})
    for bad in (
        f"{header}.{flipped}.{signature}",
        f"{header}.{forged}.{signature}",
        f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
    ):
        assert_json_error(
            client.get(url, headers=make_headers(bad)), 401, "unauthorized"
        )
    assert client.get(url, headers=make_headers(token)).status_code == 200


def test_sec004_token_signed_with_another_secret_is_401(client, corpus):
    claims = claims_of(login(client)["access"])
    other = jwt.encode(
        claims, "another-secret-of-at-least-32-characters!", algorithm="HS256"
    )
    assert_json_error(
        client.get(data_urls(corpus)[0], headers=make_headers(other)), 401
    )


def test_sec005_alg_none_and_other_algorithms_are_401(server, client, corpus):
    claims = claims_of(login(client)["access"])
    url = data_urls(corpus)[0]
    for alg in ("none", "None", "NONE"):
        token = f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url(claims)}."
        assert_json_error(
            client.get(url, headers=make_headers(token)), 401, "unauthorized"
        )
    empty_signature = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url(claims)}."
    assert_json_error(client.get(url, headers=make_headers(empty_signature)), 401)
    # the right secret, another algorithm: only HS256 is accepted
    secret = server.config["JWT_SECRET_KEY"]
    hs512 = jwt.encode(claims, secret, algorithm="HS512")
    assert_json_error(client.get(url, headers=make_headers(hs512)), 401)
    assert (
        client.get(
            url, headers=make_headers(jwt.encode(claims, secret, algorithm="HS256"))
        ).status_code
        == 200
    )


def test_sec006_refresh_token_is_not_an_access_token(client, corpus):
    tokens = login(client)
    for url in data_urls(corpus)[:3]:
        assert_json_error(
            client.get(url, headers=make_headers(tokens["refresh"])),
            401,
            "unauthorized",
        )


def test_sec007_access_token_is_not_a_refresh_token(client):
    tokens = login(client)
    answer = client.post("/api/token/refresh/", json={"refresh": tokens["access"]})
    assert_json_error(answer, 401, "unauthorized")
    assert_json_error(
        client.post("/api/token/refresh/", json={"refresh": "x.y.z"}), 401
    )
    assert_json_error(
        client.post("/api/token/refresh/", json={"refresh": 42}), 400, "bad_request"
    )
    # a refresh token in the Authorization header is not the PRD's body: refused
    assert_json_error(
        client.post("/api/token/refresh/", headers=make_headers(tokens["refresh"])), 401
    )
    ok = client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})
    assert ok.status_code == 200


def test_sec008_revoked_tokens_are_401(client, corpus):
    tokens = login(client)
    url = data_urls(corpus)[0]
    access = make_headers(tokens["access"])
    assert client.get(url, headers=access).status_code == 200
    answer = client.post(
        "/api/token/revoke/", headers=access, json={"refresh": tokens["refresh"]}
    )
    assert answer.status_code == 200 and answer.get_json() == {"revoked": True}
    body = assert_json_error(client.get(url, headers=access), 401, "unauthorized")
    assert "revoked" in body["message"]
    assert_json_error(
        client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]}), 401
    )
    # revoking an access token alone leaves its refresh token working
    other = login(client)
    client.post("/api/token/revoke/", headers=make_headers(other["access"]))
    assert_json_error(client.get(url, headers=make_headers(other["access"])), 401)
    again = client.post("/api/token/refresh/", json={"refresh": other["refresh"]})
    assert again.status_code == 200
    assert (
        client.get(url, headers=make_headers(again.get_json()["access"])).status_code
        == 200
    )


def test_sec009_nobody_revokes_another_users_refresh_token(server, client, corpus):
    add_user(server, "bob", "bob-password-1")
    bob = login(client, "bob", "bob-password-1")
    alice = login(client)
    answer = client.post(
        "/api/token/revoke/",
        headers=make_headers(alice["access"]),
        json={"refresh": bob["refresh"]},
    )
    assert answer.status_code == 200
    assert (
        client.post("/api/token/refresh/", json={"refresh": bob["refresh"]}).status_code
        == 200
    )


def test_sec010_tokens_of_a_removed_user_stop_working(server, client, corpus):
    add_user(server, "carol", "carol-password-1")
    tokens = login(client, "carol", "carol-password-1")
    url = data_urls(corpus)[1]
    assert client.get(url, headers=make_headers(tokens["access"])).status_code == 200
    with server.app_context():
        result = server.test_cli_runner().invoke(args=["users", "remove", "carol"])
    assert result.exit_code == 0 and "removed carol" in result.output
    assert_json_error(
        client.get(url, headers=make_headers(tokens["access"])), 401, "unauthorized"
    )
    assert_json_error(
        client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]}), 401
    )
    answer = client.post(
        "/api/token/", json={"username": "carol", "password": "carol-password-1"}
    )
    assert_json_error(answer, 401)


# -- login ------------------------------------------------------------------------


def test_sec020_wrong_password_or_unknown_user_is_401_alike(client):
    wrong = client.post(
        "/api/token/", json={"username": "alice", "password": "not-her-password"}
    )
    unknown = client.post(
        "/api/token/", json={"username": "nobody", "password": "not-her-password"}
    )
    assert assert_json_error(wrong, 401) == assert_json_error(
        unknown, 401
    )  # no user enumeration
    empty = client.post("/api/token/", json={"username": "alice", "password": ""})
    assert_json_error(empty, 401)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": "alice-password-1"},
        {"username": 1, "password": "alice-password-1"},
        {"username": "alice", "password": None},
        {"username": ["alice"], "password": "alice-password-1"},
    ],
)
def test_sec021_login_without_both_strings_is_400(client, body):
    assert_json_error(client.post("/api/token/", json=body), 400, "bad_request")


@pytest.mark.parametrize(
    "data, content_type",
    [
        (
            "username=alice&password=alice-password-1",
            "application/x-www-form-urlencoded",
        ),
        ('{"username": "alice", "password": "alice-password-1"}', "text/plain"),
        ('{"username": "alice", "password": ', "application/json"),
        ('["alice", "alice-password-1"]', "application/json"),
        ("", "application/json"),
        ("", None),
    ],
)
def test_sec022_login_with_a_non_json_object_body_is_400(client, data, content_type):
    answer = client.post("/api/token/", data=data, content_type=content_type)
    assert_json_error(answer, 400, "bad_request")


# -- the real app in a child process -----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_app(corpus, tmp_path_factory):
    """``python app.py`` (Dash + Flask) on the corpus, with small limits."""
    root = tmp_path_factory.mktemp("live-app")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORTHANC_")}
    env.update(
        DICOM_DIR=str(corpus.root),
        DEMO_STUDY="0",
        CACHE_DIR=str(root / "cache"),
        USERS_DB=str(root / "users.sqlite"),
        ADMIN_USERNAME=API_ADMIN[0],
        ADMIN_PASSWORD=API_ADMIN[1],
        LOGIN_RATE_LIMIT="3 per minute",
        API_RATE_LIMIT="5 per minute",
        TRUSTED_PROXIES="1",
        APP_ENV="development",
        JWT_SECRET_KEY="",
        HOST="127.0.0.1",
        PORT=str(port),
    )
    log_path = root / "app.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_addresses = itertools.count(1)


def new_address() -> str:
    n = next(_addresses)
    return f"10.77.{n // 250}.{n % 250 + 1}"


@pytest.fixture
def browser(live_app):
    """A requests session that is a client of its own (X-Forwarded-For)."""
    session = requests.Session()
    session.headers["X-Forwarded-For"] = new_address()
    session.base = live_app  # type: ignore[attr-defined]
    yield session
    session.close()


def sign_in(session, next_url: str = "/") -> requests.Response:
    answer = session.post(
        session.base + "/login",
        data={"username": API_ADMIN[0], "password": API_ADMIN[1], "next": next_url},
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[:300]
    return answer


def test_sec023_login_rate_limit_gives_429_with_retry_after(browser):
    url = browser.base + "/api/token/"
    for _ in range(3):
        answer = browser.post(
            url, json={"username": "alice", "password": "wrong-password!"}
        )
        assert answer.status_code == 401
    for password in ("wrong-password!", API_ADMIN[1]):  # even the right one now
        answer = browser.post(url, json={"username": "alice", "password": password})
        assert_json_error(answer, 429, "too_many_requests")
        assert 0 < int(answer.headers["Retry-After"]) <= 60
    # another client address is not affected
    other = requests.post(
        url,
        json={"username": "alice", "password": API_ADMIN[1]},
        headers={"X-Forwarded-For": "10.78.0.1"},
    )
    assert other.status_code == 200


def test_sec024_form_and_api_logins_share_one_budget(browser):
    for _ in range(2):
        answer = browser.post(
            browser.base + "/api/token/",
            json={"username": "alice", "password": "wrong-pass"},
        )
        assert answer.status_code == 401
    first = browser.post(
        browser.base + "/login", data={"username": "alice", "password": "wrong-pass"}
    )
    assert first.status_code == 401
    fourth = browser.post(
        browser.base + "/login", data={"username": "alice", "password": "wrong-pass"}
    )
    assert fourth.status_code == 429


def test_sec025_api_limit_applies_to_the_api_only(browser):
    sign_in(browser)
    for _ in range(20):
        layout = browser.get(browser.base + "/_dash-layout")
        assert layout.status_code == 200 and layout.headers["Content-Type"].startswith(
            "application/json"
        )
        page = browser.get(browser.base + "/", allow_redirects=False)
        assert page.status_code == 200 and "<html" in page.text
    token = browser.post(
        browser.base + "/api/token/",
        json={"username": API_ADMIN[0], "password": API_ADMIN[1]},
    )
    headers = make_headers(token.json()["access"])
    url = browser.base + "/api/pacs/studies/?limit=1"
    for _ in range(5):
        assert browser.get(url, headers=headers).status_code == 200
    answer = browser.get(url, headers=headers)
    assert_json_error(answer, 429, "too_many_requests")
    assert int(answer.headers["Retry-After"]) > 0
    # the pages still answer
    assert browser.get(browser.base + "/_dash-layout").status_code == 200


def test_sec026_api_limit_counts_every_api_request_of_a_client(browser, corpus):
    token = browser.post(
        browser.base + "/api/token/",
        json={"username": API_ADMIN[0], "password": API_ADMIN[1]},
    )
    headers = make_headers(token.json()["access"])
    urls = [
        f"/api/pacs/studies/{corpus.demo.study_uid}/series/",
        "/api/pacs/studies/?limit=1",
    ]
    statuses = [
        browser.get(browser.base + urls[i % 2], headers=headers).status_code
        for i in range(6)
    ]
    assert statuses == [200] * 5 + [429]


def set_cookie_headers(answer: requests.Response) -> dict[str, str]:
    """Each Set-Cookie header by cookie name."""
    return {h.split("=", 1)[0]: h for h in answer.raw.headers.getlist("Set-Cookie")}


def test_sec030_form_login_sets_http_only_lax_cookies_and_goes_next(browser):
    refused = browser.post(
        browser.base + "/login",
        data={"username": "alice", "password": "wrong-password", "next": "/"},
        allow_redirects=False,
    )
    assert refused.status_code == 401 and not set_cookie_headers(refused)
    assert "Wrong username or password" in refused.text
    answer = sign_in(browser, "/studies?page=2")
    assert answer.headers["Location"] == "/studies?page=2"
    cookies = set_cookie_headers(answer)
    assert set(cookies) >= {
        "access_token_cookie",
        "refresh_token_cookie",
        "csrf_access_token",
    }
    for name, header in cookies.items():
        attributes = [a.strip().lower() for a in header.split(";")[1:]]
        assert "samesite=lax" in attributes, header
        assert "secure" not in attributes  # development over http
        http_only = "httponly" in attributes
        # csrf cookies and the access token's expiry readable by JS
        assert http_only == (name.endswith("_token_cookie") or name == "last_user")


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/path",
        "https://evil.example",
        "http:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        " //evil.example",
        "evil.example",
    ],
)
def test_sec031_login_never_redirects_off_site(client, target):
    answer = client.post(
        "/login",
        data={"username": API_ADMIN[0], "password": API_ADMIN[1], "next": target},
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/"
    page = client.get("/login", query_string={"next": target})
    assert 'name="next" value="/"' in page.text


def browser_target(location: str) -> str:
    """Where a browser goes on this Location: WHATWG URL parsing drops ASCII
    tab and newline characters, then resolves against the current page."""
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "")
    return urlsplit(urljoin("http://viewer.example/login", cleaned)).netloc


def test_sec032_login_next_with_a_tab_stays_on_site(client):
    page = client.get("/login?next=/%09/evil.example")
    hidden = page.text.split('name="next" value="')[1].split('"')[0]
    answer = client.post(
        "/login",
        data={"username": API_ADMIN[0], "password": API_ADMIN[1], "next": hidden},
    )
    assert answer.status_code == 302
    assert browser_target(answer.headers["Location"]) == "viewer.example"


def test_sec033_login_next_with_a_newline_is_not_a_500(client):
    answer = client.post(
        "/login",
        data={
            "username": API_ADMIN[0],
            "password": API_ADMIN[1],
            "next": "/\r\n/evil.example",
        },
    )
    assert answer.status_code == 302
    assert browser_target(answer.headers["Location"]) == "viewer.example"


def test_sec034_pages_need_the_access_cookie(browser):
    base = browser.base
    answer = browser.get(base + "/", allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/login?next=/"
    deep = browser.get(base + "/?study=1.2.3&x=a%20b", allow_redirects=False)
    target = urlsplit(deep.headers["Location"])
    assert target.path == "/login"
    assert parse_qs(target.query)["next"] == ["/?study=1.2.3&x=a%20b"]
    assert_json_error(browser.get(base + "/_dash-layout"), 401, "unauthorized")
    assert_json_error(browser.get(base + "/_dash-dependencies"), 401, "unauthorized")
    assert browser.get(base + "/healthz").status_code == 200  # public
    assert browser.get(base + "/login").status_code == 200

    sign_in(browser)
    page = browser.get(base + "/", allow_redirects=False)
    assert page.status_code == 200 and "<html" in page.text
    assert browser.get(base + "/_dash-layout").status_code == 200

    # with the refresh cookie alone a page load is let through with a new access cookie
    refresh_only = requests.Session()
    refresh_only.headers.update(browser.headers)
    refresh_only.cookies.set(
        "refresh_token_cookie", browser.cookies["refresh_token_cookie"]
    )
    renewed = refresh_only.get(base + "/", allow_redirects=False)
    assert renewed.status_code == 200
    assert "access_token_cookie" in set_cookie_headers(renewed)


def test_sec035_cookie_requests_that_change_state_need_the_csrf_header(browser):
    base = browser.base
    sign_in(browser)
    csrf = browser.cookies["csrf_access_token"]
    studies = browser.get(base + "/api/pacs/studies/?limit=1")  # GET with the cookie
    assert studies.status_code == 200
    assert_json_error(browser.post(base + "/api/token/revoke/"), 401, "unauthorized")
    assert_json_error(
        browser.post(
            base + "/api/token/revoke/", headers={"X-CSRF-TOKEN": "not-" + csrf}
        ),
        401,
    )
    # the API allows this server 5 requests a minute per client: go on as another
    browser.headers["X-Forwarded-For"] = new_address()
    assert (
        browser.get(base + "/api/pacs/studies/?limit=1").status_code == 200
    )  # not revoked
    answer = browser.post(base + "/api/token/revoke/", headers={"X-CSRF-TOKEN": csrf})
    assert answer.status_code == 200 and answer.json() == {"revoked": True}
    assert_json_error(
        browser.get(base + "/api/pacs/studies/?limit=1"), 401, "unauthorized"
    )


def test_sec036_dash_callbacks_need_the_csrf_header(browser):
    base = browser.base
    sign_in(browser)
    csrf = browser.cookies["csrf_access_token"]
    (pages,) = [
        d
        for d in browser.get(base + "/_dash-dependencies").json()
        if "_pages_content" in d["output"]
    ]
    call = {
        "output": pages["output"],
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": "/"},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
        "changedPropIds": ["_pages_location.pathname"],
        "state": [],
    }
    url = base + "/_dash-update-component"
    assert_json_error(browser.post(url, json=call), 401, "unauthorized")
    assert_json_error(
        browser.post(url, json=call, headers={"X-CSRF-TOKEN": "forged"}), 401
    )
    answer = browser.post(url, json=call, headers={"X-CSRF-TOKEN": csrf})
    assert answer.status_code == 200, answer.text[:300]
    assert "_pages_content" in answer.json()["response"]  # the page was rendered


def test_sec036b_another_user_signing_in_empties_the_http_cache(server, client):
    """The browser's HTTP cache keeps pixels privately: a new user of the
    browser (the last one's session ended without signing out) empties it,
    the same user signing in again keeps it."""
    add_user(server, "grace", "grace-password-1")

    def sign_in_as(username: str, password: str):
        answer = client.post(
            "/login", data={"username": username, "password": password, "next": "/"}
        )
        assert answer.status_code == 302
        return answer.headers.get("Clear-Site-Data")

    assert sign_in_as(*API_ADMIN) == '"cache"'  # nobody known yet
    assert sign_in_as(*API_ADMIN) is None  # alice again
    assert sign_in_as("grace", "grace-password-1") == '"cache"'
    last = client.get_cookie("last_user").value
    assert "grace" not in last and len(last) == 32  # a keyed hash, no name


def test_sec037_logout_revokes_the_cookie_tokens(browser):
    base = browser.base
    sign_in(browser)
    access = browser.cookies["access_token_cookie"]
    refresh = browser.cookies["refresh_token_cookie"]
    answer = browser.get(base + "/logout", allow_redirects=False)
    assert answer.status_code == 302 and answer.headers["Location"] == "/login"
    assert answer.headers["Clear-Site-Data"] == '"cache"'  # the browser's pixels
    assert browser.get(base + "/", allow_redirects=False).status_code == 302
    thief = requests.Session()
    thief.headers.update(browser.headers)
    assert_json_error(
        thief.get(base + "/api/pacs/studies/", headers=make_headers(access)), 401
    )
    assert_json_error(
        thief.post(base + "/api/token/refresh/", json={"refresh": refresh}), 401
    )


def test_sec038_unknown_api_paths_are_json_even_behind_dash(browser):
    sign_in(browser)
    for path in ("/api/xyz", "/api/pacs/xyz/abc", "/api/token/nothing/"):
        answer = browser.get(browser.base + path)
        assert_json_error(answer, 404, "not_found")
    # a page path Dash does not know is still the app shell, for signed-in users
    assert browser.get(browser.base + "/no-such-page").status_code == 200


# -- path tricks ------------------------------------------------------------------------


PATH_TRICKS = [
    "/api/pacs/instances/..%2F..%2Fsystem/file",
    "/api/pacs/instances/%2e%2e/file",
    "/api/pacs/instances/%2E%2E%2Fsystem/file",
    "/api/pacs/instances/..%252F..%252Fsystem/file",
    "/api/pacs/studies/1.2.3%2F4/series/",
    "/api/pacs/studies/1.2.3%5C4/series/",
    "/api/pacs/instances/a%5Cb/file",
    "/api/pacs/instances/a\\b/file",
    "/api/pacs/studies/1.2.3%00/series/",
    "/api/pacs/studies/1.2.3/../series/",
    "/api/pacs//studies/",
]


def test_sec040_path_tricks_are_400_json(client):
    headers = make_headers(login(client)["access"])
    for path in PATH_TRICKS:
        answer = client.get(path, headers=headers)
        assert_json_error(answer, 400, "bad_request")


def test_sec041_path_tricks_over_real_http_are_400_json(browser):
    """The same paths byte for byte on the wire (no client normalisation)."""
    token = browser.post(
        browser.base + "/api/token/",
        json={"username": API_ADMIN[0], "password": API_ADMIN[1]},
    )
    port = urlsplit(browser.base).port
    for path in PATH_TRICKS:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.putheader("Authorization", f"Bearer {token.json()['access']}")
        # one client per path: this server allows 5 API requests a minute each
        connection.putheader("X-Forwarded-For", new_address())
        connection.endheaders()
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        assert answer.status == 400, (path, answer.status, body[:200])
        assert json.loads(body)["error"] == "bad_request", path


@pytest.mark.parametrize(
    "study_uid",
    [
        "abc",
        "1.2.a",
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.3 ",
        "-1.2",
        "1" * 65,
        "1." * 32 + "1",
    ],
)
def test_sec042_malformed_uids_are_400(client, corpus, study_uid):
    headers = make_headers(login(client)["access"])
    series = corpus.demo.series[0].series_uid
    for url in (
        f"/api/pacs/studies/{study_uid}/series/",
        f"/api/pacs/studies/{study_uid}/image-ids/",
        f"/api/pacs/studies/{study_uid}/series/{series}/images/bulk",
        f"/api/pacs/studies/{corpus.demo.study_uid}/series/{study_uid}/images/bulk",
    ):
        assert_json_error(client.get(url, headers=headers), 400, "bad_request")


def test_sec043_uid_of_64_characters_is_valid(client):
    headers = make_headers(login(client)["access"])
    longest = "1." * 31 + "12"  # 64 characters
    assert len(longest) == 64
    assert_json_error(
        client.get(f"/api/pacs/studies/{longest}/series/", headers=headers), 404
    )


@pytest.mark.parametrize(
    "instance",
    [
        "FFFFFFFF-FFFFFFFF-FFFFFFFF-FFFFFFFF-FFFFFFFF",
        "ffffffff-ffffffff-ffffffff-ffffffff",
        "ffffffff-ffffffff-ffffffff-ffffffff-fffffffff",
        "system",
        "1.2.3",
        "ffffffffffffffffffffffffffffffffffffffff",
    ],
)
def test_sec044_malformed_orthanc_ids_are_400(client, instance):
    headers = make_headers(login(client)["access"])
    for suffix in ("file", "dicomweb", "frames/1", "frames/1/rendered"):
        answer = client.get(f"/api/pacs/instances/{instance}/{suffix}", headers=headers)
        assert_json_error(answer, 400, "bad_request")


def test_sec045_error_messages_do_not_reveal_server_paths(client, corpus):
    """Missing frames (404) and undecodable files (422) of the embedded store
    name the instance, never the file on the server's disk."""
    headers = make_headers(login(client)["access"])
    urls = [u.replace("/frames/1", "/frames/2") for u in data_urls(corpus)[6:]]
    broken = client.get(
        f"/api/pacs/studies/{corpus.broken_study_uid}/series/", headers=headers
    )
    urls += [s["firstImageUrl"] for s in broken.get_json()["series"]]
    for url in urls:
        answer = client.get(url, headers=headers)
        assert answer.status_code in (404, 422), url
        text = answer.get_data(as_text=True)
        assert str(corpus.root) not in text and ".dcm" not in text, text


# -- the users CLI ----------------------------------------------------------------------


def test_sec050_cli_add_passwd_list_remove(server, client):
    runner = server.test_cli_runner()

    def cli(*args: str, input: str | None = None):
        with server.app_context():
            return runner.invoke(args=["users", *args], input=input)

    added = cli(
        "add", "dave", input="dave-password-1\ndave-password-1\n"
    )  # prompted twice
    assert added.exit_code == 0 and "created dave" in added.output
    assert "dave-password-1" not in added.output  # the prompt does not echo
    login(client, "dave", "dave-password-1")
    updated = cli("add", "dave", "--password", "dave-password-2")
    assert updated.exit_code == 0 and "updated dave" in updated.output
    changed = cli("passwd", "dave", input="dave-password-3\ndave-password-3\n")
    assert changed.exit_code == 0 and "updated dave" in changed.output
    for old in ("dave-password-1", "dave-password-2"):
        assert (
            client.post(
                "/api/token/", json={"username": "dave", "password": old}
            ).status_code
            == 401
        )
    login(client, "dave", "dave-password-3")
    listed = cli("list")
    assert listed.exit_code == 0
    names = listed.output.split()
    assert "dave" in names and API_ADMIN[0] in names and names == sorted(names)
    removed = cli("remove", "dave")
    assert removed.exit_code == 0 and "removed dave" in removed.output
    assert "dave" not in cli("list").output.split()
    assert (
        client.post(
            "/api/token/", json={"username": "dave", "password": "dave-password-3"}
        ).status_code
        == 401
    )


def test_sec051_cli_refuses_bad_input(server):
    runner = server.test_cli_runner()

    def cli(*args: str, input: str | None = None):
        with server.app_context():
            return runner.invoke(args=["users", *args], input=input)

    short = cli("add", "erin", input="short\nshort\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.output
    assert "erin" not in cli("list").output.split()
    short_option = cli("add", "erin", "--password", "1234567")
    assert (
        short_option.exit_code != 0 and "at least 8 characters" in short_option.output
    )
    bad_name = cli("add", "bad name", "--password", "long-enough-1")
    assert bad_name.exit_code != 0 and "username" in bad_name.output
    mismatch = cli("add", "erin", input="long-enough-1\nlong-enough-2\n")
    assert mismatch.exit_code != 0 and "do not match" in mismatch.output
    missing = cli("passwd", "nobody", "--password", "long-enough-1")
    assert missing.exit_code != 0 and "no user nobody" in missing.output
    gone = cli("remove", "nobody")
    assert gone.exit_code != 0 and "no user nobody" in gone.output
    assert "erin" not in cli("list").output.split()


def test_sec052_cli_runs_from_the_test_runner_without_a_context(server):
    result = server.test_cli_runner().invoke(args=["users", "list"])
    assert result.exit_code == 0, result.output
    assert API_ADMIN[0] in result.output.split()


def test_sec053_flask_cli_manages_users(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORTHANC_")}
    env.update(
        DICOM_DIR=str(tmp_path / "dicom"),
        DEMO_STUDY="0",
        CACHE_DIR=str(tmp_path / "cache"),
        USERS_DB=str(tmp_path / "users.sqlite"),
        ADMIN_USERNAME="",
        ADMIN_PASSWORD="",
    )

    def flask(*args: str, input: str | None = None):
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "app:server", "users", *args],
            cwd=ROOT,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )

    added = flask("add", "frank", input="frank-password-1\nfrank-password-1\n")
    assert added.returncode == 0, added.stderr
    assert "created frank" in added.stdout
    assert UserStore(tmp_path / "users.sqlite").authenticate(
        "frank", "frank-password-1"
    )
    short = flask("add", "gina", "--password", "short")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    assert not UserStore(tmp_path / "users.sqlite").exists("gina")


# -- production and demo mode -------------------------------------------------------------


def local_settings(tmp_path, **values) -> Settings:
    defaults = dict(
        dicom_dir=tmp_path / "dicom",
        demo_study=False,
        cache_dir=tmp_path / "cache",
        users_db=tmp_path / "users.sqlite",
    )
    return Settings(**{**defaults, **values})


def test_sec060_production_needs_a_long_jwt_secret(tmp_path):
    with pytest.raises(RuntimeError, match="JWT_SECRET_KEY"):
        create_server(local_settings(tmp_path, app_env="production", jwt_secret_key=""))
    with pytest.raises(RuntimeError, match="at least 32"):
        create_server(
            local_settings(tmp_path, app_env="production", jwt_secret_key="x" * 31)
        )
    assert not (tmp_path / "cache" / "jwt-secret").exists()  # no random fallback


def test_sec061_production_starts_with_secret_and_admin(tmp_path):
    secret = "s" * 16 + "e" * 16 + "!"
    server = create_server(
        local_settings(
            tmp_path,
            app_env="production",
            jwt_secret_key=secret,
            admin_username="root-admin",
            admin_password="admin-password-1",
        )
    )
    client = server.test_client()
    tokens = login(client, "root-admin", "admin-password-1")
    claims = jwt.decode(tokens["access"], secret, algorithms=["HS256"])
    assert claims["sub"] == "root-admin"
    assert UserStore(tmp_path / "users.sqlite").users() == ["root-admin"]
    # the cookies are Secure in production
    form = client.post(
        "/login", data={"username": "root-admin", "password": "admin-password-1"}
    )
    assert form.status_code == 302
    for header in form.headers.getlist("Set-Cookie"):
        assert "Secure" in header, header
    page = client.get("/login")
    assert 'id="demo-hint"' not in page.text
    assert_json_error(
        client.post("/api/token/", json={"username": "demo", "password": "demo1234"}),
        401,
    )


def test_sec062_demo_user_only_in_demo_mode(tmp_path):
    demo = create_server(local_settings(tmp_path / "demo"))
    assert UserStore(tmp_path / "demo" / "users.sqlite").users() == ["demo"]
    client = demo.test_client()
    login(client, "demo", "demo1234")
    assert 'id="demo-hint"' in client.get("/login").text

    production = create_server(
        local_settings(tmp_path / "prod", app_env="production", jwt_secret_key="k" * 40)
    )
    assert UserStore(tmp_path / "prod" / "users.sqlite").users() == []
    assert_json_error(
        production.test_client().post(
            "/api/token/", json={"username": "demo", "password": "demo1234"}
        ),
        401,
    )

    orthanc = create_server(
        local_settings(tmp_path / "orthanc", orthanc_url="http://127.0.0.1:9")
    )
    assert orthanc.extensions["pacs"].name == "orthanc"
    assert UserStore(tmp_path / "orthanc" / "users.sqlite").users() == []

    with_admin = create_server(
        local_settings(
            tmp_path / "admin", admin_username="ida", admin_password="ida-password-1"
        )
    )
    assert with_admin.extensions["users"].users() == ["ida"]


# -- logs -------------------------------------------------------------------------------


def test_sec070_no_credentials_in_logs(tmp_path, caplog, corpus):
    orthanc_password = "Orth4nc-t0p-s3cret"
    tried_password = "Tr0ub4dor&3-tried"
    caplog.set_level(logging.DEBUG)
    server = create_server(
        local_settings(
            tmp_path,
            orthanc_url=f"http://orthanc-user:{orthanc_password}@127.0.0.1:9",
            admin_username=API_ADMIN[0],
            admin_password=API_ADMIN[1],
        )
    )
    client = server.test_client()
    failed = client.post(
        "/api/token/", json={"username": "alice", "password": tried_password}
    )
    assert failed.status_code == 401
    form = client.post("/login", data={"username": "alice", "password": tried_password})
    assert form.status_code == 401
    headers = make_headers(login(client)["access"])
    answers = [client.get(url, headers=headers) for url in data_urls(corpus)[:2]] + [
        client.get("/healthz")
    ]
    assert [a.status_code for a in answers] == [503, 503, 503]
    assert any(
        "PACS unavailable" in r.getMessage() for r in caplog.records
    )  # logs captured
    texts = [a.get_data(as_text=True) for a in answers] + [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        if record.exc_info:
            texts.append(logging.Formatter().formatException(record.exc_info))
    for text in texts:
        assert orthanc_password not in text
        assert tried_password not in text
        assert API_ADMIN[1] not in text


def test_sec063_user_store_opens_while_another_worker_writes_its_schema(tmp_path):
    """Two workers booting together: one holds a write lock on the fresh
    users file while the other opens it. SQLite refuses the switch to WAL at
    once then (its busy timeout does not apply); the store waits instead of
    failing the worker's boot ("database is locked", seen under load)."""
    import sqlite3
    import threading

    path = tmp_path / "users.sqlite"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # as while it writes the schema
    other.execute("CREATE TABLE IF NOT EXISTS elsewhere (x)")
    done = threading.Event()
    threading.Thread(target=lambda: (done.wait(0.3), other.execute("COMMIT"))).start()
    store = UserStore(path)
    assert store.set_user("hanna", "correct horse battery")
    assert store.authenticate("hanna", "correct horse battery")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
