"""Shared fixtures: the test corpus, a real private Orthanc loaded with it, and
the embedded store on the same files. ``pacs`` runs a test once per backend."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from scripts.orthanc_local import LocalOrthanc, ensure_installed
from services.embedded import EmbeddedStore
from services.orthanc import OrthancClient
from tests.corpus import Corpus, build_corpus
from tests.proxy import CountingProxy
from tests.served import Served


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def orthanc_server(corpus, tmp_path_factory):
    """A real Orthanc (Debian package, GDCM + DICOMweb plugins) on 127.0.0.1,
    remote access off, with the corpus uploaded. Fails, never skips, when
    Orthanc cannot be installed: these tests must run."""
    ensure_installed()
    with LocalOrthanc(workdir=tmp_path_factory.mktemp("orthanc")) as server:
        server.upload(corpus.files())
        yield server


@pytest.fixture(scope="session")
def orthanc_pacs(orthanc_server) -> OrthancClient:
    return OrthancClient(
        orthanc_server.url,
        username=orthanc_server.auth[0],
        password=orthanc_server.auth[1],
    )


@pytest.fixture(scope="session")
def embedded_pacs(corpus, tmp_path_factory) -> EmbeddedStore:
    index = tmp_path_factory.mktemp("index") / "index.sqlite"
    return EmbeddedStore(corpus.root, index_path=index)


@pytest.fixture(params=["orthanc", "embedded"])
def pacs(request):
    """Each contract test runs against both backends with the same assertions."""
    return request.getfixturevalue(f"{request.param}_pacs")


@pytest.fixture(scope="session")
def app_proxy(orthanc_server):
    """The counting proxy between the browser-tested app and the real Orthanc."""
    with CountingProxy(orthanc_server.url) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def dash_app(tmp_path_factory, orthanc_server, app_proxy):
    """The real app (``app.py``) on the real Orthanc (through ``app_proxy``).

    Dash registers callbacks process-wide, so the app is built once per test
    session, from the environment exactly as ``python app.py`` would be."""
    from api.auth import DEMO_USER

    root = tmp_path_factory.mktemp("app")
    os.environ.update(
        ORTHANC_URL=app_proxy.url,
        ORTHANC_USERNAME=orthanc_server.auth[0],
        ORTHANC_PASSWORD=orthanc_server.auth[1],
        CACHE_DIR=str(root / "cache"),
        USERS_DB=str(root / "users.sqlite"),
        ADMIN_USERNAME=DEMO_USER[0],
        ADMIN_PASSWORD=DEMO_USER[1],
        LOGIN_RATE_LIMIT="1000 per minute",
        API_RATE_LIMIT="100000 per minute",  # every browser test is one client
    )
    import app as app_module

    return app_module.app


@pytest.fixture
def fresh_app_state(dash_app, app_proxy):
    """Empty server caches, loader queue and proxy counters before a test."""
    ext = dash_app.server.extensions
    ext["loader"].stop()
    ext["pacs"].images.clear()
    ext["state"].clear()
    app_proxy.reset()
    ext["loader"].start()
    yield
    app_proxy.delay = 0.0
    app_proxy.fail_paths.clear()


def pytest_setup_options():
    """Chromium options for dash[testing]'s browser fixtures (dash_duo)."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--window-size=1280,900",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    return options


class ImageRequests:
    """WSGI middleware counting the image requests (``/api/pacs/instances/``
    and batches of frames, ``.../images/frames``)
    the app is answering at once: the browser's in-flight count seen from the
    server, whatever the page's own counters say."""

    def __init__(self, app) -> None:
        self.app, self.lock = app, threading.Lock()
        self.in_flight = self.max_in_flight = self.total = 0
        self.refuse_batches = False  # answer batches 502, as a failing proxy would
        self.priority: dict[str, str | None] = {}  # path[?query] -> Priority header

    def reset(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.total = 0

    def _change(self, delta: int) -> None:
        with self.lock:
            self.in_flight += delta
            self.total += max(delta, 0)
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not (
            path.startswith("/api/pacs/instances/") or path.endswith("/images/frames")
        ):
            return self.app(environ, start_response)
        if self.refuse_batches and path.endswith("/images/frames"):
            start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
            return [b"refused"]
        query = environ.get("QUERY_STRING")
        self.priority[f"{path}?{query}" if query else path] = environ.get(
            "HTTP_PRIORITY"
        )
        self._change(1)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._change(-1)
            raise
        return _Closing(body, lambda: self._change(-1))


class _Closing:
    """A response body that calls ``done`` once: just before its last chunk
    goes to the server (so the client cannot have finished the request, and
    started another, before the count went down), or on close."""

    def __init__(self, body, done) -> None:
        self.body, self._done = body, done

    def __iter__(self):
        chunks = iter(self.body)
        chunk = next(chunks, None)
        while chunk is not None:
            following = next(chunks, None)
            if following is None:
                self.done()
            yield chunk
            chunk = following
        self.done()

    def done(self) -> None:
        done, self._done = self._done, None
        if done:
            done()

    def close(self) -> None:
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done()


@pytest.fixture(scope="session")
def image_requests(dash_app) -> ImageRequests:
    return ImageRequests(dash_app.server.wsgi_app)


@pytest.fixture(scope="session")
def live_app(dash_app, image_requests):
    """The app served over real HTTP for the browser tests, for the session,
    its image requests counted by ``image_requests``.

    (dash_duo's own runner stops its server by raising SystemExit in every
    thread the app started, which can cut a SQLite transaction in half and
    leave the shared state locked; a server of our own is stopped cleanly.)"""
    served = Served(image_requests)
    yield served.url
    served.close()


def sign_in(dash_br, live_app: str, path: str = "/") -> None:
    """Go to ``path`` and sign in as the demo user through the real login
    form; waits until Dash has rendered the page we came for (and the study
    page's first-paint copy has made way for it)."""
    from api.auth import DEMO_USER

    dash_br.driver.get(live_app + path)
    dash_br.wait_for_element("#login-form", timeout=10)
    dash_br.find_element("#username").send_keys(DEMO_USER[0])
    dash_br.find_element("#password").send_keys(DEMO_USER[1])
    dash_br.find_element("#login-submit").click()
    dash_br.wait_for_element("#react-entry-point", timeout=10)
    assert dash_br.driver.current_url == live_app + path  # came back
    dash_br.wait_for_no_elements("#first-paint", timeout=15)


# -- REST API servers (tests/test_api.py, tests/test_api_security.py) ------------
# Flask servers from ``app.create_server`` (no Dash), so several can coexist.

API_ADMIN = ("alice", "alice-password-1")


@pytest.fixture(scope="session")
def api_settings(tmp_path_factory):
    """A factory of Settings for API servers: own cache and users files, alice as
    admin, limits high enough that only the rate-limit tests ever meet them."""
    from settings import Settings

    def make(**overrides) -> Settings:
        root = tmp_path_factory.mktemp("api")
        values = dict(
            cache_dir=root / "cache",
            users_db=root / "u.sqlite",
            admin_username=API_ADMIN[0],
            admin_password=API_ADMIN[1],
            login_rate_limit="1000 per minute",
            api_rate_limit="100000 per minute",
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def orthanc_api(orthanc_server, api_settings):
    """The API on the real Orthanc loaded with the corpus."""
    from app import create_server

    return create_server(
        api_settings(
            orthanc_url=orthanc_server.url,
            orthanc_username=orthanc_server.auth[0],
            orthanc_password=orthanc_server.auth[1],
        )
    )


@pytest.fixture(scope="session")
def embedded_api(corpus, api_settings):
    """The API on the embedded store over the same corpus files."""
    from app import create_server

    return create_server(api_settings(dicom_dir=corpus.root, demo_study=False))


@pytest.fixture(params=["orthanc", "embedded"])
def api_server(request):
    """Each API test runs once per backend with the same assertions."""
    return request.getfixturevalue(f"{request.param}_api")


@pytest.fixture
def client(api_server):
    """A Flask test client of ``api_server``."""
    return api_server.test_client()


@pytest.fixture
def headers(client):
    """``Authorization`` for the API's admin (signed in through the API)."""
    answer = client.post(
        "/api/token/", json={"username": API_ADMIN[0], "password": API_ADMIN[1]}
    )
    assert answer.status_code == 200, answer.data
    return {"Authorization": f"Bearer {answer.get_json()['access']}"}
