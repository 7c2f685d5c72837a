"""Shared fixtures: the test corpus, a real private Orthanc loaded with it, and
the embedded store on the same files. ``pacs`` runs a test once per backend."""

from __future__ import annotations

import os
import shutil

import pytest

from scripts.orthanc_local import LocalOrthanc, ensure_installed
from services.embedded import EmbeddedStore
from services.orthanc import OrthancClient
from tests.corpus import Corpus, build_corpus


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
def dash_app(tmp_path_factory):
    """The real app (``app.py``) on the embedded store with its demo study.

    Dash registers callbacks process-wide, so the app is built once per test
    session, from the environment exactly as ``python app.py`` would be."""
    root = tmp_path_factory.mktemp("app")
    os.environ.update(
        DICOM_DIR=str(root / "dicom"),
        CACHE_DIR=str(root / "cache"),
        USERS_DB=str(root / "users.sqlite"),
        DEMO_STUDY="1",
        LOGIN_RATE_LIMIT="1000 per minute",
    )
    for name in ("ORTHANC_URL", "ORTHANC_USERNAME", "ORTHANC_PASSWORD"):
        os.environ.pop(name, None)
    import app as app_module

    return app_module.app


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


def sign_in(dash_duo, dash_app, path: str = "/") -> None:
    """Start the app, go to ``path`` and sign in as the demo user through the
    real login form; waits until Dash has rendered the page."""
    from api.auth import DEMO_USER

    dash_duo.start_server(dash_app, navigate=False)
    dash_duo.driver.get(dash_duo.server.url + path)
    dash_duo.wait_for_element("#login-form", timeout=10)
    dash_duo.find_element("#username").send_keys(DEMO_USER[0])
    dash_duo.find_element("#password").send_keys(DEMO_USER[1])
    dash_duo.find_element("#login-submit").click()
    dash_duo.wait_for_element("#react-entry-point", timeout=10)
    assert dash_duo.driver.current_url == dash_duo.server.url + path  # came back
