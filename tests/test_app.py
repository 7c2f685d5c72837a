"""The app shell: health endpoint, first start on the embedded store, and the
studies page in real Chromium."""

from __future__ import annotations

from app import create_server
from settings import Settings
from tests.conftest import sign_in


def test_app001_healthz_reports_the_pacs(dash_app):
    answer = dash_app.server.test_client().get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "status": "ok",
        "pacs": {"backend": "orthanc", "ok": True},
    }


def test_app002_healthz_says_when_orthanc_does_not_answer(tmp_path):
    down = create_server(
        Settings(
            orthanc_url="http://127.0.0.1:9",
            cache_dir=tmp_path,
            users_db=tmp_path / "u",
        )
    )
    answer = down.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json() == {
        "status": "degraded",
        "pacs": {"backend": "orthanc", "ok": False},
    }


def test_app003_first_start_writes_the_demo_study_and_demo_user(tmp_path):
    settings = Settings(
        dicom_dir=tmp_path / "dicom",
        cache_dir=tmp_path / "cache",
        users_db=tmp_path / "u.sqlite",
    )
    server = create_server(settings)
    assert any(settings.dicom_dir.rglob("*.dcm"))
    studies = server.extensions["pacs"].find_studies()
    assert [s.patient_id for s in studies] == ["DEMO0001"]
    assert studies[0].series_count >= 8
    assert server.extensions["users"].authenticate("demo", "demo1234")
    assert (
        server.test_client().get("/healthz").get_json()["pacs"]["backend"] == "embedded"
    )


def test_ui001_studies_page_searches_and_opens_a_study(dash_br, live_app, corpus):
    sign_in(dash_br, live_app)
    dash_br.wait_for_contains_text("#studies-table", "DEMO, PATIENT", timeout=10)
    assert "TWENTY, SERIES" in dash_br.find_element("#studies-table").text
    dash_br.find_element("#search-name").send_keys("twenty\n")
    dash_br.wait_for_text_to_equal(
        "#studies-table tbody tr td:nth-child(2)", "TWENTY, SERIES"
    )
    assert len(dash_br.find_elements("#studies-table tbody tr")) == 1
    dash_br.find_element("#studies-table tbody tr td:nth-child(2) a").click()
    dash_br.wait_for_element("#series-grid .series-card", timeout=10)
    assert dash_br.driver.current_url.endswith(f"/study/{corpus.big.study_uid}")
    assert len(dash_br.find_elements("#series-grid .series-card")) == 20
    assert dash_br.get_logs() == []
