"""The embedded store's index: rescans, unusable files, duplicates."""

from __future__ import annotations

import shutil

import pytest

from services.embedded import EmbeddedStore
from services.models import NotFound
from settings import ROOT

CT = ROOT.parent / "shared" / "data" / "ge-head-ct"


def test_emb001_rescan_sees_added_changed_and_removed_files(tmp_path):
    folder = tmp_path / "dicom"
    folder.mkdir()
    store = EmbeddedStore(folder, index_path=tmp_path / "i.sqlite", rescan_interval=0)
    assert store.find_studies() == []
    files = sorted(CT.glob("*.dcm"))
    for f in files[:3]:
        shutil.copy(f, folder / f.name)
    (study,) = store.find_studies()
    assert study.image_count == 3
    (folder / files[0].name).unlink()
    assert store.get_study(study.study_uid).image_count == 2
    for f in files[3:]:
        shutil.copy(f, folder / f.name)
    assert store.get_study(study.study_uid).image_count == len(files) - 1


def test_emb002_unusable_files_are_listed_with_a_reason(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    (tmp_path / ".hidden.dcm").write_text("skipped: hidden")
    store = EmbeddedStore(tmp_path, index_path=tmp_path / ".i.sqlite")
    errors = store.errors()
    assert list(errors) == [str(tmp_path / "notes.txt")]
    assert "not readable as DICOM" in errors[str(tmp_path / "notes.txt")]


def test_emb003_duplicate_sop_instance_keeps_the_first_copy(tmp_path):
    src = sorted(CT.glob("*.dcm"))[0]
    shutil.copy(src, tmp_path / "a.dcm")
    shutil.copy(src, tmp_path / "b.dcm")
    store = EmbeddedStore(tmp_path / ".", index_path=tmp_path / ".i.sqlite")
    (study,) = store.find_studies()
    assert study.image_count == 1
    (series,) = store.list_series(study.study_uid)
    (image,) = store.list_images(study.study_uid, series.series_uid)
    assert store.get_instance_file(image.instance_id) == src.read_bytes()


def test_emb004_unknown_ids_are_not_found(tmp_path):
    store = EmbeddedStore(tmp_path, index_path=tmp_path / ".i.sqlite")
    with pytest.raises(NotFound):
        store.get_instance_meta("ffffffff-ffffffff-ffffffff-ffffffff-ffffffff")
    with pytest.raises(NotFound):
        store.list_images("1.2.3", "1.2.3.4")
