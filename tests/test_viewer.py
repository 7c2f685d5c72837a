"""The series viewer in real Chromium on a real Orthanc: every control and
shortcut of issue #5, with their edges.

What the viewer holds is read through ``dash_clientside.viewer.state()``;
what the user sees through the counter, inputs, overlay text and the canvas'
own pixels. Every wait is for a state, never for a time.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pydicom
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import sign_in
from tests.corpus import SHARED_DATA

STATE = "return window.dash_clientside.viewer.state()"

# The page's frame requests ("page": its main thread's; "all": its image
# worker's too, assets/imagequeue.js), oldest first: [url, start, end]. A
# batch of frames (api/pacs.py bulk_frames: a jump's image and neighbours)
# is one request.
FRAME_REQUESTS = r"""
const all = arguments[0] === 'page'
  ? performance.getEntriesByType('resource') : window.imageQueue.entries();
return all.filter(e => /\/frames\/\d+$|\/images\/frames\?/.test(e.name))
  .sort((a, b) => a.startTime - b.startTime)
  .map(e => { const u = new URL(e.name); return [u.pathname + u.search, e.startTime, e.responseEnd]; });
"""


def frame_requests(dash_br, where: str = "all") -> list:
    return dash_br.driver.execute_script(FRAME_REQUESTS, where)


def images_asked(requests: list, paths: list | None = None) -> list:
    """``requests`` image by image: ``(path, start, end)``, a batch's images
    ``paths[start:start + count]`` (``paths``: the series' frame paths in
    order; without them, None each) with the batch's times."""
    out = []
    for url, start, end in requests:
        if "?" not in url:
            out.append((url, start, end))
            continue
        query = parse_qs(urlsplit(url).query)
        lo, count = int(query["start"][0]), int(query["count"][0])
        batch = paths[lo : lo + count] if paths else [None] * count
        out += [(path, start, end) for path in batch]
    return out


def state(dash_br) -> dict:
    return dash_br.driver.execute_script(STATE)


def until(dash_br, js_condition: str, timeout: float = 15, what: str = ""):
    """Wait until ``js_condition`` (JavaScript over ``s``, the viewer's state) holds."""
    script = f"const s = window.dash_clientside.viewer.state(); return !!(s && ({js_condition}));"
    try:
        WebDriverWait(dash_br.driver, timeout, poll_frequency=0.02).until(
            lambda d: d.execute_script(script)
        )
    except Exception as exc:
        raise AssertionError(
            f"timed out waiting for {what or js_condition}; state {state(dash_br)}"
        ) from exc


def frames(dash_br, count: int = 3) -> None:
    """Let the page run ``count`` animation frames (a state, not a time)."""
    dash_br.driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; let n = arguments[0];"
        "(function tick() { if (n-- <= 0) return done(); requestAnimationFrame(tick); })();",
        count,
    )


def centre_pixel(dash_br) -> list[int]:
    return dash_br.driver.execute_script(
        "const c = document.getElementById('viewer-canvas');"
        "return Array.from(c.getContext('2d').getImageData("
        "Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data);"
    )


def wheel(dash_br, delta_y: float, ctrl: bool = False) -> None:
    """A real wheel event from Chromium's input pipeline, over the viewport."""
    rect = dash_br.driver.execute_script(
        "return document.getElementById('viewer-viewport').getBoundingClientRect().toJSON()"
    )
    dash_br.driver.execute_cdp_cmd(
        "Input.dispatchMouseEvent",
        {
            "type": "mouseWheel",
            "x": rect["x"] + rect["width"] / 2,
            "y": rect["y"] + rect["height"] / 2,
            "deltaX": 0,
            "deltaY": delta_y,
            "modifiers": 2 if ctrl else 0,
        },
    )


def ranges(dash_br) -> list[float]:
    """The figure's x range start and y range top (pan moves them)."""
    return dash_br.driver.execute_script(
        "const fl = document.querySelector('#viewer-graph .js-plotly-plot')._fullLayout;"
        "return [fl.xaxis.range[0], fl.yaxis.range[1]];"
    )


def mouse(dash_br, kind: str, x: float, y: float, button: str = "right") -> None:
    dash_br.driver.execute_cdp_cmd(
        "Input.dispatchMouseEvent",
        {"type": kind, "x": x, "y": y, "button": button, "clickCount": 1},
    )


def keys(dash_br, *sequence) -> None:
    dash_br.find_element("#viewer-viewport").send_keys(*sequence)


def open_series(dash_br, live_app, study_uid, series_uid, query=""):
    sign_in(dash_br, live_app, f"/viewer/{study_uid}/{series_uid}{query}")
    until(dash_br, "s.shown === s.n", what="the first image drawn")


@pytest.fixture
def thorax(corpus):
    """CT thorax 5 mm: 40 images of 512 x 512."""
    return corpus.demo, corpus.demo.series[1]


def test_view001_keys_move_and_stop_at_the_edges(
    dash_br, live_app, dash_app, thorax, orthanc_pacs
):
    study, series = thorax
    n = series.image_count
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    dash_br.wait_for_text_to_equal("#image-counter", f"1 / {n}")
    assert centre_pixel(dash_br)[3] == 255  # an image is drawn
    # the loader now loads this series first
    focus = dash_app.server.extensions["state"].get("focus")
    assert focus[:3] == (study.study_uid, series.series_uid, 0)

    for key, expected in [
        (Keys.ARROW_DOWN, 2),
        (Keys.ARROW_RIGHT, 3),
        (Keys.ARROW_LEFT, 2),
        (Keys.ARROW_UP, 1),
        (Keys.ARROW_UP, 1),  # stays at the first
        (Keys.PAGE_UP, 1),  # Page Up at the start
        (Keys.PAGE_DOWN, 11),
        (Keys.PAGE_UP, 1),
        (Keys.END, n),
        (Keys.ARROW_DOWN, n),  # stays at the last
        (Keys.PAGE_DOWN, n),
        (Keys.PAGE_UP, n - 10),
        (Keys.HOME, 1),
    ]:
        keys(dash_br, key)
        dash_br.wait_for_text_to_equal("#image-counter", f"{expected} / {n}")
        until(dash_br, f"s.shown === {expected}", what=f"image {expected} drawn")
    keys(dash_br, Keys.ARROW_DOWN * 15)  # fast typing loses no step
    dash_br.wait_for_text_to_equal("#image-counter", f"16 / {n}")
    # the slider follows once the keys pause, and moving on re-centres the
    # server's loader
    WebDriverWait(dash_br.driver, 5).until(
        lambda _d: (
            dash_br.find_element("#viewer-slider [role=slider]").get_attribute(
                "aria-valuenow"
            )
            == "16"
        )
    )
    state_cache = dash_app.server.extensions["state"]
    WebDriverWait(dash_br.driver, 10).until(
        lambda _d: state_cache.get("focus")[2] == 15,
        message=f"{state_cache.get('focus')} {state(dash_br)}",
    )
    assert dash_br.get_logs() == []


def test_view002_wheel_steps_with_the_sensitivity_remembered(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    wheel(dash_br, 100)
    until(dash_br, "s.n === 2 && s.shown === 2", what="one notch, one image")
    wheel(dash_br, -100)
    until(dash_br, "s.n === 1")
    wheel(dash_br, -100)  # nothing before the first
    frames(dash_br)
    assert state(dash_br)["n"] == 1
    # sensitivity 2x with the slider's own keys: one notch, two images
    thumb = dash_br.find_element("#scroll-sensitivity [role=slider]")
    thumb.click()
    for _ in range(4):  # 1 -> 2 in steps of 0.25
        thumb.send_keys(Keys.ARROW_RIGHT)
    until(dash_br, "s.sensitivity === 2", what="sensitivity 2")
    assert state(dash_br)["n"] == 1  # arrows on the slider did not move images
    wheel(dash_br, 100)
    until(dash_br, "s.n === 3", what="two images per notch")
    # half a notch at 2x is one image; small trackpad deltas add up
    for _ in range(5):
        wheel(dash_br, 10)
    until(dash_br, "s.n === 4", what="five small deltas, one image")
    # remembered in this browser for this user
    dash_br.driver.refresh()
    until(dash_br, "s.sensitivity === 2 && s.shown === s.n", what="reopened")
    assert (
        dash_br.find_element("#scroll-sensitivity [role=slider]").get_attribute(
            "aria-valuenow"
        )
        == "2"
    )


def test_view003_goto_and_its_edges(dash_br, live_app, thorax):
    study, series = thorax
    n = series.image_count
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    box = dash_br.find_element("#image-goto")
    box.send_keys("30", Keys.ENTER)
    dash_br.wait_for_text_to_equal("#image-counter", f"30 / {n}")
    until(dash_br, "s.shown === 30")
    assert dash_br.find_element("#goto-feedback").text == ""
    for bad in (str(n + 1), "0", "-3"):
        box.clear()
        box.send_keys(bad, Keys.ENTER)
        dash_br.wait_for_text_to_equal("#goto-feedback", f"No image {bad}: 1–{n}")
        assert "is-invalid" in box.get_attribute("class")
        assert state(dash_br)["n"] == 30  # nothing lost
    box.clear()
    box.send_keys("12", Keys.ENTER)  # valid after refused: the message goes
    dash_br.wait_for_text_to_equal("#image-counter", f"12 / {n}")
    dash_br.wait_for_text_to_equal("#goto-feedback", "")
    assert "is-invalid" not in box.get_attribute("class")
    box.send_keys(str(n + 1), Keys.ENTER)
    dash_br.wait_for_text_to_equal("#goto-feedback", f"No image {n + 1}: 1–{n}")
    box.clear()
    box.send_keys(Keys.ENTER)  # empty: nothing happens, the message goes
    dash_br.wait_for_text_to_equal("#goto-feedback", "")
    assert state(dash_br)["n"] == 12
    # keys typed in the box never move the viewer
    box.send_keys("5", Keys.ARROW_LEFT, Keys.PAGE_DOWN, Keys.END)
    assert state(dash_br)["n"] == 12
    box.send_keys(Keys.ENTER)
    dash_br.wait_for_text_to_equal("#image-counter", f"5 / {n}")
    # focus is back on the viewer: keys move it again
    dash_br.driver.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    dash_br.wait_for_text_to_equal("#image-counter", f"6 / {n}")


def test_view004_cine_play_pause_stop_and_loop(dash_br, live_app, thorax):
    study, series = thorax
    n = series.image_count
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    assert state(dash_br)["fps"] == 24  # no frame time in the files: 24
    dash_br.find_element("#cine-play").click()
    until(dash_br, "s.playing && s.n >= 5", what="cine running")
    dash_br.find_element("#cine-pause").click()
    until(dash_br, "!s.playing")
    paused_at = state(dash_br)["n"]
    frames(dash_br, 10)
    assert state(dash_br)["n"] == paused_at
    # never a blank frame: what is drawn is always the image counted
    assert state(dash_br)["shown"] == paused_at
    keys(dash_br, " ")  # space plays
    until(dash_br, f"s.playing && s.n > {paused_at}")
    dash_br.find_element("#cine-stop").click()
    until(dash_br, "!s.playing && s.n === 1", what="stop back to the first")
    # faster, looping over the end
    fps = dash_br.find_element("#cine-fps")
    fps.clear()
    fps.send_keys("60", Keys.ENTER)
    until(dash_br, "s.fps === 60")
    dash_br.find_element("#image-goto").send_keys(str(n - 2), Keys.ENTER)
    until(dash_br, f"s.n === {n - 2}")
    dash_br.find_element("#cine-play").click()
    until(dash_br, "s.playing && s.n < 10", what="looped to the start")
    keys(dash_br, " ")
    until(dash_br, "!s.playing")
    # without loop, cine stops at the last image
    dash_br.find_element("#cine-loop").click()
    dash_br.find_element("#image-goto").send_keys(str(n - 2), Keys.ENTER)
    until(dash_br, f"s.n === {n - 2}")
    dash_br.find_element("#cine-play").click()
    until(dash_br, f"!s.playing && s.n === {n}", what="stopped at the end")


def test_view005_window_presets_inputs_and_right_drag(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    center, width = "#wl-center", "#wl-width"

    def shown_window():
        return [
            float(dash_br.find_element(center).get_attribute("value")),
            float(dash_br.find_element(width).get_attribute("value")),
        ]

    default = state(dash_br)["window"]
    assert shown_window() == default  # the image's own window
    before = centre_pixel(dash_br)
    keys(dash_br, "2")  # lung
    until(dash_br, "s.window[0] === -600 && s.window[1] === 1500")
    WebDriverWait(dash_br.driver, 10).until(lambda _d: shown_window() == [-600, 1500])
    assert dash_br.find_element("#wl-preset").get_attribute("value") == "lung"
    assert centre_pixel(dash_br) != before  # redrawn with the new window
    dash_br.find_element("#wl-preset option[value='bone']").click()
    until(dash_br, "s.window[0] === 480 && s.window[1] === 2500")
    for key, window in [("1", [40, 400]), ("3", [90, 150]), ("5", [40, 80])]:
        keys(dash_br, key)
        until(dash_br, f"s.window[0] === {window[0]} && s.window[1] === {window[1]}")
    keys(dash_br, "0")
    until(dash_br, f"s.window[0] === {default[0]} && s.window[1] === {default[1]}")
    # typed values
    box = dash_br.find_element(center)
    box.clear()
    box.send_keys("100", Keys.ENTER)
    until(dash_br, f"s.window[0] === 100 && s.window[1] === {default[1]}")
    assert dash_br.find_element("#wl-preset").get_attribute("value") == "custom"
    # digits typed into an input are not presets
    assert state(dash_br)["window"][0] == 100
    box = dash_br.find_element(width)
    box.clear()
    box.send_keys("-5", Keys.ENTER)  # not a width: ignored, nothing lost
    frames(dash_br)
    assert state(dash_br)["window"] == [100, default[1]]
    # right-drag: right widens, down raises the centre
    rect = dash_br.driver.execute_script(
        "return document.getElementById('viewer-viewport').getBoundingClientRect().toJSON()"
    )
    x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
    mouse(dash_br, "mousePressed", x, y)
    mouse(dash_br, "mouseMoved", x + 100, y + 50)
    mouse(dash_br, "mouseReleased", x + 100, y + 50)
    until(dash_br, f"s.window[1] > {default[1]} && s.window[0] > 100", what="dragged")
    dragged = [round(v, 1) for v in state(dash_br)["window"]]
    WebDriverWait(dash_br.driver, 10).until(lambda _d: shown_window() == dragged)
    # r resets the window
    keys(dash_br, "r")
    until(dash_br, f"s.window[0] === {default[0]} && s.window[1] === {default[1]}")


def test_view006_zoom_pan_reset_and_value_under_the_cursor(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    fit = state(dash_br)["zoom"]
    assert 0.3 < fit < 3
    dash_br.find_element("#zoom-in").click()
    until(dash_br, f"Math.abs(s.zoom - {fit * 1.25}) < 1e-6", what="zoom in")
    dash_br.find_element("#zoom-out").click()
    until(dash_br, f"Math.abs(s.zoom - {fit}) < 1e-6", what="zoom out")
    dash_br.find_element("#zoom-1to1").click()
    until(dash_br, "Math.abs(s.zoom - 1) < 1e-6", what="1:1")
    keys(dash_br, "+")
    until(dash_br, "Math.abs(s.zoom - 1.25) < 1e-6")
    dash_br.find_element("#zoom-fit").click()
    until(dash_br, f"Math.abs(s.zoom - {fit}) < 1e-6", what="fit")
    # ctrl+wheel zooms around the pointer
    wheel(dash_br, -200, ctrl=True)
    until(dash_br, f"s.zoom > {fit * 1.2}", what="ctrl+wheel zoom")
    assert state(dash_br)["n"] == 1  # and did not scroll
    # drag pans: the image moves with the mouse
    x0, y0 = ranges(dash_br)
    ActionChains(dash_br.driver).drag_and_drop_by_offset(
        dash_br.find_element("#viewer-viewport"), 80, 40
    ).perform()
    WebDriverWait(dash_br.driver, 10).until(lambda _d: ranges(dash_br)[0] < x0 - 10)
    x1, y1 = ranges(dash_br)
    assert y1 < y0  # dragged down: the view moved up the image
    # the value under the cursor, in HU
    ActionChains(dash_br.driver).move_to_element(
        dash_br.find_element("#viewer-viewport")
    ).perform()
    WebDriverWait(dash_br.driver, 10).until(
        lambda d: "HU" in d.find_element("id", "viewer-readout").text
    )
    readout = dash_br.find_element("#viewer-readout").text
    assert readout.startswith("x ") and " y " in readout
    hu = int(readout.split()[-2])
    assert -1100 <= hu <= 3000
    # reset: fit, and the default window
    keys(dash_br, "2")
    until(dash_br, "s.window[0] === -600")
    dash_br.find_element("#view-reset").click()
    until(dash_br, f"Math.abs(s.zoom - {fit}) < 1e-6 && s.window[0] !== -600")


def test_view007_info_overlay(dash_br, live_app, thorax, orthanc_pacs):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    info = dash_br.find_element("#viewer-info")
    assert not info.is_displayed()
    dash_br.find_element("#info-toggle").click()
    dash_br.wait_for_contains_text("#viewer-info", "Image 1 / 40")
    text = info.text
    meta = orthanc_pacs.get_instance_meta(
        orthanc_pacs.list_images(study.study_uid, series.series_uid)[0].instance_id
    )
    for expected in [
        "Patient DEMO, PATIENT",
        "Study date 2026-01-15",
        "Series #2 CT Thorax 5mm",
        f"Slice location {meta.slice_location:.2f} mm",
        "Thickness 5 mm",
        "Window C 40 / W 400",
        "Zoom ",
    ]:
        assert expected in text, (expected, text)
    keys(dash_br, Keys.END)
    dash_br.wait_for_contains_text("#viewer-info", "Image 40 / 40")
    keys(dash_br, "i")
    WebDriverWait(dash_br.driver, 5).until(lambda _d: not info.is_displayed())


def test_view008_preloads_neighbours_first_and_at_most_5_in_flight(
    dash_br, live_app, corpus, orthanc_pacs
):
    study = corpus.demo
    series = study.series[2]  # CT thorax 1 mm, 120 images
    paths, number = series_paths(orthanc_pacs, study, series)
    sign_in(
        dash_br, live_app, f"/viewer/{study.study_uid}/{series.series_uid}?image=60"
    )
    until(dash_br, "s.shown === 60")
    until(dash_br, "[57, 58, 59, 61, 62, 63].every(i => s.loaded.includes(i))")
    until(dash_br, f"s.loaded.length === {series.image_count}", what="all loaded")
    # the browser's own log: the image and its neighbours (one batch), then
    # +-3, before anything else ...
    requests = frame_requests(dash_br)
    asked = [p for p, _, _ in images_asked(requests, paths)]
    assert len(asked) == series.image_count
    assert [number[p] for p in asked[:3]] == [59, 60, 61] and "?" in requests[0][0]
    assert sorted(number[p] for p in asked[:7]) == list(range(57, 64))
    # ... then nearest first (ahead of behind at the same distance)
    assert [number[p] for p in asked[7:11]] == [64, 56, 65, 55]
    # ... and never more than 5 requests in flight from the page
    assert 1 <= peak_in_flight(requests) <= 5
    assert state(dash_br)["peakInFlight"] <= 5


def series_paths(pacs, study, series) -> tuple[list[str], dict[str, int]]:
    """The series' frame paths in order, and each one's image number."""
    images = pacs.list_images(study.study_uid, series.series_uid)
    paths = [
        f"/api/pacs/instances/{i.instance_id}/frames/{i.frame_index + 1}"
        for i in images
    ]
    return paths, {p: i.image_number for p, i in zip(paths, images, strict=True)}


def peak_in_flight(spans: list) -> int:
    """The most of ``spans`` (``(name, start, end)``) under way at once."""
    edges = sorted([(s[1], 1) for s in spans] + [(s[2], -1) for s in spans])
    now = peak = 0
    for _, d in edges:
        now += d
        peak = max(peak, now)
    return peak


def test_view009_url_keeps_image_and_window(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    keys(dash_br, Keys.PAGE_DOWN, Keys.ARROW_DOWN, "2")
    until(dash_br, "s.n === 12 && s.window[0] === -600")
    WebDriverWait(dash_br.driver, 5).until(
        lambda d: "image=12" in d.current_url and "wc=-600" in d.current_url
    )
    url = dash_br.driver.current_url
    assert "ww=1500" in url
    dash_br.driver.get("about:blank")
    dash_br.driver.get(url)  # a link reopens the same view
    until(dash_br, "s.shown === 12 && s.window[0] === -600 && s.window[1] === 1500")
    dash_br.wait_for_text_to_equal("#image-counter", "12 / 40")


def test_view010_mr_multiframe_and_a_real_ct_series(dash_br, live_app, corpus):
    study = corpus.demo
    multiframe = study.series[6]  # MR, one instance of 16 frames
    open_series(dash_br, live_app, study.study_uid, multiframe.series_uid)
    options = [
        o.get_attribute("value") for o in dash_br.find_elements("#wl-preset option")
    ]
    assert "lung" not in options and {"default", "auto"} <= set(options), options
    keys(dash_br, Keys.END)
    until(dash_br, "s.shown === 16")
    dash_br.find_element("#wl-preset option[value='auto']").click()
    until(dash_br, "s.window[1] > 1")
    keys(dash_br, "2")  # no lung preset on MR: nothing changes
    frames(dash_br)
    assert dash_br.find_element("#wl-preset").get_attribute("value") == "auto"
    # the real GE head CT from ../shared/data
    header = pydicom.dcmread(
        sorted((SHARED_DATA / "ge-head-ct").glob("*.dcm"))[0], stop_before_pixels=True
    )
    dash_br.driver.get(
        f"{live_app}/viewer/{header.StudyInstanceUID}/{header.SeriesInstanceUID}"
    )
    until(dash_br, "s.shown === 1 && s.total === 28")
    keys(dash_br, Keys.END)
    until(dash_br, "s.shown === 28")
    assert centre_pixel(dash_br)[3] == 255


def test_view011_unknown_series_says_so(dash_br, live_app, corpus):
    sign_in(dash_br, live_app, f"/viewer/{corpus.demo.study_uid}/1.2.3.4.5")
    dash_br.wait_for_text_to_equal(
        "#viewer-error", "No such series in the PACS.", timeout=10
    )


def test_view012_touch_swipe_steps(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    rect = dash_br.driver.execute_script(
        "return document.getElementById('viewer-viewport').getBoundingClientRect().toJSON()"
    )
    x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2

    def touch(kind, at_y):
        points = [] if kind == "touchEnd" else [{"x": x, "y": at_y}]
        dash_br.driver.execute_cdp_cmd(
            "Input.dispatchTouchEvent", {"type": kind, "touchPoints": points}
        )

    before = ranges(dash_br)
    touch("touchStart", y)
    touch("touchMove", y - 60)  # 24 px per image: 2 images on
    touch("touchMove", y - 100)  # 4 in all
    touch("touchEnd", y - 100)
    until(dash_br, "s.n === 5 && s.shown === 5", what="swiped up 4 images")
    touch("touchStart", y)
    touch("touchMove", y + 50)  # back 2
    touch("touchEnd", y + 50)
    until(dash_br, "s.n === 3")
    assert ranges(dash_br) == before  # the swipe did not pan the figure


def test_view013_cine_speed_from_the_frame_time():
    from pages.viewer import DEFAULT_FPS, cine_fps
    from services.models import InstanceMeta

    def meta(frame_time_ms):
        return InstanceMeta(
            "i", "1.2", 2, 2, 1, "MONOCHROME2", "MR", None, None, 1.0, 0.0,
            None, None, None, None, None, frame_time_ms,
        )  # fmt: skip

    assert cine_fps(meta(40.0)) == 25
    assert cine_fps(meta(None)) == DEFAULT_FPS == 24
    assert cine_fps(meta(5.0)) == 60  # capped
    assert cine_fps(meta(5000.0)) == 1


def run_async(dash_br, script: str, *args):
    """Run async JavaScript: ``done(value)`` ends it."""
    return dash_br.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];" + script, *args
    )


# every IndexedDB entry's CRC-32 computed here, against the one stored with it
CHECK_STORED = """
const crc32 = (buffer) => {
  let crc = 0xffffffff;
  for (const b of new Uint8Array(buffer)) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
};
window.imageCache.idle().then(() => {
  const req = indexedDB.open('ctmr-images-v' + window.imageCache.version);
  req.onsuccess = () => {
    const tx = req.result.transaction(['images', 'entries']);
    const entries = tx.objectStore('entries').getAll();
    const images = tx.objectStore('images').getAll();
    tx.oncomplete = () => {
      const bad = entries.result.filter((e, i) => crc32(images.result[i].buffer) !== e.crc);
      done({entries: entries.result.length, images: images.result.length,
            bad: bad.length, bytes: images.result[0] && images.result[0].buffer.byteLength});
    };
  };
});
"""


def fresh_series(dash_br, live_app, study, series, worker: bool) -> None:
    """The series in a page whose browser cache is empty, with the image
    requests in the worker or on the page's main thread."""
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    run_async(
        dash_br,
        "if (arguments[0]) localStorage.removeItem('imageQueue.worker');"
        "else localStorage.setItem('imageQueue.worker', 'off');"
        "window.imageCache.clear().then(() => done(true));",
        worker,
    )
    dash_br.driver.refresh()
    until(dash_br, f"s.loaded.length === {series.image_count} && s.shown === 1")


def test_view014_frames_come_through_the_worker_and_are_stored_checked(
    dash_br, live_app, corpus
):
    study, series = corpus.demo, corpus.demo.series[4]  # MR T1, 24 images
    fresh_series(dash_br, live_app, study, series, worker=True)
    queue = dash_br.driver.execute_script("return window.imageQueue.stats()")
    assert queue["worker"] is True
    requests = frame_requests(dash_br)
    assert queue["viaWorker"] == queue["requests"] >= len(requests)
    # the page's main thread asked for no frame: the worker asked for each
    assert frame_requests(dash_br, "page") == []
    assert len(images_asked(requests)) == series.image_count
    stored = run_async(dash_br, CHECK_STORED)
    assert stored["entries"] == stored["images"] == series.image_count
    assert stored["bad"] == 0 and stored["bytes"] > 0
    # a new page takes every frame from IndexedDB, checksums verified on read
    dash_br.driver.refresh()
    until(dash_br, f"s.loaded.length === {series.image_count} && s.shown === 1")
    assert frame_requests(dash_br) == []
    stats = dash_br.driver.execute_script("return window.imageCache.stats()")
    assert stats["hits"] == series.image_count and stats["corrupt"] == 0
    assert dash_br.get_logs() == []


def test_view018_a_refused_batch_falls_back_to_single_images(
    dash_br, live_app, corpus, image_requests
):
    """The opening's batch (images 1-3) answered 502, as a proxy that refuses
    batches would: the queue tries it twice, then the viewer asks every image
    alone."""
    study, series = corpus.demo, corpus.demo.series[4]  # MR T1, 24 images
    image_requests.refuse_batches = True
    try:
        fresh_series(dash_br, live_app, study, series, worker=True)
    finally:
        image_requests.refuse_batches = False
    requests = frame_requests(dash_br)
    batches = [url for url, _, _ in requests if "?" in url]
    assert batches == [batches[0]] * 2  # the first and its one retry
    assert len(requests) == series.image_count + 2  # then each image alone
    assert dash_br.get_logs() == []


def test_view015_without_the_worker_the_page_fetches_and_stores(
    dash_br, live_app, corpus
):
    study, series = corpus.demo, corpus.demo.series[4]
    try:
        fresh_series(dash_br, live_app, study, series, worker=False)
        queue = dash_br.driver.execute_script("return window.imageQueue.stats()")
        assert queue["worker"] is False and queue["viaWorker"] == 0
        asked = images_asked(frame_requests(dash_br, "page"))
        assert len(asked) == series.image_count
        stored = run_async(dash_br, CHECK_STORED)
        assert stored["entries"] == series.image_count and stored["bad"] == 0
    finally:
        dash_br.driver.execute_script("localStorage.removeItem('imageQueue.worker')")
    assert dash_br.get_logs() == []


def test_view016_the_counter_and_slider_follow_a_fast_wheel(dash_br, live_app, thorax):
    study, series = thorax
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    until(dash_br, "[1, 2, 3, 4, 5, 6, 7, 8, 9].every(i => s.loaded.includes(i))")
    for _ in range(8):
        wheel(dash_br, 100)  # one step each, drawn in the event's own frame
    until(dash_br, "s.n === 9 && s.shown === 9")
    # Dash hears of the position after the paint, and of the last one
    dash_br.wait_for_text_to_equal("#image-counter", f"9 / {series.image_count}")
    WebDriverWait(dash_br.driver, 5).until(
        lambda d: (
            d.find_element("id", "viewer-slider")
            .find_element("css selector", "[role=slider]")
            .get_attribute("aria-valuenow")
            == "9"
        )
    )
    assert dash_br.get_logs() == []


# Dash's first render of the position (the slider's handle): the value, the
# images held then, and ms since the last Enter.
SLIDER_WATCH = r"""
window.__slider = null;
document.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') window.__enter = performance.now();
}, true);
new MutationObserver(() => {
  if (window.__slider) return;
  window.__slider = {
    value: document.querySelector('#viewer-slider [role=slider]').getAttribute('aria-valuenow'),
    loaded: window.dash_clientside.viewer.state().loaded,
    after: performance.now() - window.__enter,
  };
}).observe(document.getElementById('viewer-slider'),
           {attributes: true, subtree: true, attributeFilter: ['aria-valuenow']});
"""


def test_view017_after_a_jump_the_image_and_its_neighbours_go_first(
    dash_br, live_app, corpus, orthanc_pacs, image_requests
):
    """A jump asks for image k and k +- 1 before anything else, and the preload
    never has more than 2 requests in flight beside them (a jump finds free
    slots and a server not busy with the old place). The server hears which
    is which (Priority u=0 for the jump, u=5 for the preload: api/turns.py)."""
    study = corpus.demo
    series = study.series[2]  # CT thorax 1 mm, 120 images
    paths, number = series_paths(orthanc_pacs, study, series)
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    # nothing in the browser's cache: every image is asked of the server
    assert dash_br.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.imageCache.clear().then(() => done(true), () => done(false));"
    )
    dash_br.driver.get(f"{live_app}/viewer/{study.study_uid}/{series.series_uid}")
    until(dash_br, "s.shown === s.n", what="the first image drawn")
    dash_br.driver.execute_script(SLIDER_WATCH)
    dash_br.find_element("#image-goto").send_keys("90", Keys.ENTER)
    # the box emptied and the keys back on the viewer at once (no Dash render)
    assert dash_br.find_element("#image-goto").get_attribute("value") == ""
    until(dash_br, "document.activeElement.id === 'viewer-viewport'")
    until(dash_br, "s.shown === 90 && [89, 91].every(i => s.loaded.includes(i))")
    dash_br.wait_for_text_to_equal("#image-counter", f"90 / {series.image_count}")
    # Dash heard of the jump (the slider) once the three were held (or
    # HOLD_DASH, 300 ms, after the Enter), not before SETTLE_MS (150 ms)
    until(dash_br, "window.__slider !== null", what="the slider moved")
    seen = dash_br.driver.execute_script("return window.__slider")
    assert seen["value"] == "90" and seen["after"] >= 150, seen
    assert {89, 90, 91} <= set(seen["loaded"]) or seen["after"] >= 290, seen
    until(dash_br, "s.loaded.length >= 100", what="the preload going on")
    requests = frame_requests(dash_br)
    spans = [(number[p], a, b) for p, a, b in images_asked(requests, paths)]
    urgent = [s for s in spans if s[0] in (89, 90, 91)]
    assert sorted(s[0] for s in urgent) == [89, 90, 91]
    assert len({(a, b) for _, a, b in urgent}) == 1  # one batch
    asked, answered = min(s[1] for s in urgent), max(s[2] for s in urgent)
    # nothing else asked from the jump until the three are here
    assert not [s for s in spans if s not in urgent and asked <= s[1] < answered]
    # the preload (before and after the jump; not the opening's 1, 2 and 3,
    # nor a batch: the go-to box's "9" may have asked for 8-10 together):
    # at most 2 in flight at once
    singles = [(number[u], a, b) for u, a, b in requests if "?" not in u]
    others = [s for s in singles if s[0] not in (1, 2, 3, 89, 90, 91)]
    assert len(spans) > 10 and 1 <= peak_in_flight(others) <= 2
    batch = [url for url, _, _ in requests if url.endswith("?start=88&count=3")]
    assert len(batch) == 1 and image_requests.priority[batch[0]] == "u=0"
    # (the six nearest image 1 are its neighbours: u=1)
    far = [u for u, _, _ in requests if "?" not in u and 7 < number[u] < 87]
    assert far and {image_requests.priority[url] for url in far} == {"u=5"}
    assert dash_br.get_logs() == []


def test_view019_the_goto_box_asks_for_the_typed_image_before_the_enter(
    dash_br, live_app, corpus, orthanc_pacs, image_requests
):
    """While a number is typed in the go-to box, the image it names and its
    neighbours are asked for (one batch, Priority u=0) and held, the viewer
    staying where it is; the Enter shows it without asking again. A number
    changed or deleted before the Enter is no longer wanted: its images go
    (beyond the memory budget's reach) and the new number's come."""
    study = corpus.demo
    series = study.series[2]  # CT thorax 1 mm, 120 images
    paths, number = series_paths(orthanc_pacs, study, series)
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    held = state(dash_br)
    frame = held["bytes"] // len(held["loaded"])  # (256 x 256 here)
    dash_br.driver.execute_script(
        "window.dash_clientside.viewer.setMemoryBudget(arguments[0])", 12 * frame
    )
    until(dash_br, "s.inFlight === 0 && s.loaded.length === 12", what="12 images held")
    box = dash_br.find_element("#image-goto")
    box.send_keys("60")
    until(dash_br, "[59, 60, 61].every(i => s.loaded.includes(i))", what="59-61 held")
    assert (state(dash_br)["n"], state(dash_br)["shown"]) == (1, 1)
    assert dash_br.find_element("#image-counter").text == f"1 / {series.image_count}"

    def asked(n):
        return [
            url
            for url, _, _ in frame_requests(dash_br)
            if number.get(url) == n or url.endswith(f"?start={n - 2}&count=3")
        ]

    (batch,) = asked(60)
    assert image_requests.priority[batch] == "u=0"
    box.send_keys(Keys.ENTER)
    dash_br.wait_for_text_to_equal("#image-counter", f"60 / {series.image_count}")
    until(dash_br, "s.shown === 60")
    assert asked(60) == [batch]  # nothing asked again
    assert not asked(59) and not asked(61)
    # a number changed before the Enter: 9 (8-10 come), then 90 (8-10 go)
    box.send_keys("9")
    until(dash_br, "[8, 9, 10].every(i => s.loaded.includes(i))", what="8-10 held")
    box.send_keys("0")
    until(
        dash_br,
        "[89, 90, 91].every(i => s.loaded.includes(i))"
        " && ![8, 9, 10].some(i => s.loaded.includes(i))",
        what="89-91 held, 8-10 dropped",
    )
    # and deleted: 89-91 go, the viewer still at 60
    box.send_keys(Keys.BACKSPACE, Keys.BACKSPACE)
    until(
        dash_br, "![89, 90, 91].some(i => s.loaded.includes(i))", what="89-91 dropped"
    )
    assert state(dash_br)["n"] == 60
    assert dash_br.get_logs() == []
