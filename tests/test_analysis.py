"""services/analysis.py: statistics, histogram and regions of interest on
numpy arrays, and whole series read from a real PACS (the embedded store and
a real Orthanc over the same files)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from services import analysis
from services.analysis import AnalysisError, Box, box_from_corners
from services.models import NotFound
from tests.corpus import SHARED_DATA


def test_ana001_stats_match_numpy_in_float64():
    rng = np.random.default_rng(1)
    values = rng.normal(40, 300, (7, 33, 29)).astype(np.float32)
    s = analysis.stats(values)
    exact = values.astype(np.float64)
    assert s.count == values.size
    assert s.mean == pytest.approx(exact.mean(), rel=1e-12)
    assert s.std == pytest.approx(exact.std(), rel=1e-12)
    assert (s.min, s.max) == (float(values.min()), float(values.max()))
    # float32 accumulation would drift on big constant-offset data; float64 does not
    big = np.full((4000, 1000), 3000.5, np.float32)
    assert analysis.stats(big).mean == 3000.5 and analysis.stats(big).std == 0.0
    with pytest.raises(AnalysisError, match="no pixels"):
        analysis.stats(np.array([]))
    with pytest.raises(AnalysisError, match="not finite"):
        analysis.stats(np.array([1.0, np.nan]))


def test_ana002_slice_and_volume_stats():
    volume = np.stack([np.full((4, 5), v, np.float32) for v in (-1000, 0, 50)])
    volume[2, 0, 0] = 1000
    per_slice = analysis.slice_stats(volume)
    assert [s.mean for s in per_slice] == [
        -1000,
        0,
        pytest.approx((19 * 50 + 1000) / 20),
    ]
    assert per_slice[2].max == 1000 and per_slice[2].min == 50
    whole = analysis.volume_stats(volume)
    assert whole.count == 60 and whole.min == -1000 and whole.max == 1000
    assert whole.std == pytest.approx(volume.astype(np.float64).std())
    with pytest.raises(AnalysisError, match="slices, rows, columns"):
        analysis.volume_stats(volume[0])


def test_ana003_histogram_is_numpys():
    rng = np.random.default_rng(2)
    values = rng.integers(-1024, 3000, (3, 64, 64)).astype(np.float32)
    h = analysis.histogram(values, bins=128)
    counts, edges = np.histogram(values.ravel(), bins=128)
    assert np.array_equal(h.counts, counts) and np.allclose(h.edges, edges)
    assert h.counts.sum() == values.size
    assert h.width == pytest.approx(edges[1] - edges[0])
    assert np.allclose(h.centers, (edges[:-1] + edges[1:]) / 2)
    fixed = analysis.histogram(values, bins=4, value_range=(0, 100))
    assert fixed.edges[0] == 0 and fixed.edges[-1] == 100
    with pytest.raises(AnalysisError, match="bins"):
        analysis.histogram(values, bins=0)


def test_ana004_box_and_roi():
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)  # rows 20, cols 30
    box = Box(x=3, y=5, width=4, height=2)
    s = analysis.roi_stats(image, box)
    expected = image[5:7, 3:7].astype(np.float64)
    assert s.count == 8 and s.mean == expected.mean() and s.std == expected.std()
    assert (s.min, s.max) == (5 * 30 + 3, 6 * 30 + 6)
    # the last column and row are inside; one more is past the edge
    assert analysis.roi_stats(image, Box(29, 19, 1, 1)).mean == image[19, 29]
    with pytest.raises(AnalysisError, match="reaches past the 30 x 20 image"):
        analysis.roi_stats(image, Box(27, 0, 4, 1))
    with pytest.raises(AnalysisError, match="grey"):
        analysis.roi_stats(np.zeros((4, 4, 3), np.uint8), Box(0, 0, 1, 1))
    for bad in [(-1, 0, 1, 1), (0, 0, 0, 1), (0, 0, 1, -2)]:
        with pytest.raises(AnalysisError):
            Box(*bad)
    with pytest.raises(AnalysisError, match="whole number"):
        Box(1.5, 0, 1, 1)  # type: ignore[arg-type]


def test_ana005_box_from_a_drawn_rectangle():
    assert analysis.centre_box(512, 512) == Box(192, 192, 128, 128)
    assert analysis.centre_box(3, 2) == Box(0, 1, 1, 1)
    shape = (20, 30)
    # pixel centres on integers: 2.6..6.2 covers columns 3..6, any corner order
    assert box_from_corners(6.2, 7.4, 2.6, 4.5, shape) == Box(3, 5, 4, 3)
    assert box_from_corners(3, 5, 3, 5, shape) == Box(3, 5, 1, 1)
    # clipped to the image
    assert box_from_corners(-10, -10, 100, 100, shape) == Box(0, 0, 30, 20)
    with pytest.raises(AnalysisError, match="no pixel"):
        box_from_corners(3.1, 5, 3.9, 6, shape)  # between two centres
    with pytest.raises(AnalysisError, match="no pixel"):
        box_from_corners(40, 0, 50, 5, shape)
    with pytest.raises(AnalysisError, match="finite"):
        box_from_corners(float("nan"), 0, 5, 5, shape)


def test_ana006_load_volume_reads_the_series_in_display_order(pacs, corpus):
    series = corpus.demo.series[1]  # CT thorax 5 mm, 40 x 512 x 512, 5 mm apart
    vol = analysis.load_volume(pacs, corpus.demo.study_uid, series.series_uid)
    assert vol.pixels.shape == (40, 512, 512) and vol.pixels.dtype == np.float32
    assert vol.modality == "CT" and vol.unit == "HU"
    assert vol.spacing[0] == pytest.approx(5.0)
    assert vol.spacing[1:] == pytest.approx((0.7, 0.7))
    for i in (0, 17, 39):  # the files, decoded here with pydicom alone
        ds = pydicom.dcmread(series.files[i])
        assert np.array_equal(vol.pixels[i], apply_modality_lut(ds.pixel_array, ds))
    assert [im.image_number for im in vol.images] == list(range(1, 41))


def test_ana007_load_volume_real_ct_and_mr(pacs):
    for folder, count, modality in [
        ("ge-head-ct", 28, "CT"),
        ("ge-mprage-mr", 130, "MR"),
    ]:
        files = sorted((SHARED_DATA / folder).glob("*"))
        headers = [
            pydicom.dcmread(f, stop_before_pixels=True)
            for f in files
            if f.name != "LICENSE"
        ]
        study, series = headers[0].StudyInstanceUID, headers[0].SeriesInstanceUID
        vol = analysis.load_volume(pacs, study, series)
        assert vol.pixels.shape == (count, headers[0].Rows, headers[0].Columns)
        assert vol.modality == modality
        # values after the modality LUT, whichever file came first
        ds = next(
            pydicom.dcmread(f)
            for f in files
            if f.name != "LICENSE"
            and pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
            == vol.images[0].instance_uid
        )
        assert np.array_equal(vol.pixels[0], apply_modality_lut(ds.pixel_array, ds))
        assert vol.spacing[0] and vol.spacing[0] > 0


def test_ana008_load_volume_refuses_what_it_cannot_analyse(embedded_pacs, corpus):
    study = corpus.demo
    with pytest.raises(NotFound):
        analysis.load_volume(embedded_pacs, study.study_uid, "1.2.3.4")
    with pytest.raises(AnalysisError, match="more than the 1,000"):
        analysis.load_volume(
            embedded_pacs, study.study_uid, study.series[1].series_uid, max_voxels=1000
        )
    rgb = next(
        s
        for s in embedded_pacs.list_series(corpus.codecs_study_uid)
        if s.series_description == "RGB uncompressed"
    )
    with pytest.raises(AnalysisError, match="colour"):
        analysis.load_volume(embedded_pacs, corpus.codecs_study_uid, rgb.series_uid)


def test_ana009_image_window_tags_else_range(embedded_pacs, corpus):
    ct = corpus.demo.series[1]
    images = embedded_pacs.list_images(corpus.demo.study_uid, ct.series_uid)
    meta = embedded_pacs.get_instance_meta(images[0].instance_id)
    pixels = embedded_pacs.get_frame(images[0].instance_id)
    assert analysis.image_window(meta, pixels) == (40.0, 400.0)  # the thorax tags
    # CT_small.dcm (pydicom's test file) has no window tags: its value range
    untagged = next(
        s
        for s in embedded_pacs.list_series(corpus.codecs_study_uid)
        if s.series_description == "explicit VR little endian CT"
    )
    images = embedded_pacs.list_images(corpus.codecs_study_uid, untagged.series_uid)
    meta = embedded_pacs.get_instance_meta(images[0].instance_id)
    assert meta.window_center is None
    pixels = embedded_pacs.get_frame(images[0].instance_id)
    lo, hi = float(pixels.min()), float(pixels.max())
    assert analysis.image_window(meta, pixels) == ((lo + hi) / 2, hi - lo)
