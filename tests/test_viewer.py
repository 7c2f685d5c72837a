"""The first viewer in real Chromium: keys, wheel, counter, and the loader's
priority following the series on screen."""

from __future__ import annotations

from selenium.webdriver.common.keys import Keys

from tests.conftest import sign_in


def counter(dash_br) -> str:
    return dash_br.find_element("#image-counter").text


def wheel(dash_br, delta_y: int) -> None:
    dash_br.driver.execute_script(
        "document.getElementById('viewer-image').dispatchEvent(new WheelEvent('wheel',"
        " {deltaY: arguments[0], bubbles: true, cancelable: true}));",
        delta_y,
    )


def test_view001_keys_wheel_and_counter(
    dash_br, live_app, dash_app, corpus, orthanc_pacs
):
    study = corpus.demo
    series = study.series[1]  # CT thorax 5 mm
    n = series.image_count
    images = orthanc_pacs.list_images(study.study_uid, series.series_uid)
    sign_in(dash_br, live_app, f"/viewer/{study.study_uid}/{series.series_uid}")
    dash_br.wait_for_text_to_equal("#image-counter", f"1 / {n}", timeout=10)
    assert images[0].instance_id in dash_br.find_element("#viewer-image").get_attribute(
        "src"
    )
    # the loader now loads this series first
    focus = dash_app.server.extensions["state"].get("focus")
    assert focus[:3] == (study.study_uid, series.series_uid, 0)

    body = dash_br.find_element("body")
    for key, expected in [
        (Keys.ARROW_DOWN, 2),
        (Keys.ARROW_UP, 1),
        (Keys.ARROW_UP, 1),  # stays at the first
        (Keys.END, n),
        (Keys.ARROW_DOWN, n),
        (Keys.PAGE_UP, n - 10),
        (Keys.HOME, 1),
        (Keys.PAGE_UP, 1),
        (Keys.PAGE_DOWN, 11),
    ]:
        body.send_keys(key)
        dash_br.wait_for_text_to_equal("#image-counter", f"{expected} / {n}")
    wheel(dash_br, 100)
    dash_br.wait_for_text_to_equal("#image-counter", f"12 / {n}")
    wheel(dash_br, -100)
    dash_br.wait_for_text_to_equal("#image-counter", f"11 / {n}")
    assert images[10].instance_id in dash_br.find_element(
        "#viewer-image"
    ).get_attribute("src")
    # moving on re-centres the loader (sent every few images, not per step)
    state = dash_app.server.extensions["state"]
    dash_br.wait_for_text_to_equal("#image-counter", f"11 / {n}")
    import time

    deadline = time.monotonic() + 10
    while state.get("focus")[2] != 10:
        assert time.monotonic() < deadline, state.get("focus")
        time.sleep(0.05)
    # fast typing loses no step
    body.send_keys(Keys.ARROW_DOWN * 15)
    dash_br.wait_for_text_to_equal("#image-counter", f"26 / {n}")
    assert dash_br.get_logs() == []


def test_view002_unknown_series_says_so(dash_br, live_app, corpus):
    sign_in(dash_br, live_app, f"/viewer/{corpus.demo.study_uid}/1.2.3.4.5")
    dash_br.wait_for_text_to_equal(
        "#viewer-error", "No such series in the PACS.", timeout=10
    )
