"""The app shell: health endpoint, and the studies page in real Chromium."""

from __future__ import annotations

from app import create_server
from settings import Settings
from tests.conftest import sign_in


def test_app001_healthz_reports_the_embedded_pacs(dash_app):
    answer = dash_app.server.test_client().get("/healthz")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "status": "ok",
        "pacs": {"backend": "embedded", "ok": True},
    }


def test_app002_healthz_says_when_orthanc_does_not_answer(orthanc_server):
    up = create_server(
        Settings(
            orthanc_url=orthanc_server.url,
            orthanc_username=orthanc_server.auth[0],
            orthanc_password=orthanc_server.auth[1],
        )
    )
    assert up.test_client().get("/healthz").get_json()["pacs"] == {
        "backend": "orthanc",
        "ok": True,
    }
    down = create_server(Settings(orthanc_url="http://127.0.0.1:9"))  # discard port
    answer = down.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "degraded"


def test_app003_demo_study_written_on_first_start(dash_app):
    settings = dash_app.server.extensions["settings"]
    assert any(settings.dicom_dir.rglob("*.dcm"))
    studies = dash_app.server.extensions["pacs"].find_studies()
    assert [s.patient_id for s in studies] == ["DEMO0001"]
    assert studies[0].series_count >= 8


def test_ui001_studies_page_lists_the_demo_study(dash_duo, dash_app):
    sign_in(dash_duo, dash_app)
    dash_duo.wait_for_contains_text("#studies-table", "DEMO^PATIENT", timeout=10)
    text = dash_duo.find_element("#studies-table").text
    assert "Demo CT/MR study" in text and "CT, MR" in text
    assert dash_duo.get_logs() == []
