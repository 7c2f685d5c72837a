"""The synthetic demo study: valid, ordered, anatomically plausible, deterministic."""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian

from services.demo import (
    CT_IMAGE_STORAGE,
    DEFAULT_DEMO,
    MF_WORD_SC_STORAGE,
    MR_IMAGE_STORAGE,
    GeneratedStudy,
    SeriesSpec,
    ensure_demo_study,
    generate_study,
    many_series_specs,
)

REQUIRED_TAGS = (
    "PatientName PatientID PatientBirthDate PatientSex StudyInstanceUID StudyDate "
    "StudyTime StudyDescription AccessionNumber StudyID ReferringPhysicianName "
    "SeriesInstanceUID SeriesNumber Modality BodyPartExamined FrameOfReferenceUID "
    "InstanceNumber ImagePositionPatient ImageOrientationPatient SliceLocation "
    "SliceThickness PixelSpacing Rows Columns SamplesPerPixel "
    "PhotometricInterpretation BitsAllocated BitsStored HighBit PixelRepresentation "
    "WindowCenter WindowWidth SOPClassUID SOPInstanceUID"
).split()
SMALL = (
    SeriesSpec("CT small", "CT", 1, 3, 64, 64, 5.0, 6.0, "thorax"),
    SeriesSpec("MR small", "MR", 2, 2, 32, 32, 5.0, 7.0, "brain_t2"),
    SeriesSpec(None, "MR", 3, 3, 32, 32, 5.0, 7.0, "brain_t1", multiframe=True),
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> GeneratedStudy:
    start = time.perf_counter()
    study = generate_study(tmp_path_factory.mktemp("demo"))
    elapsed = time.perf_counter() - start
    size = sum(f.stat().st_size for s in study.series for f in s.files)
    print(f"\nDEFAULT_DEMO: {elapsed:.2f} s, {size / 1e6:.1f} MB")
    return study


@pytest.fixture(scope="module")
def datasets(demo) -> dict[int, list[pydicom.Dataset]]:
    """Series number -> datasets (with pixels) in the order of ``GeneratedSeries.files``."""
    return {s.series_number: [pydicom.dcmread(f) for f in s.files] for s in demo.series}


def _series(demo: GeneratedStudy, number: int):
    return next(s for s in demo.series if s.series_number == number)


def _spec(kind: str, multiframe: bool = False) -> SeriesSpec:
    return next(
        s for s in DEFAULT_DEMO if s.kind == kind and s.multiframe == multiframe
    )


def _hu_at(ds: pydicom.Dataset, x: float, y: float, half: int = 2) -> float:
    """Median HU of a small patch around patient point (x, y) of an axial slice."""
    ipp, (row_mm, col_mm) = ds.ImagePositionPatient, ds.PixelSpacing
    c, r = round((x - ipp[0]) / col_mm), round((y - ipp[1]) / row_mm)
    hu = apply_modality_lut(ds.pixel_array, ds)
    return float(np.median(hu[r - half : r + half + 1, c - half : c + half + 1]))


def test_default_demo_inventory(demo, datasets):
    assert len(demo.series) == len(DEFAULT_DEMO) >= 8
    numbers = [s.series_number for s in demo.series]
    assert len(set(numbers)) == len(numbers)
    assert len({s.series_uid for s in demo.series}) == len(demo.series)
    assert {s.modality for s in demo.series} >= {"CT", "MR"}
    no_description = [s for s in demo.series if s.description is None]
    assert len(no_description) == 1
    for s in demo.series:
        present = ["SeriesDescription" in ds for ds in datasets[s.series_number]]
        assert all(present) if s.description else not any(present)
        if s.description:
            assert datasets[s.series_number][0].SeriesDescription == s.description
    multi = [s for s in demo.series if len(s.files) == 1 and s.image_count > 1]
    assert len(multi) == 1
    ds = datasets[multi[0].series_number][0]
    assert int(ds.NumberOfFrames) == multi[0].image_count > 1
    assert ds.pixel_array.shape == (ds.NumberOfFrames, ds.Rows, ds.Columns)
    assert ds.SOPClassUID == MF_WORD_SC_STORAGE
    assert len(ds.SliceLocationVector) == ds.NumberOfFrames
    assert list(ds.SliceLocationVector) == sorted(ds.SliceLocationVector)


def test_every_file_is_valid_part10(demo, datasets):
    study_uids, sop_uids = set(), []
    for s in demo.series:
        assert len(s.files) == len(s.instance_uids)
        for path, uid, ds in zip(
            s.files, s.instance_uids, datasets[s.series_number], strict=True
        ):
            assert (
                path.parent.parent == s.files[0].parent.parent
            )  # one folder per series
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == uid
            assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert ds.SeriesInstanceUID == s.series_uid
            assert int(ds.SeriesNumber) == s.series_number and ds.Modality == s.modality
            missing = [t for t in REQUIRED_TAGS if t not in ds]
            assert not missing, f"{path}: {missing}"
            assert (ds.SamplesPerPixel, ds.PhotometricInterpretation) == (
                1,
                "MONOCHROME2",
            )
            assert (ds.BitsAllocated, ds.PixelRepresentation) == (16, 0)
            if "NumberOfFrames" not in ds:
                expected = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}[s.modality]
                assert ds.SOPClassUID == expected
            pixels = apply_modality_lut(ds.pixel_array, ds)
            assert pixels.shape[-2:] == (ds.Rows, ds.Columns)
            if s.modality == "CT":
                assert (ds.RescaleIntercept, ds.RescaleSlope) == (-1024, 1)
                assert -1024 <= pixels.min() and pixels.max() <= 3071
            else:
                assert float(ds.get("RescaleSlope", 1)) == 1
                assert float(ds.get("RescaleIntercept", 0)) == 0
            study_uids.add(ds.StudyInstanceUID)
            sop_uids.append(uid)
    assert study_uids == {demo.study_uid}
    assert len(set(sop_uids)) == len(sop_uids)


def test_display_order_follows_position_on_the_normal(demo, datasets):
    checked = 0
    for s in demo.series:
        dss = datasets[s.series_number]
        assert [int(ds.InstanceNumber) for ds in dss] == list(range(1, len(dss) + 1))
        if len(dss) < 3:
            continue
        iop = np.array(dss[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        proj = [
            float(np.dot(np.array(ds.ImagePositionPatient, float), normal))
            for ds in dss
        ]
        assert np.all(np.diff(proj) > 0), s.description
        assert np.allclose(np.diff(proj), dss[0].SliceThickness)
        names = [f.name for f in s.files]
        assert sorted(names) != names, "file names must not sort in display order"
        checked += 1
    assert checked >= 5


def test_scout_is_a_coronal_localizer(demo, datasets):
    scout = _series(demo, _spec("scout").series_number)
    ds = datasets[scout.series_number][0]
    assert "LOCALIZER" in ds.ImageType
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert hu[:, :10].mean() < -950  # air beside the body
    assert hu[ds.Rows // 2, ds.Columns // 2] > hu[ds.Rows // 2, 5] + 500  # body


def test_ct_thorax_hounsfield_units(demo, datasets):
    spec = _spec("thorax")
    ds = datasets[spec.series_number][spec.slices // 2]
    assert _hu_at(ds, -75, 0) < -500  # right lung
    assert _hu_at(ds, 0, 55) > 300  # vertebral body
    assert 0 < _hu_at(ds, 20, -25) < 100  # heart
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert abs(hu[:16, :16].mean() + 1000) < 25  # air in the corner
    assert hu.max() > 600 and hu.min() >= -1024
    body = hu[hu > -500]
    assert -150 < np.median(body) < 150  # mostly soft tissue


def test_ct_abdomen_and_head_hounsfield_units(demo, datasets):
    spec = _spec("abdomen")
    top = datasets[spec.series_number][-1]  # most superior slice: liver
    assert 30 < _hu_at(top, -55, -5) < 90
    assert _hu_at(top, 0, 52) > 300  # vertebral body
    head = _spec("head")
    ds = datasets[head.series_number][head.slices // 2]
    hu = apply_modality_lut(ds.pixel_array, ds)
    assert hu.max() > 900  # skull
    assert 10 < _hu_at(ds, 0, 40) < 60  # brain


def test_mr_csf_contrast_is_inverted_between_t1_and_t2(demo, datasets):
    t1, t2 = _spec("brain_t1"), _spec("brain_t2")
    a = datasets[t1.series_number][t1.slices // 2]
    b = datasets[t2.series_number][t2.slices // 2]
    assert a.ImagePositionPatient == b.ImagePositionPatient
    img1, img2 = a.pixel_array.astype(float), b.pixel_array.astype(float)
    csf = img2 > np.percentile(img2, 99.5)  # the brightest on T2 is fluid
    tissue = img1 > 100
    assert img1[csf].mean() < 0.5 * img1[tissue].mean()
    for ds, img in ((a, img1), (b, img2)):
        low, high = (
            ds.WindowCenter - ds.WindowWidth / 2,
            ds.WindowCenter + ds.WindowWidth / 2,
        )
        assert low < np.median(img[tissue]) < high


def test_same_seed_same_files_other_seed_other_uids(tmp_path):
    one = generate_study(tmp_path / "one", SMALL, seed=7)
    two = generate_study(tmp_path / "two", SMALL, seed=7)
    other = generate_study(tmp_path / "other", SMALL, seed=8)
    assert one.study_uid == two.study_uid
    for s1, s2 in zip(one.series, two.series, strict=True):
        assert (s1.series_uid, s1.instance_uids) == (s2.series_uid, s2.instance_uids)
        assert [f.read_bytes() for f in s1.files] == [f.read_bytes() for f in s2.files]

    def uids(study: GeneratedStudy) -> set[str]:
        return {study.study_uid} | {
            u for s in study.series for u in (s.series_uid, *s.instance_uids)
        }

    assert not uids(one) & uids(other)
    changed = generate_study(tmp_path / "changed", SMALL[:2], seed=7)
    assert changed.study_uid != one.study_uid
    mf = one.series[2]
    assert len(mf.files) == 1 and mf.image_count == 3 and mf.description is None


def test_ensure_demo_study_is_idempotent(tmp_path):
    dicom_dir = tmp_path / "dicom"
    first = ensure_demo_study(dicom_dir)
    assert first is not None and len(first.series) == len(DEFAULT_DEMO)
    files = {p: p.stat().st_mtime_ns for p in dicom_dir.rglob("*") if p.is_file()}
    assert set(files) == {f for s in first.series for f in s.files}
    assert all(p.is_relative_to(dicom_dir / "demo") for p in files)
    assert [p.name for p in dicom_dir.iterdir()] == ["demo"]  # no temporary left over
    assert ensure_demo_study(dicom_dir) is None
    assert {
        p: p.stat().st_mtime_ns for p in dicom_dir.rglob("*") if p.is_file()
    } == files


def test_ensure_demo_study_leaves_existing_dicom_alone(tmp_path):
    generate_study(tmp_path / "mine", SMALL[:1])
    before = sorted(tmp_path.rglob("*"))
    assert ensure_demo_study(tmp_path) is None
    assert sorted(tmp_path.rglob("*")) == before


def test_many_series_specs(tmp_path):
    specs = many_series_specs(20)
    assert len(specs) == 20
    assert [s.series_number for s in specs] == list(range(1, 21))
    assert sum(s.description is None for s in specs) == 1
    assert any(s.multiframe for s in specs) and {s.modality for s in specs} == {
        "CT",
        "MR",
    }
    study = generate_study(
        tmp_path, specs, patient_id="BENCH0001", accession="BENCH0001"
    )
    assert len(study.series) == 20
    assert sum(len(s.files) for s in study.series) == sum(
        1 if s.multiframe else s.slices for s in specs
    )
    assert len(list(tmp_path.rglob("*.dcm"))) == sum(len(s.files) for s in study.series)
    assert len(many_series_specs(3)) == 3


def test_spec_validation():
    with pytest.raises(ValueError):
        SeriesSpec("x", "CT", 1, 1, 8, 8, 1.0, 1.0, "elbow")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SeriesSpec("x", "CT", 1, 0, 8, 8, 1.0, 1.0, "thorax")
