"""The environment variables are a contract: pin their names and documentation."""

import re

import pytest

from settings import ROOT, Settings

CONTRACT = {
    "ORTHANC_URL",
    "ORTHANC_USERNAME",
    "ORTHANC_PASSWORD",
    "DICOM_DIR",
    "JWT_SECRET_KEY",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD",
    "CACHE_DIR",
    "REDIS_URL",
    "HOST",
    "PORT",
}


def documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.M))


def read_by_settings() -> set[str]:
    text = (ROOT / "settings.py").read_text()
    return set(re.findall(r"""(?:get|env\.get)\(\s*"([A-Z][A-Z0-9_]+)\"""", text))


def test_set001_contract_names_are_read_and_documented():
    assert CONTRACT <= read_by_settings()
    assert read_by_settings() == documented()


def test_set002_values_from_env():
    s = Settings.from_env(
        {"ORTHANC_URL": "http://pacs:8042/", "PORT": "9000", "DICOM_DIR": "/data"}
    )
    assert s.orthanc_url == "http://pacs:8042"
    assert s.backend == "orthanc"
    assert s.port == 9000
    assert str(s.dicom_dir) == "/data"
    assert Settings.from_env({}).backend == "embedded"
    assert Settings.from_env({}).host == "127.0.0.1"


def test_set003_in_flight_cap_is_five_unless_explicit():
    with pytest.raises(ValueError, match="1..5"):
        Settings.from_env({"ORTHANC_MAX_IN_FLIGHT": "8"})
    assert Settings.from_env({"ORTHANC_MAX_IN_FLIGHT": "3"}).orthanc_max_in_flight == 3
    s = Settings.from_env(
        {"ORTHANC_MAX_IN_FLIGHT": "8", "ORTHANC_ALLOW_MORE_THAN_5": "1"}
    )
    assert s.orthanc_max_in_flight == 8
