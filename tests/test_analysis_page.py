"""The analysis page (issue #9) in real Chromium on a real Orthanc: histogram,
statistics and region of interest checked against numpy on the PACS' own
pixels (read here straight from Orthanc), the window band, bad addresses, and
the viewer's Analysis link. Every wait is for a state, never for a time."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import sign_in
from tests.corpus import SHARED_DATA

GRAPH = "return document.querySelector('#{} .js-plotly-plot')"


def volume(pacs, study_uid: str, series_uid: str) -> np.ndarray:
    """The series as the PACS serves it, stacked by this test (float64)."""
    images = pacs.list_images(study_uid, series_uid)
    return np.stack(
        [pacs.get_frame(i.instance_id, i.frame_index) for i in images]
    ).astype(np.float64)


def table(dash_br, selector: str) -> dict[str, tuple[str, float | None]]:
    """Rows of a key/value table: header -> (text shown, exact data-value)."""
    rows = dash_br.driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tr')).map(tr =>"
        " [tr.querySelector('th').textContent, tr.querySelector('td').textContent,"
        "  tr.querySelector('td').getAttribute('data-value')]);",
        selector,
    )
    return {k: (text, float(v) if v else None) for k, text, v in rows}


def assert_stats(rows: dict, unit: str, values: np.ndarray) -> None:
    """Mean, SD, min, max shown (to 0.1) and exact, against numpy."""
    for name, expected in [
        ("Mean", values.mean()),
        ("SD", values.std()),
        ("Min", values.min()),
        ("Max", values.max()),
    ]:
        text, exact = rows[f"{name} ({unit})"]
        assert exact == pytest.approx(expected, rel=1e-9, abs=1e-9), name
        assert float(text.replace(",", "")) == pytest.approx(expected, abs=0.051), name


def graph(dash_br, id: str, expression: str):
    return dash_br.driver.execute_script(
        f"const gd = document.querySelector('#{id} .js-plotly-plot'); return {expression};"
    )


def open_analysis(dash_br, live_app, path: str, signed_in: bool | None = False):
    """Open ``path`` (signing in first unless ``signed_in``; None: the page is
    already coming) and wait for the page or its error, and its figures."""
    if signed_in:
        dash_br.driver.get(live_app + path)
    elif signed_in is False:
        sign_in(dash_br, live_app, path)
    dash_br.wait_for_element("#volume-stats, #analysis-error", timeout=60)
    if dash_br.find_elements("#volume-stats"):  # and the figures drawn
        for id in ("analysis-histogram", "analysis-image", "slice-plot"):
            dash_br.wait_for_element(f"#{id} .js-plotly-plot .main-svg")


def settled(dash_br, selector: str) -> None:
    """Wait until ``selector`` stops moving on screen (figures above it have
    taken their final size), over a few animation frames."""
    script = (
        "const done = arguments[arguments.length - 1], el = document.querySelector("
        "arguments[0]); const at = () => JSON.stringify(el.getBoundingClientRect());"
        "const a = at(); requestAnimationFrame(() => requestAnimationFrame(() =>"
        " requestAnimationFrame(() => done(a === at()))));"
    )
    WebDriverWait(dash_br.driver, 10).until(
        lambda d: d.execute_async_script(script, selector)
    )


def set_box(dash_br, x: int, y: int, w: int, h: int) -> None:
    for id, value in zip(
        ("roi-x", "roi-y", "roi-w", "roi-h"), (x, y, w, h), strict=True
    ):
        field = dash_br.find_element(f"#{id}")
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(str(value), Keys.TAB)


def wait_box(dash_br, text: str) -> None:
    WebDriverWait(dash_br.driver, 15).until(
        lambda d: d.execute_script(
            "const t = document.querySelector('#roi-stats td');"
            "return t && t.textContent === arguments[0];",
            text,
        )
    )


@pytest.fixture
def thorax(corpus):
    """CT thorax 5 mm: 40 images of 512 x 512, window tags 40/400."""
    return corpus.demo, corpus.demo.series[1]


def test_anp001_ct_histogram_stats_window_and_roi(
    dash_br, live_app, thorax, orthanc_pacs
):
    study, series = thorax
    open_analysis(
        dash_br,
        live_app,
        f"/analysis/{study.study_uid}/{series.series_uid}?image=12&wc=-600&ww=1500",
    )
    hu = volume(orthanc_pacs, study.study_uid, series.series_uid)
    assert hu.shape == (40, 512, 512)

    # the histogram: numpy's 256 bins over the volume, every voxel counted
    counts, edges = np.histogram(hu, bins=256)
    shown = graph(dash_br, "analysis-histogram", "Array.from(gd.data[0].y)")
    assert shown == counts.tolist()
    x = graph(dash_br, "analysis-histogram", "Array.from(gd.data[0].x)")
    assert x == pytest.approx(((edges[:-1] + edges[1:]) / 2).tolist())
    # the window from the URL: a band from C - W/2 to C + W/2
    band = graph(dash_br, "analysis-histogram", "gd._fullLayout.shapes[0]")
    assert (band["x0"], band["x1"]) == (-1350, 150) and band["type"] == "rect"

    # the volume
    rows = table(dash_br, "#volume-stats")
    assert rows["Images × rows × columns"][0] == "40 × 512 × 512"
    assert rows["Voxels"][1] == hu.size
    assert rows["Window (C / W)"][0] == "-600 / 1500"
    assert rows["Spacing (mm)"][0] == "5 × 0.7 × 0.7"
    assert_stats(rows, "HU", hu)

    # per image: every row of the table, and the plot
    cells = dash_br.driver.execute_script(
        "return Array.from(document.querySelectorAll('#slice-stats tbody tr')).map("
        "tr => Array.from(tr.querySelectorAll('td')).map(td =>"
        " td.getAttribute('data-value') || td.textContent));"
    )
    assert len(cells) == 40
    for i, row in enumerate(cells):
        image = hu[i]
        assert row[0] == str(i + 1)
        assert [float(v) for v in row[1:]] == pytest.approx(
            [image.mean(), image.std(), image.min(), image.max()], rel=1e-9, abs=1e-9
        )
    means = graph(dash_br, "slice-plot", "Array.from(gd.data[2].y)")
    assert means == pytest.approx(hu.mean(axis=(1, 2)).tolist(), rel=1e-9)
    assert graph(dash_br, "slice-plot", "gd._fullLayout.shapes[0].x0") == 12

    # the ROI: the default box (the middle quarter), then a typed one, on image 12
    assert (
        dash_br.find_element("#analysis-slider [role=slider]").get_attribute(
            "aria-valuenow"
        )
        == "12"
    )
    wait_box(dash_br, "192, 192, 128 × 128 px")
    assert_stats(table(dash_br, "#roi-stats"), "HU", hu[11, 192:320, 192:320])
    set_box(dash_br, 200, 220, 40, 30)
    wait_box(dash_br, "200, 220, 40 × 30 px")
    roi = table(dash_br, "#roi-stats")
    assert roi["Pixels"][1] == 1200
    assert roi["Area"][0] == f"{1200 * 0.7 * 0.7:,.1f} mm²"
    assert_stats(roi, "HU", hu[11, 220:250, 200:240])
    # the box is drawn on its pixels' edges
    shape = graph(dash_br, "analysis-image", "gd._fullLayout.shapes[0]")
    assert (shape["x0"], shape["x1"], shape["y0"], shape["y1"]) == (
        199.5,
        239.5,
        219.5,
        249.5,
    )
    assert dash_br.get_logs() == []


def real_series(folder: str):
    """(study uid, series uid, {SOPInstanceUID: file}) of a series in shared/data."""
    files = [f for f in sorted((SHARED_DATA / folder).iterdir()) if f.name != "LICENSE"]
    by_uid = {
        pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in files
    }
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return header.StudyInstanceUID, header.SeriesInstanceUID, by_uid


def test_anp002_real_mr_default_window_and_histogram(dash_br, live_app, orthanc_pacs):
    study_uid, series_uid, files = real_series("ge-mprage-mr")
    open_analysis(dash_br, live_app, f"/analysis/{study_uid}/{series_uid}?image=65")
    values = volume(orthanc_pacs, study_uid, series_uid)
    assert values.shape[0] == 130
    counts, _ = np.histogram(values, bins=256)
    assert graph(dash_br, "analysis-histogram", "Array.from(gd.data[0].y)") == (
        counts.tolist()
    )
    rows = table(dash_br, "#volume-stats")
    assert_stats(rows, "value", values)
    # no wc/ww in the URL: image 65's own window (its tags, else its range)
    image = orthanc_pacs.list_images(study_uid, series_uid)[64]
    header = pydicom.dcmread(files[image.instance_uid], stop_before_pixels=True)
    if "WindowCenter" in header and "WindowWidth" in header:
        c, w = (
            float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
            for v in (header.WindowCenter, header.WindowWidth)
        )
    else:
        lo, hi = values[64].min(), values[64].max()
        c, w = (lo + hi) / 2, hi - lo
    band = graph(dash_br, "analysis-histogram", "gd._fullLayout.shapes[0]")
    assert (band["x0"], band["x1"]) == pytest.approx((c - w / 2, c + w / 2))
    assert rows["Window (C / W)"][0] == f"{c:g} / {w:g}"
    # the ROI follows the slider: image 66's pixels in the same box
    dash_br.find_element("#analysis-slider [role=slider]").send_keys(Keys.ARROW_RIGHT)
    dash_br.wait_for_contains_text("#roi-title", "image 66 / 130")
    WebDriverWait(dash_br.driver, 15).until(
        lambda d: (
            table(dash_br, "#roi-stats")["Mean (value)"][1]
            == pytest.approx(values[65, 96:160, 96:160].mean(), rel=1e-9)
        )
    )
    assert_stats(table(dash_br, "#roi-stats"), "value", values[65, 96:160, 96:160])
    assert graph(dash_br, "slice-plot", "gd._fullLayout.shapes[0].x0") == 66
    assert "image=66" in dash_br.find_element("#analysis-to-viewer").get_attribute(
        "href"
    )
    assert dash_br.get_logs() == []


def test_anp003_a_box_drawn_on_the_image(dash_br, live_app, thorax, orthanc_pacs):
    study, series = thorax
    open_analysis(dash_br, live_app, f"/analysis/{study.study_uid}/{series.series_uid}")
    wait_box(dash_br, "192, 192, 128 × 128 px")
    dash_br.driver.execute_script(
        "document.getElementById('analysis-image').scrollIntoView({block: 'center'})"
    )
    settled(dash_br, "#analysis-image")

    def screen(x: float, y: float) -> tuple[float, float]:
        return tuple(
            graph(
                dash_br,
                "analysis-image",
                "(() => { const fl = gd._fullLayout, r = gd.getBoundingClientRect();"
                f" return [r.left + fl.xaxis._offset + fl.xaxis.d2p({x}),"
                f" r.top + fl.yaxis._offset + fl.yaxis.d2p({y})]; }})()",
            )
        )

    (x0, y0), (x1, y1) = screen(100.2, 150.3), screen(160.7, 190.6)
    mouse = lambda kind, x, y: dash_br.driver.execute_cdp_cmd(  # noqa: E731
        "Input.dispatchMouseEvent",
        {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
    )
    mouse("mouseMoved", x0, y0)
    mouse("mousePressed", x0, y0)
    for t in (0.25, 0.5, 0.75, 1.0):
        mouse("mouseMoved", x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
    mouse("mouseReleased", x1, y1)
    # the inputs take the drawn box, snapped to the pixels it covers
    WebDriverWait(dash_br.driver, 15).until(
        lambda d: (
            d.find_element("css selector", "#roi-x").get_attribute("value") != "192"
        )
    )
    box = [
        int(dash_br.find_element(f"#{id}").get_attribute("value"))
        for id in ("roi-x", "roi-y", "roi-w", "roi-h")
    ]
    # one screen pixel is about 1.4 image pixels here
    assert box == pytest.approx([101, 151, 60, 40], abs=2)
    x, y, w, h = box
    wait_box(dash_br, f"{x}, {y}, {w} × {h} px")
    pixels = orthanc_pacs.get_frame(
        *(lambda i: (i.instance_id, i.frame_index))(
            orthanc_pacs.list_images(study.study_uid, series.series_uid)[0]
        )
    ).astype(np.float64)
    assert_stats(table(dash_br, "#roi-stats"), "HU", pixels[y : y + h, x : x + w])
    # one box on the image: the drawn one, replaced by its snapped outline
    shapes = graph(dash_br, "analysis-image", "gd._fullLayout.shapes.map(s => s.x0)")
    assert shapes == [x - 0.5]
    assert dash_br.get_logs() == []


def test_anp004_bad_addresses_and_boxes_say_so(dash_br, live_app, thorax, corpus):
    study, series = thorax
    sign_in(dash_br, live_app, "/analysis/abc/def")
    dash_br.wait_for_text_to_equal("#analysis-error", "This is not a series address.")
    for path, text in [
        (f"/analysis/{study.study_uid}/1.2.3.4.5", "No such series in the PACS."),
        ("/analysis/1.2.3/4.5.6", "No such series in the PACS."),
    ]:
        dash_br.driver.get(live_app + path)
        dash_br.wait_for_text_to_equal("#analysis-error", text)
    rgb = next(uid for uid, f in corpus.codec_files.items() if f.name == "SC_rgb.dcm")
    rgb_series = pydicom.dcmread(corpus.codec_files[rgb]).SeriesInstanceUID
    dash_br.driver.get(f"{live_app}/analysis/{corpus.codecs_study_uid}/{rgb_series}")
    dash_br.wait_for_text_to_equal(
        "#analysis-error",
        "This series cannot be analysed: colour images have no intensity to analyse",
    )
    broken = next(iter(corpus.broken_files.values()))
    broken_series = pydicom.dcmread(broken, stop_before_pixels=True).SeriesInstanceUID
    dash_br.driver.get(f"{live_app}/analysis/{corpus.broken_study_uid}/{broken_series}")
    dash_br.wait_for_contains_text("#analysis-error", "This series cannot be analysed")

    # boxes that do not fit, are empty or are not numbers
    open_analysis(
        dash_br,
        live_app,
        f"/analysis/{study.study_uid}/{series.series_uid}?image=abc&wc=x&ww=-3",
        signed_in=True,
    )
    rows = table(dash_br, "#volume-stats")
    assert rows["Window (C / W)"][0] == "40 / 400"  # nonsense in the URL: the tags
    set_box(dash_br, 500, 0, 20, 10)
    dash_br.wait_for_text_to_equal(
        "#roi-error", "the box (x 500..519, y 0..9) reaches past the 512 x 512 image"
    )
    set_box(dash_br, 10, 10, 0, 10)
    dash_br.wait_for_text_to_equal(
        "#roi-error", "the box needs a width and height of at least 1"
    )
    field = dash_br.find_element("#roi-h")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE, Keys.TAB)
    dash_br.wait_for_text_to_equal(
        "#roi-error", "Enter x, y, width and height in whole pixels."
    )
    set_box(dash_br, 10, 10, 5, 5)
    wait_box(dash_br, "10, 10, 5 × 5 px")
    assert dash_br.get_logs() == []


def test_anp005_the_viewer_link_carries_image_and_window(dash_br, live_app, thorax):
    from tests.test_viewer import keys, open_series, until

    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    keys(dash_br, Keys.PAGE_DOWN, Keys.ARROW_DOWN, "2")  # image 12, lung window
    until(dash_br, "s.n === 12 && s.window[0] === -600 && s.window[1] === 1500")
    dash_br.find_element("#open-analysis").click()
    open_analysis(dash_br, live_app, "", signed_in=None)
    url = dash_br.driver.current_url
    assert url.startswith(f"{live_app}/analysis/{study.study_uid}/{series.series_uid}?")
    assert "image=12" in url and "wc=-600" in url and "ww=1500" in url
    assert (
        dash_br.find_element("#analysis-slider [role=slider]").get_attribute(
            "aria-valuenow"
        )
        == "12"
    )
    band = graph(dash_br, "analysis-histogram", "gd._fullLayout.shapes[0]")
    assert (band["x0"], band["x1"]) == (-1350, 150)
    # and back: the viewer opens on the same image and window
    dash_br.find_element("#analysis-to-viewer").click()
    until(dash_br, "s.shown === 12 && s.window[0] === -600 && s.window[1] === 1500")
    assert dash_br.get_logs() == []


def test_anp006_the_page_needs_a_signed_in_user(dash_app, thorax):
    study, series = thorax
    path = f"/analysis/{study.study_uid}/{series.series_uid}?image=3"
    answer = dash_app.server.test_client().get(path)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/login?next=")
    assert "analysis" in answer.headers["Location"]


def test_anp007_a_pacs_failure_after_opening_says_so(
    dash_br, live_app, thorax, dash_app, app_proxy, fresh_app_state, orthanc_pacs
):
    study, series = thorax
    open_analysis(dash_br, live_app, f"/analysis/{study.study_uid}/{series.series_uid}")
    wait_box(dash_br, "192, 192, 128 × 128 px")
    first = orthanc_pacs.list_images(study.study_uid, series.series_uid)[0]
    dash_app.server.extensions["pacs"].images.clear()  # the next read asks Orthanc
    path = f"/instances/{first.instance_id}/file"
    app_proxy.fail_paths[path] = 400
    try:
        set_box(dash_br, 10, 10, 5, 5)
        dash_br.wait_for_contains_text("#roi-error", "This image cannot be read")
    finally:
        del app_proxy.fail_paths[path]
    set_box(dash_br, 10, 10, 6, 5)
    wait_box(dash_br, "10, 10, 6 × 5 px")
    assert dash_br.get_logs() == []
