"""scripts.orthanc_local against the real Orthanc binary (installed by the fixtures)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from scripts import orthanc_local
from scripts.orthanc_local import LocalOrthanc, OrthancError, is_dicom_file
from settings import ROOT

CT_DIR = ROOT.parent / "shared" / "data" / "ge-head-ct"
MR_DIR = ROOT.parent / "shared" / "data" / "ge-mprage-mr"


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def orthanc() -> Iterator[LocalOrthanc]:
    with LocalOrthanc() as server:
        yield server


def test_system_needs_auth(orthanc: LocalOrthanc) -> None:
    assert orthanc.url.startswith("http://127.0.0.1:")
    answer = requests.get(f"{orthanc.url}/system", auth=orthanc.auth, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["Version"]
    assert requests.get(f"{orthanc.url}/system", timeout=5).status_code == 401
    wrong = (orthanc.username, "wrong")
    assert (
        requests.get(f"{orthanc.url}/system", auth=wrong, timeout=5).status_code == 401
    )


def test_plugins_loaded(orthanc: LocalOrthanc) -> None:
    plugins = requests.get(
        f"{orthanc.url}/plugins", auth=orthanc.auth, timeout=5
    ).json()
    assert {"gdcm", "dicom-web"} <= set(plugins)


def test_upload_and_statistics(orthanc: LocalOrthanc) -> None:
    files = sorted(CT_DIR.glob("*.dcm"))[:3]
    answers = orthanc.upload(files)
    assert [a["Status"] for a in answers] == ["Success"] * 3
    assert len({a["ID"] for a in answers}) == 3
    assert len({a["ParentSeries"] for a in answers}) == 1
    stats = requests.get(
        f"{orthanc.url}/statistics", auth=orthanc.auth, timeout=5
    ).json()
    assert stats["CountInstances"] == 3
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"]) == (
        1,
        1,
        1,
    )
    assert orthanc.upload(files[:1])[0]["Status"] == "AlreadyStored"


def test_upload_rejects_non_dicom(orthanc: LocalOrthanc, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.dcm"
    bogus.write_bytes(b"not dicom")
    with pytest.raises(OrthancError, match="HTTP 400"):
        orthanc.upload([bogus])


def test_dicom_detection() -> None:
    mr = next(MR_DIR.glob("*.MRDC.*"))  # extensionless DICOM
    assert is_dicom_file(mr)
    assert not is_dicom_file(MR_DIR / "LICENSE")


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    server = LocalOrthanc().start()
    pid, port, workdir = server.pid, server.port, server.workdir
    assert pid and pid_alive(pid) and not port_is_free(port)
    server.stop()
    assert not pid_alive(pid)
    assert port_is_free(port)
    assert not workdir.exists()
    assert not server.running

    # A given workdir is kept, and a taken fixed port is reported.
    with LocalOrthanc(workdir=tmp_path / "o") as first:
        clash = LocalOrthanc(workdir=tmp_path / "p", port=first.port)
        with pytest.raises(OrthancError, match="already in use"):
            clash.start()
        assert not clash.running
    assert (tmp_path / "o" / "orthanc.log").exists()


def test_random_port_collision_retries(
    orthanc: LocalOrthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = orthanc_local._free_port()
    ports = iter([orthanc.port, free])  # the first pick is already taken
    monkeypatch.setattr(orthanc_local, "_free_port", lambda: next(ports))
    with LocalOrthanc() as server:
        assert server.port == free
        answer = requests.get(f"{server.url}/system", auth=server.auth, timeout=5)
        assert answer.json()["Name"] == server.name


def test_ensure_installed_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orthanc_local, "ORTHANC_BIN", "/nonexistent/Orthanc")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(OrthancError, match="not installed"):
        orthanc_local.ensure_installed()
