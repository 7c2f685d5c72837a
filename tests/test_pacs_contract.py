"""The PACS contract: the same assertions against a real Orthanc and the
embedded store, on the demo study, the real series in ../shared/data, codec
variants and broken files from pydicom / pydicom-data."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from services.models import DecodeError, NotFound
from services.pacs import Pacs, StudyQuery


def study_by_patient(pacs: Pacs, patient_id: str):
    (study,) = pacs.find_studies(StudyQuery(patient_id=patient_id))
    return study


def shared_series(pacs: Pacs, modality: str):
    (study,) = pacs.find_studies(
        StudyQuery(
            modality=modality, patient_name="REMOVED" if modality == "CT" else "dicom"
        )
    )
    (series,) = pacs.list_series(study.study_uid)
    return study, series


# -- studies ------------------------------------------------------------------


def test_pacs001_find_studies_lists_every_study(pacs, corpus):
    uids = {s.study_uid for s in pacs.find_studies()}
    assert corpus.demo.study_uid in uids
    assert {corpus.codecs_study_uid, corpus.broken_study_uid} <= uids
    assert len(uids) == 8  # demo, 20 series, codecs, broken, shared CT, MR, 2 odd ids


def test_pacs002_find_studies_filters(pacs, corpus):
    demo_uid = corpus.demo.study_uid
    by_name = pacs.find_studies(StudyQuery(patient_name="demo*"))  # case-insensitive
    assert [s.study_uid for s in by_name] == [demo_uid]
    assert pacs.find_studies(StudyQuery(patient_name="nobody*")) == []
    assert [
        s.study_uid for s in pacs.find_studies(StudyQuery(accession="DEMO0001"))
    ] == [demo_uid]
    in_2026 = pacs.find_studies(StudyQuery(date_from="20260101", date_to="20261231"))
    assert [s.study_uid for s in in_2026] == [demo_uid]
    assert pacs.find_studies(StudyQuery(date_from="20270101")) == []
    mr = {s.study_uid for s in pacs.find_studies(StudyQuery(modality="MR"))}
    assert demo_uid in mr and corpus.codecs_study_uid in mr
    assert len(pacs.find_studies(StudyQuery(limit=2))) == 2
    everything = pacs.find_studies()
    assert pacs.find_studies(StudyQuery(offset=1, limit=2)) == everything[1:3]


def test_pacs003_study_summary(pacs, corpus):
    study = pacs.get_study(corpus.demo.study_uid)
    assert study.patient_name == "DEMO^PATIENT"
    assert study.patient_id == "DEMO0001"
    assert study.series_count == len(corpus.demo.series)
    assert study.image_count == sum(s.image_count for s in corpus.demo.series)
    assert set(study.modalities) >= {"CT", "MR"}
    with pytest.raises(NotFound):
        pacs.get_study("1.2.3.4.5.6.7.8.9")


# -- series -------------------------------------------------------------------


def test_pacs010_series_sorted_with_counts(pacs, corpus):
    series = pacs.list_series(corpus.demo.study_uid)
    numbers = [s.series_number for s in series]
    assert numbers == sorted(numbers) and len(series) >= 8
    expected = {g.series_uid: g for g in corpus.demo.series}
    for s in series:
        generated = expected[s.series_uid]
        assert s.image_count == generated.image_count
        assert s.series_number == generated.series_number
        assert s.series_description == (generated.description or "")
        assert s.modality == generated.modality
    assert any(s.series_description == "" for s in series)
    multiframe = [s for s in series if s.instance_count == 1 and s.image_count > 1]
    assert multiframe, "the demo has a multi-frame instance"


def test_pacs011_unknown_study_is_not_found(pacs):
    with pytest.raises(NotFound):
        pacs.list_series("1.2.840.999999.1")


# -- images in display order ------------------------------------------------------


def test_pacs020_demo_series_in_generated_display_order(pacs, corpus):
    for generated in corpus.demo.series:
        images = pacs.list_images(corpus.demo.study_uid, generated.series_uid)
        assert len(images) == generated.image_count
        assert [i.image_number for i in images] == list(range(1, len(images) + 1))
        uids = list(dict.fromkeys(i.instance_uid for i in images))
        assert uids == list(generated.instance_uids)


def test_pacs021_real_series_ordered_along_the_normal(pacs, corpus):
    for modality in ("CT", "MR"):
        study, series = shared_series(pacs, modality)
        images = pacs.list_images(study.study_uid, series.series_uid)
        assert len(images) == series.image_count == {"CT": 28, "MR": 130}[modality]
        metas = [pacs.get_instance_meta(i.instance_id) for i in images]
        iop = np.array(metas[0].image_orientation)
        normal = np.cross(iop[:3], iop[3:])
        positions = [float(np.dot(normal, m.image_position)) for m in metas]
        assert positions == sorted(positions)
        # the MR files' names are not in slice order; the order is not by name
        numbers = [int(m.extra["InstanceNumber"]) for m in metas]
        assert numbers in (sorted(numbers), sorted(numbers, reverse=True))


def test_pacs024_series_images_in_one_go(pacs, corpus):
    for study_uid in (corpus.demo.study_uid, corpus.codecs_study_uid):
        together = pacs.series_images(study_uid)
        series = pacs.list_series(study_uid)
        assert list(together) == [s.series_uid for s in series]
        for s in series:
            assert together[s.series_uid] == pacs.list_images(study_uid, s.series_uid)


def test_pacs022_multiframe_frames_are_images(pacs, corpus):
    (series,) = [
        s
        for s in pacs.list_series(corpus.codecs_study_uid)
        if s.series_description == "multi-frame, 10 frames"
    ]
    images = pacs.list_images(corpus.codecs_study_uid, series.series_uid)
    assert [i.frame_index for i in images] == list(range(10))
    assert len({i.instance_id for i in images}) == 1


def test_pacs023_series_of_another_study_is_not_found(pacs, corpus):
    other = pacs.list_series(corpus.codecs_study_uid)[0]
    with pytest.raises(NotFound):
        pacs.list_images(corpus.demo.study_uid, other.series_uid)


# -- instances and pixels -------------------------------------------------------


def test_pacs030_instance_file_is_the_stored_file(pacs, corpus):
    for uid, path in list(corpus.codec_files.items())[:4]:
        image = next(
            i
            for s in pacs.list_series(corpus.codecs_study_uid)
            for i in pacs.list_images(corpus.codecs_study_uid, s.series_uid)
            if i.instance_uid == uid
        )
        assert pacs.get_instance_file(image.instance_id) == path.read_bytes()


def test_pacs031_ct_frame_in_hounsfield_units(pacs, corpus):
    thorax = next(
        s for s in corpus.demo.series if s.modality == "CT" and s.image_count > 20
    )
    images = pacs.list_images(corpus.demo.study_uid, thorax.series_uid)
    hu = pacs.get_frame(images[len(images) // 2].instance_id)
    assert hu.dtype == np.float32 and hu.ndim == 2
    assert hu.min() < -900  # air
    assert hu.max() > 300  # bone
    meta = pacs.get_instance_meta(images[0].instance_id)
    assert meta.modality == "CT" and meta.rescale_intercept == -1024
    assert meta.window_center is not None and meta.window_width is not None


def test_pacs032_every_codec_decodes_like_pydicom(pacs, corpus):
    for s in pacs.list_series(corpus.codecs_study_uid):
        for image in pacs.list_images(corpus.codecs_study_uid, s.series_uid)[:3]:
            source = pydicom.dcmread(corpus.codec_files[image.instance_uid])
            expected = pydicom.pixels.pixel_array(source, index=image.frame_index)
            pixels = pacs.get_frame(image.instance_id, image.frame_index)
            assert pixels.shape[:2] == (source.Rows, source.Columns), (
                s.series_description
            )
            if expected.ndim == 2:
                expected = pydicom.pixels.apply_modality_lut(expected, source)
            diff = np.abs(pixels.astype(np.float64) - expected.astype(np.float64))
            if image.instance_uid in corpus.lossless:
                assert diff.max() == 0, s.series_description
            else:  # lossy codecs: decoders may round differently
                span = float(np.ptp(expected)) or 1.0
                assert diff.mean() / span < 0.01, s.series_description


def test_pacs033_render_png_and_jpeg(pacs, corpus):
    series = next(
        s for s in corpus.demo.series if s.modality == "CT" and s.image_count > 20
    )
    image = pacs.list_images(corpus.demo.study_uid, series.series_uid)[5]
    png = Image.open(
        io.BytesIO(pacs.render_frame(image.instance_id, center=40, width=400))
    )
    meta = pacs.get_instance_meta(image.instance_id)
    assert (
        png.format == "PNG"
        and png.size == (meta.columns, meta.rows)
        and png.mode == "L"
    )
    grey = np.asarray(png)
    assert grey.min() == 0 and grey.max() == 255
    lung = np.asarray(
        Image.open(
            io.BytesIO(pacs.render_frame(image.instance_id, center=-600, width=1500))
        )
    )
    assert not np.array_equal(lung, grey)  # the window changes the picture
    thumb = Image.open(
        io.BytesIO(pacs.render_frame(image.instance_id, size=128, fmt="jpeg"))
    )
    assert thumb.format == "JPEG" and max(thumb.size) == 128


def test_pacs034_missing_things_are_not_found(pacs, corpus):
    series = corpus.demo.series[1]
    image = pacs.list_images(corpus.demo.study_uid, series.series_uid)[0]
    with pytest.raises(NotFound):
        pacs.get_frame(image.instance_id, 5)  # a single-frame instance
    for bad in ("ffffffff-ffffffff-ffffffff-ffffffff-ffffffff", "../system", "1.2.3"):
        with pytest.raises(NotFound):
            pacs.get_instance_file(bad)
        with pytest.raises(NotFound):
            pacs.get_frame(bad)


def test_pacs035_broken_files_give_a_typed_error(pacs, corpus):
    series = pacs.list_series(corpus.broken_study_uid)
    assert len(series) == len(corpus.broken_files)
    for s in series:
        (image,) = pacs.list_images(corpus.broken_study_uid, s.series_uid)[:1]
        with pytest.raises(DecodeError) as info:
            pacs.get_frame(image.instance_id, image.frame_index)
        assert image.instance_id in str(info.value) or any(
            p.name in str(info.value) for p in corpus.broken_files.values()
        )


# -- both backends agree ---------------------------------------------------------


def test_pacs040_backends_give_the_same_ids_order_and_pixels(
    orthanc_pacs, embedded_pacs
):
    studies = orthanc_pacs.find_studies()
    assert studies == embedded_pacs.find_studies()
    for study in studies:
        series = orthanc_pacs.list_series(study.study_uid)
        assert series == embedded_pacs.list_series(study.study_uid)
        for s in series:
            images = orthanc_pacs.list_images(study.study_uid, s.series_uid)
            assert images == embedded_pacs.list_images(study.study_uid, s.series_uid)
            first = images[0]
            assert orthanc_pacs.get_instance_meta(first.instance_id) == (
                embedded_pacs.get_instance_meta(first.instance_id)
            )
            if study.patient_id != "BROKEN" and s.modality == "CT":
                assert np.array_equal(
                    orthanc_pacs.get_frame(first.instance_id),
                    embedded_pacs.get_frame(first.instance_id),
                )
