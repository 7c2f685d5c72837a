"""The study page in real Chromium, on a real Orthanc behind the counting proxy:
cards, first images, progress red -> yellow -> green, Retry, the cap of 5."""

from __future__ import annotations

import threading
import time

import requests

from tests.conftest import sign_in

# Records every class change of the progress bars, so a test can read how the
# colour went (Dash re-renders the bar: observe the subtree). Installed before
# the page's own scripts, it sees the first-paint copy's bars too (data-series);
# only bars on screen count (Dash's page is hidden while that copy shows).
RECORD_COLOURS = """
window.__colours = {};
const record = () => document.querySelectorAll('.series-progress').forEach(bar => {
  if (!bar.getClientRects().length) return;
  const id = bar.dataset.series || JSON.parse(bar.id).index;
  const inner = bar.querySelector('.progress-bar');
  const colour = ['bg-danger', 'bg-warning', 'bg-success'].find(c => inner && inner.classList.contains(c));
  const seen = (window.__colours[id] = window.__colours[id] || []);
  if (colour && seen[seen.length - 1] !== colour) seen.push(colour);
});
new MutationObserver(record).observe(document, {subtree: true, attributes: true, childList: true});
"""


def all_green(driver) -> bool:
    return driver.execute_script(
        "const bars = document.querySelectorAll('.series-progress .progress-bar');"
        "return bars.length > 0 && [...bars].every(b => b.classList.contains('bg-success'));"
    )


def wait_until(check, timeout=60.0, what="state", poll=0.05):
    """Poll ``check`` until true; ``what`` may be a callable (called on timeout)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what() if callable(what) else what}"
            )
        time.sleep(poll)


def study_of(corpus, name):
    return {"demo": corpus.demo, "big": corpus.big}[name]


def test_study001_cards_first_images_and_progress_to_green(
    dash_br, live_app, app_proxy, corpus, fresh_app_state
):
    study = corpus.demo
    app_proxy.delay = 0.03  # slow enough to see the bars move
    recorder = dash_br.driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_COLOURS}
    )
    try:
        sign_in(dash_br, live_app, f"/study/{study.study_uid}")
    finally:
        dash_br.driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", recorder
        )
    dash_br.wait_for_element("#series-grid .series-card", timeout=10)
    cards = dash_br.find_elements("#series-grid .series-card")
    assert len(cards) == len(study.series)  # one card per image series
    for card, generated in zip(cards, study.series, strict=True):
        text = card.text
        assert f"{generated.image_count} image" in text
        assert f"#{generated.series_number}" in text
        assert (generated.description or "no description") in text
        assert f"/ {generated.image_count} images loaded" in text
    # every first image painted
    wait_until(
        lambda: dash_br.driver.execute_script(
            "return [...document.querySelectorAll('.thumb-img')]"
            ".every(i => i.complete && i.naturalWidth > 0);"
        ),
        what="thumbnails",
    )
    wait_until(lambda: all_green(dash_br.driver), what="every bar green")
    for card, generated in zip(
        dash_br.find_elements("#series-grid .series-card"), study.series, strict=True
    ):
        n = generated.image_count
        assert f"{n} / {n} images loaded" in card.text
    colours = dash_br.driver.execute_script("return window.__colours;")
    order = ["bg-danger", "bg-warning", "bg-success"]
    for seen in colours.values():  # never backwards, always ends green
        assert seen == sorted(seen, key=order.index) and seen[-1] == "bg-success"
    assert any(seen == order for seen in colours.values())  # red, yellow, green seen
    # the bars move and change colour smoothly (#9): both are CSS transitions
    transition = dash_br.driver.execute_script(
        "const s = getComputedStyle(document.querySelector("
        "'#series-grid .series-progress .progress-bar'));"
        "return [s.transitionProperty, s.transitionDuration];"
    )
    props = dict(zip(*(part.split(", ") for part in transition), strict=True))
    assert float(props["width"].rstrip("s")) > 0, transition
    assert float(props["background-color"].rstrip("s")) > 0, transition
    assert app_proxy.max_in_flight <= 5
    assert dash_br.get_logs() == []


def test_study002_failed_series_shows_error_and_retry_recovers(
    dash_br, live_app, app_proxy, corpus, orthanc_pacs, fresh_app_state
):
    study = corpus.demo
    target = study.series[1]
    images = orthanc_pacs.list_images(study.study_uid, target.series_uid)
    broken = f"/instances/{images[4].instance_id}/file"
    app_proxy.fail_paths[broken] = 400
    try:
        sign_in(dash_br, live_app, f"/study/{study.study_uid}")
        retry = f'#series-grid [id*="series-retry"][id*="{target.series_uid}"]'
        dash_br.wait_for_element(retry, timeout=10)
        wait_until(lambda: dash_br.find_element(retry).is_displayed(), what="Retry")
        card = dash_br.find_element(f'[id*="series-card"][id*="{target.series_uid}"]')
        assert "1 image(s) failed" in card.text
        del app_proxy.fail_paths[broken]
        dash_br.find_element(retry).click()
        wait_until(lambda: all_green(dash_br.driver), what="green after Retry")
        assert not dash_br.find_element(retry).is_displayed()
    finally:
        app_proxy.fail_paths.pop(broken, None)
    assert dash_br.get_logs() == []


def test_study003_three_studies_from_several_clients_cap_and_once(
    live_app, app_proxy, corpus, fresh_app_state
):
    """Three studies opened at once by several API clients: never more than 5
    requests in flight to Orthanc, each image fetched from Orthanc once."""
    app_proxy.delay = 0.01
    base = live_app
    from api.auth import DEMO_USER

    token = requests.post(
        f"{base}/api/token/",
        json={"username": DEMO_USER[0], "password": DEMO_USER[1]},
        timeout=10,
    ).json()["access"]
    headers = {"Authorization": f"Bearer {token}"}
    studies = [corpus.demo.study_uid, corpus.big.study_uid, corpus.codecs_study_uid]
    errors = []

    def client(study_uid):
        try:
            s = requests.Session()
            s.headers.update(headers)
            s.post(
                f"{base}/api/pacs/studies/{study_uid}/prefetch/", timeout=30
            ).raise_for_status()
            for item in s.get(
                f"{base}/api/pacs/studies/{study_uid}/series/", timeout=30
            ).json()["series"]:
                s.get(base + item["firstImageUrl"], timeout=60)
        except Exception as exc:  # asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(uid,))
        for uid in studies
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    def settled():
        out = []
        for uid in studies:
            progress = requests.get(
                f"{base}/api/pacs/studies/{uid}/progress/",
                headers=headers,
                timeout=10,
            ).json()
            out += progress["series"]
        pending[:] = [p for p in out if p["loaded"] + p["failed"] != p["total"]]
        return not pending

    pending = []
    wait_until(
        settled, 120, lambda: f"all three studies loaded; pending {pending}", 0.5
    )
    served = app_proxy.files()  # what left Orthanc (a 502 retried is not)
    assert set(served.values()) == {1}  # each instance once
    fetched = list(served)
    expected = sum(len(s.instance_uids) for s in corpus.demo.series + corpus.big.series)
    assert len(fetched) >= expected
    assert app_proxy.max_in_flight <= 5


def test_study004_html_carries_the_cards_then_makes_way_for_dash(
    dash_br, live_app, corpus, fresh_app_state
):
    """The study page's HTML itself has a plain copy of the cards (first
    images included), so the browser paints them before Dash is up; once
    Dash has drawn its cards, with the same images, the copy is gone."""
    study = corpus.demo
    sign_in(dash_br, live_app, f"/study/{study.study_uid}")  # waits for the swap
    assert dash_br.find_elements("#first-paint") == []
    dash_srcs = dash_br.driver.execute_script(
        "return [...document.querySelectorAll('#series-grid .thumb-img')]"
        ".map(i => i.getAttribute('data-src'));"
    )
    fetch_html = (
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done);"
    )
    html = dash_br.driver.execute_async_script(fetch_html, f"/study/{study.study_uid}")
    shell = html.split('<div id="first-paint">', 1)[1].split("react-entry-point")[0]
    assert len(dash_srcs) == len(study.series) == shell.count('class="thumb-img"')
    for src in dash_srcs:
        assert f'data-src="{src.replace("&", "&amp;")}"' in shell
    assert '<link rel="preload" as="script"' in shell
    for generated in study.series:
        assert f"#{generated.series_number}" in shell
    other = dash_br.driver.execute_async_script(fetch_html, "/study/1.2.3.4")
    assert "first-paint" not in other  # unknown study: the page says so itself
    assert dash_br.find_element("#series-grid .series-card").is_displayed()
    assert dash_br.get_logs() == []


# IndexedDB that never answers: the page's cache (assets/imagecache.js) waits
# for ever on its open()
HANG_INDEXEDDB = "IDBFactory.prototype.open = function () { return {}; };"


def test_study005_first_paint_images_wait_neither_for_indexeddb_nor_dash(
    dash_br, live_app, corpus, image_requests, fresh_app_state
):
    """The HTML's copy of the cards shows every first image with IndexedDB
    answering nothing and Dash's scripts never arriving: the browser asks
    for them itself (the first five from the HTML, the rest as the queue's
    slots free up), at most 5 at once, signed in by the session cookie."""
    study = corpus.demo
    sign_in(dash_br, live_app, "/")
    driver = dash_br.driver
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.execute_cdp_cmd(
        "Network.setBlockedURLs",
        {"urls": ["*/_dash-component-suites/*", "*/assets/app.js*"]},
    )
    hang = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": HANG_INDEXEDDB}
    )
    try:
        image_requests.reset()
        driver.get(f"{live_app}/study/{study.study_uid}")
        wait_until(
            lambda: driver.execute_script(
                "const t = [...document.querySelectorAll('#first-paint .thumb-img')];"
                "return t.length === arguments[0]"
                " && t.every(i => i.complete && i.naturalWidth > 0);",
                len(study.series),
            ),
            timeout=20,
            what="the first paint's images",
        )
        assert driver.execute_script("return typeof window.DashRenderer") == (
            "undefined"
        )
        assert driver.find_elements("css selector", "#_pages_content") == []
        queue = driver.execute_script("return window.imageQueue.stats()")
        assert queue["requests"] == len(study.series) and queue["peak"] <= 5
        assert image_requests.total == len(study.series)  # from the server
        assert image_requests.max_in_flight <= 5
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", hang)
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
