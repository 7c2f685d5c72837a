"""The browser's image cache (assets/imagecache.js) in real Chromium: images
survive a reload with no network, a tampered entry is refetched, expiry,
LRU eviction under a budget, and signing out empties IndexedDB."""

from __future__ import annotations

import re
import shutil
import time

import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import sign_in
from tests.test_viewer import (
    frame_requests,
    frames,
    images_asked,
    keys,
    open_series,
    state,
    until,
)

# the page's and its image worker's requests (assets/imagequeue.js)
FRAMES = (
    "return window.imageQueue.entries()"
    ".filter(e => /\\/frames\\/\\d+$/.test(e.name)).map(e => new URL(e.name).pathname)"
)


def run(dash_br, script: str, *args):
    """Run async JavaScript: ``done(value)`` ends it."""
    return dash_br.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];" + script, *args
    )


def summary(dash_br) -> dict:
    return run(dash_br, "window.imageCache.summary().then(done);")


def wait_cached(dash_br, count: int) -> None:
    """Wait until IndexedDB holds ``count`` images (puts land after the loads)."""
    WebDriverWait(dash_br.driver, 15, poll_frequency=0.05).until(
        lambda _d: summary(dash_br)["entries"] >= count
    )


def test_cache001_reload_needs_no_network_and_shows_the_hit_rate(
    dash_br, live_app, corpus
):
    study, series = corpus.demo, corpus.demo.series[1]
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    until(dash_br, f"s.loaded.length === {series.image_count}")
    assert len(images_asked(frame_requests(dash_br))) == series.image_count
    wait_cached(dash_br, series.image_count)
    dash_br.driver.refresh()  # a new page: empty memory, empty resource log
    until(dash_br, f"s.loaded.length === {series.image_count} && s.shown === 1")
    assert dash_br.driver.execute_script(FRAMES) == []  # not one image request
    dash_br.wait_for_text_to_equal("#cache-hit-rate", "cache 100 %")
    # a new session in the same browser: still no network for pixels
    dash_br.driver.get(live_app + "/")  # another page, then back
    dash_br.driver.get(f"{live_app}/viewer/{study.study_uid}/{series.series_uid}")
    until(dash_br, f"s.loaded.length === {series.image_count}")
    assert dash_br.driver.execute_script(FRAMES) == []
    # the panel says what is kept, and empties it
    dash_br.find_element("#cache-toggle").click()
    dash_br.wait_for_contains_text("#cache-summary", f"{series.image_count} images")
    mb = series.image_count * 512 * 512 * 2 / 1048576  # decoded int16 frames
    assert dash_br.find_element("#memory-summary").text == (
        f"In memory: {series.image_count} decoded images, {mb:.1f} of 128.0 MB"
    )
    dash_br.find_element("#cache-clear").click()
    dash_br.wait_for_text_to_equal("#cache-summary", "0 images, 0.0 MB kept")


def test_cache002_a_tampered_entry_is_dropped_and_refetched(dash_br, live_app, corpus):
    study, series = corpus.demo, corpus.demo.series[4]  # MR T1, 24 images
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    until(dash_br, f"s.loaded.length === {series.image_count}")
    wait_cached(dash_br, series.image_count)
    first = dash_br.driver.execute_script(FRAMES)[0]  # an image asked alone
    # flip one byte of image 1's stored pixels (its checksum stays the old one)
    run(
        dash_br,
        """
        const req = indexedDB.open('ctmr-images-v' + window.imageCache.version);
        req.onsuccess = () => {
          const tx = req.result.transaction('images', 'readwrite');
          const store = tx.objectStore('images');
          const get = store.get(arguments[0]);
          get.onsuccess = () => {
            const value = get.result;
            new Uint8Array(value.buffer)[1000] ^= 0xff;
            store.put(value, arguments[0]);
          };
          tx.oncomplete = () => done(true);
        };
        """,
        first,
    )
    dash_br.driver.refresh()
    until(dash_br, f"s.loaded.length === {series.image_count} && s.shown === 1")
    assert dash_br.driver.execute_script(FRAMES) == [first]  # that one only
    stats = dash_br.driver.execute_script("return window.imageCache.stats()")
    assert stats["corrupt"] == 1 and stats["hits"] == series.image_count - 1
    wait_cached(dash_br, series.image_count)  # stored again, good this time
    dash_br.driver.refresh()
    until(dash_br, f"s.loaded.length === {series.image_count}")
    assert dash_br.driver.execute_script(FRAMES) == []


def test_cache003_expiry_and_lru_eviction_with_a_controlled_clock(
    dash_br, live_app, corpus
):
    sign_in(dash_br, live_app, "/")
    # expiry: an entry read 25 h after it was stored is gone
    result = run(
        dash_br,
        """
        const c = window.imageCache, t0 = Date.now(), kb = n => new ArrayBuffer(n * 1024);
        c.setClock(() => t0);
        c.configure({expiryHours: 24, budgetMB: 1});
        c.clear()
          .then(() => c.put('/a', kb(400), {}))
          .then(() => { c.setClock(() => t0 + 23 * 3600e3); return c.get('/a'); })
          .then(fresh => { c.setClock(() => t0 + 25 * 3600e3);
                           return c.get('/a').then(old => [!!fresh, old]); })
          .then(([fresh, old]) => c.summary().then(s =>
                done({fresh, old, entries: s.entries, expired: c.stats().expired})));
        """,
    )
    assert result == {"fresh": True, "old": None, "entries": 0, "expired": 1}
    # LRU: A, B and C of 400 KB under a 1 MB budget; A read after B was stored
    # (so B is the least recently used) when C comes in
    keys = run(
        dash_br,
        """
        const c = window.imageCache, kb = n => new ArrayBuffer(n * 1024);
        let t = Date.now(); c.setClock(() => t);
        c.clear()
          .then(() => c.put('/A', kb(400), {}))
          .then(() => { t += 1000; return c.put('/B', kb(400), {}); })
          .then(() => { t += 1000; return c.get('/A'); })
          .then(() => { t += 1000; return c.put('/C', kb(400), {}); })
          .then(() => c.evict())
          .then(() => c.summary())
          .then(s => done(s.keys.sort()));
        """,
    )
    assert keys == ["/A", "/C"]


def test_cache004_budget_holds_while_a_series_loads(dash_br, live_app, corpus):
    study, series = corpus.demo, corpus.demo.series[1]  # 40 x 512 KB
    sign_in(dash_br, live_app, "/")
    run(dash_br, "window.imageCache.configure({budgetMB: 3}).then(() => done());")
    dash_br.driver.get(f"{live_app}/viewer/{study.study_uid}/{series.series_uid}")
    until(dash_br, f"s.loaded.length === {series.image_count}")
    kept = run(
        dash_br,
        "window.imageCache.idle().then(() => window.imageCache.summary()).then(done);",
    )
    assert 0 < kept["bytes"] <= 3 * 1024 * 1024
    assert kept["entries"] == 6  # 6 x 512 KB
    assert state(dash_br)["shown"] == 1


def test_cache005_signing_out_empties_indexeddb(dash_br, live_app, corpus):
    study, series = corpus.demo, corpus.demo.series[5]
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    wait_cached(dash_br, 3)
    name = "ctmr-images-v" + str(
        dash_br.driver.execute_script("return window.imageCache.version")
    )
    dash_br.find_element("#logout-link").click()
    dash_br.wait_for_element("#login-form", timeout=10)
    entries = run(
        dash_br,
        """
        const req = indexedDB.open(arguments[0]);
        req.onsuccess = () => {
          const db = req.result;
          if (!db.objectStoreNames.contains('entries')) return done(0);
          const count = db.transaction('entries').objectStore('entries').count();
          count.onsuccess = () => done(count.result);
        };
        """,
        name,
    )
    assert entries == 0


def test_cache006_expired_access_token_is_refreshed_else_sign_in(
    dash_br, live_app, corpus, orthanc_pacs
):
    """The viewer's requests go through window.apiFetch (assets/apifetch.js)."""
    study, series = corpus.demo, corpus.demo.series[3]
    image = orthanc_pacs.list_images(study.study_uid, series.series_uid)[-1]
    url = f"/api/pacs/instances/{image.instance_id}/frames/{image.frame_index + 1}"
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    until(dash_br, f"s.loaded.length === {series.image_count} && s.inFlight === 0")
    # the access token is gone (as if expired); the refresh cookie is still good
    before = dash_br.driver.get_cookie("access_token_cookie")["value"]
    dash_br.driver.delete_cookie("access_token_cookie")
    status = run(
        dash_br,
        "window.apiFetch(arguments[0], {cache: 'no-store'}).then(r => done(r.status));",
        url,
    )  # (the HTTP cache holds the image: ask the server)
    assert status == 200
    renewed = dash_br.driver.get_cookie("access_token_cookie")  # set by the refresh
    assert renewed and renewed["value"] != before
    # no refresh cookie either: the session is over, the login page comes
    for name in ("access_token_cookie", "refresh_token_cookie"):
        dash_br.driver.delete_cookie(name)
    dash_br.driver.execute_script(
        "window.apiFetch(arguments[0], {cache: 'no-store'});", url
    )
    dash_br.wait_for_element("#login-form", timeout=10)
    assert "next=%2Fviewer%2F" in dash_br.driver.current_url


def prefetch_done(dash_br, total: int) -> dict:
    """Wait until the study page has queued ``total`` images and settled them."""
    script = (
        "const p = window.studyPrefetch; return p && p.queued === arguments[0]"
        " && p.fetched + p.cached + p.failed === p.queued ? p : null;"
    )
    return WebDriverWait(dash_br.driver, 90, poll_frequency=0.1).until(
        lambda d: d.execute_script(script, total)
    )


def test_cache007_the_study_page_fills_the_cache_and_the_viewer_needs_no_network(
    dash_br, live_app, corpus, image_requests, fresh_app_state
):
    """The study page brings every image of every loaded series into
    IndexedDB behind its thumbnails, in batches of 16 images (one request
    each), at most 5 image requests at once (counted by the server), each
    image once; a series opened afterwards, and the study page reloaded, ask
    the server for no pixels at all."""
    study = corpus.demo
    images = sum(s.image_count for s in study.series)
    batches = sum(-(-s.image_count // 16) for s in study.series)
    image_requests.reset()
    sign_in(dash_br, live_app, f"/study/{study.study_uid}")
    figures = prefetch_done(dash_br, images)
    assert figures["failed"] == 0 and figures["full"] is False
    assert figures["fetched"] == images  # an empty cache at first: all fetched
    assert figures["batches"] == batches and figures["batchFailures"] == 0
    assert image_requests.total == len(study.series) + batches  # thumbnails too
    assert dash_br.driver.execute_script(FRAMES) == []  # not one single frame
    # the thumbnails the browser loaded itself are copied into IndexedDB
    # from its HTTP cache, with no request
    thumbs = dash_br.driver.execute_script(
        "return [...document.querySelectorAll('#series-grid .thumb-img')]"
        ".map(i => i.getAttribute('data-src'))"
    )
    assert len(thumbs) == len(study.series)
    WebDriverWait(dash_br.driver, 15, poll_frequency=0.1).until(
        lambda _d: set(thumbs) <= set(summary(dash_br)["keys"])
    )
    assert image_requests.total == len(study.series) + batches
    assert 1 <= image_requests.max_in_flight <= 5
    queue = dash_br.driver.execute_script("return window.imageQueue.stats()")
    assert queue["peak"] <= 5 and queue["failures"] == 0
    run(dash_br, "window.imageCache.idle().then(() => done());")
    # reload: thumbnails and every image from IndexedDB
    image_requests.reset()
    dash_br.driver.refresh()
    dash_br.wait_for_no_elements("#first-paint", timeout=15)
    figures = prefetch_done(dash_br, images)
    assert figures["cached"] == images and figures["fetched"] == 0
    assert image_requests.total == 0
    # the viewer: not one pixel request for a series loaded on the study page
    series = study.series[3]  # CT abdomen, 32 x 512 x 512
    dash_br.driver.get(f"{live_app}/viewer/{study.study_uid}/{series.series_uid}")
    until(dash_br, f"s.loaded.length === {series.image_count}")
    assert dash_br.driver.execute_script(FRAMES) == []
    assert image_requests.total == 0
    dash_br.wait_for_text_to_equal("#cache-hit-rate", "cache 100 %")


def test_cache014_failed_batches_fall_back_to_single_image_requests(
    dash_br, live_app, corpus, image_requests, fresh_app_state
):
    """Batches that fail (answered 502 here, as a proxy that refuses them
    would) are asked image by image: every image still reaches IndexedDB,
    through single requests, and after two failed batches the page stops
    trying batches."""
    study = corpus.demo
    images = sum(s.image_count for s in study.series)
    image_requests.refuse_batches = True
    try:
        image_requests.reset()
        sign_in(dash_br, live_app, f"/study/{study.study_uid}")
        figures = prefetch_done(dash_br, images)
    finally:
        image_requests.refuse_batches = False
    assert figures["failed"] == 0 and figures["fetched"] == images
    # none started after two failed (up to 3 at once: 2 more may be under way)
    assert figures["batches"] == 0 and 2 <= figures["batchFailures"] <= 4
    run(dash_br, "window.imageCache.idle().then(() => done());")
    stored = [k for k in summary(dash_br)["keys"] if re.search(r"/frames/\d+$", k)]
    assert len(stored) == images
    # the thumbnails and each image once, singly (no batch reached the app)
    assert image_requests.total == len(study.series) + images
    assert 1 <= image_requests.max_in_flight <= 5


def test_cache008_the_page_renews_the_access_token_before_it_expires(
    dash_br, live_app, corpus
):
    """A minute before the access token expires (the readable cookie
    access_expires says when), the page asks for a new one by itself."""
    sign_in(dash_br, live_app, f"/study/{corpus.demo.study_uid}")
    driver = dash_br.driver
    before = driver.get_cookie("access_token_cookie")["value"]
    expires = int(driver.get_cookie("access_expires")["value"])
    assert expires > time.time() + 600  # the default access token: 15 min
    # as if the token had 61 s left: renewed about a second from now
    driver.execute_script(
        "document.cookie = 'access_expires=' + (Math.floor(Date.now() / 1000) + 61)"
        " + '; path=/'; window.apiFetch.renewSoon();"
    )
    WebDriverWait(driver, 10, poll_frequency=0.05).until(
        lambda d: d.get_cookie("access_token_cookie")["value"] != before
    )
    assert int(driver.get_cookie("access_expires")["value"]) > time.time() + 600
    dash_br.find_element("#logout-link").click()
    dash_br.wait_for_element("#login-form", timeout=10)
    assert driver.get_cookie("access_expires") is None


def test_cache009_decoded_frames_stay_within_the_memory_budget(
    dash_br, live_app, corpus
):
    """The tab keeps decoded frames within its budget, nearest the image shown
    first, and the cache panel says how much it holds."""
    study, series = corpus.demo, corpus.demo.series[1]  # 40 x 512 x 512 int16
    frame = 512 * 512 * 2
    open_series(dash_br, live_app, study.study_uid, series.series_uid)
    until(dash_br, f"s.loaded.length === {series.image_count}")
    dash_br.driver.execute_script(
        "window.dash_clientside.viewer.setMemoryBudget(arguments[0])", 10 * frame
    )
    until(dash_br, "s.loaded.length === 10")
    assert sorted(state(dash_br)["loaded"]) == list(range(1, 11))
    assert state(dash_br)["bytes"] == 10 * frame
    keys(dash_br, Keys.END)  # the last image: the ten nearest it now
    until(dash_br, f"s.shown === {series.image_count} && s.inFlight === 0")
    assert sorted(state(dash_br)["loaded"]) == list(range(31, 41))
    dash_br.find_element("#cache-toggle").click()
    dash_br.wait_for_text_to_equal(
        "#memory-summary", "In memory: 10 decoded images, 5.0 of 5.0 MB"
    )


def test_cache010_after_a_browser_restart_the_study_needs_no_pixel_requests(
    live_app, corpus, image_requests, tmp_path
):
    """The issue's must-show: re-opening a study within 24 h, after the
    browser was closed and started again (same profile), shows every cached
    image with no pixel request to the server."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from api.auth import DEMO_USER
    from tests.conftest import pytest_setup_options

    study = corpus.demo
    images = sum(s.image_count for s in study.series)
    page = f"{live_app}/study/{study.study_uid}"

    def browser():
        options = pytest_setup_options()
        for flag in ("--no-sandbox", "--disable-dev-shm-usage"):  # as dash_br's
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        return webdriver.Chrome(service=service, options=options)

    def open_study(driver) -> dict:
        driver.get(page)
        if driver.find_elements("id", "login-form"):  # session cookies are gone
            driver.find_element("id", "username").send_keys(DEMO_USER[0])
            driver.find_element("id", "password").send_keys(DEMO_USER[1])
            driver.find_element("id", "login-submit").click()
        WebDriverWait(driver, 20, poll_frequency=0.1).until(
            lambda d: d.execute_script(
                "const t = [...document.querySelectorAll('#series-grid .thumb-img')];"
                "return t.length > 0 && t.every(i => i.complete && i.naturalWidth > 0);"
            )
        )
        script = (
            "const p = window.studyPrefetch; return p && p.queued === arguments[0]"
            " && p.fetched + p.cached + p.failed === p.queued ? p : null;"
        )
        figures = WebDriverWait(driver, 90, poll_frequency=0.1).until(
            lambda d: d.execute_script(script, images)
        )
        driver.execute_async_script(
            "window.imageCache.idle().then(arguments[arguments.length - 1]);"
        )
        return figures

    driver = browser()
    try:
        first = open_study(driver)
    finally:
        driver.quit()
    assert first["failed"] == 0 and first["fetched"] + first["cached"] == images
    image_requests.reset()
    driver = browser()  # a new browser process on the same profile
    try:
        again = open_study(driver)
        thumbs = len(driver.find_elements("css selector", "#series-grid .thumb-img"))
    finally:
        driver.quit()
    assert again["cached"] == images and again["fetched"] == 0
    assert thumbs == len(study.series)
    assert image_requests.total == 0  # not one thumbnail or frame from the server


def test_cache011_a_card_opens_its_cached_series_without_a_page_load(
    dash_br, live_app, corpus, image_requests
):
    """A click on a study card opens the viewer by client-side navigation
    (dcc.Link: the same document, plotly.js already loaded by the study page
    while idle), the first image comes from IndexedDB with not one pixel
    request, and the browser's Back button brings the study page back, whose
    background loading runs again (from the cache)."""
    study, series = corpus.demo, corpus.demo.series[2]
    images = sum(s.image_count for s in study.series)
    driver = dash_br.driver
    sign_in(dash_br, live_app, f"/study/{study.study_uid}")
    prefetch_done(dash_br, images)
    assert run(dash_br, "window.plotlyWarm.then(done);") is True
    assert driver.execute_script("return typeof window.Plotly") == "object"
    run(dash_br, "window.imageCache.idle().then(() => done());")
    # a mark that a page load would erase; the resource log from now on
    since = driver.execute_script(
        "window.__samePage = 1; window.studyPrefetch.old = true;"
        " return performance.now();"
    )
    image_requests.reset()
    link = dash_br.find_element(
        f"#series-grid a.thumb-link[href='/viewer/{study.study_uid}/{series.series_uid}']"
    )
    link.click()
    until(dash_br, f"s.shown === 1 && s.loaded.length === {series.image_count}")
    assert driver.execute_script("return window.__samePage") == 1
    asked = driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.startTime >= arguments[0] && /\\/frames\\/\\d+/.test(e.name))"
        ".map(e => e.name)",
        since,
    )
    assert asked == []
    assert image_requests.total == 0
    dash_br.wait_for_text_to_equal("#cache-hit-rate", "cache 100 %")
    # Back: the study page without a page load, its loading again, all cached
    driver.back()
    dash_br.wait_for_element("#series-grid", timeout=10)
    WebDriverWait(driver, 10, poll_frequency=0.05).until(
        lambda d: d.execute_script("return !window.studyPrefetch.old")
    )  # a new run of the study page's loading
    figures = prefetch_done(dash_br, images)
    assert figures["cached"] == images and figures["fetched"] == 0
    assert driver.execute_script("return window.__samePage") == 1
    assert image_requests.total == 0
    assert dash_br.get_logs() == []


def test_cache013_signing_out_empties_the_http_cache(dash_br, live_app, corpus):
    """Pixels are cached privately for a year (immutable), so signing out must
    also take them out of the browser's HTTP cache: the next user of the
    workstation gets no image without asking the server."""
    study = corpus.demo
    sign_in(dash_br, live_app, f"/study/{study.study_uid}")
    url = dash_br.driver.execute_script(
        "return document.querySelector('#series-grid img.thumb-img').dataset.src"
    )
    cached = (
        "fetch(arguments[0], {cache: 'only-if-cached', mode: 'same-origin'})"
        ".then(r => done(r.status), () => done('not cached'));"
    )
    WebDriverWait(dash_br.driver, 10, poll_frequency=0.05).until(
        lambda _d: run(dash_br, cached, url) == 200
    )
    dash_br.find_element("#logout-link").click()
    dash_br.wait_for_element("#login-form", timeout=10)
    sign_in(dash_br, live_app, "/")  # no study page: nothing asks for it again
    assert run(dash_br, cached, url) == "not cached"


# In the page: every #viewer-early-box added (and where it was put), and the
# moment it goes (the viewer has just painted): where the early image was,
# where the figure puts the image and where the viewer's canvas is, and both
# canvases' pixels (each the image at its own size, placed by CSS).
HANDOVER = """
window.__early = {added: 0, placed: [], handovers: []};
new MutationObserver((records) => records.forEach((r) => r.addedNodes.forEach((n) => {
  if (n.id !== 'viewer-early-box') return;
  window.__early.added++;
  window.__early.placed.push(n.getBoundingClientRect().toJSON());
}))).observe(document.body, {childList: true});
const remove = Element.prototype.remove;
Element.prototype.remove = function () {
  if (this.id === 'viewer-early-box') {
    const early = document.getElementById('viewer-early');
    const v = document.getElementById('viewer-canvas');
    const vp = document.getElementById('viewer-viewport').getBoundingClientRect();
    const gd = document.querySelector('#viewer-graph .js-plotly-plot');
    const fl = gd._fullLayout, size = fl._size, g = gd.getBoundingClientRect();
    const xr = fl.xaxis.range, yr = fl.yaxis.range;
    const sx = size.w / (xr[1] - xr[0]), sy = size.h / (yr[0] - yr[1]);
    const left = g.left - vp.left + size.l, top = g.top - vp.top + size.t;
    const x = left + (-0.5 - xr[0]) * sx, y = top + (-0.5 - yr[1]) * sy;
    const r = early.getBoundingClientRect(), rv = v.getBoundingClientRect();
    window.__early.handovers.push({
      early_rect: [r.left, r.top, r.width, r.height],
      figure_rect: [vp.left + x, vp.top + y, early.width * sx, early.height * sy],
      viewer_rect: [rv.left, rv.top, rv.width, rv.height],
      early_box: this.getBoundingClientRect().toJSON(), viewport: vp.toJSON(),
      early: early.toDataURL(), viewer: v.toDataURL(),
    });
  }
  return remove.apply(this, arguments);
};
"""


def latency(driver, ms: int) -> None:
    """Every request of the page from now on waits ``ms`` (CDP)."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": ms,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )


def test_cache012_a_cards_click_paints_its_cached_first_image_at_once(
    dash_br, live_app, corpus, image_requests
):
    """A click on the card of a cached series paints the series' first image
    (full size, default window) where the viewport will be, in the click's
    own task (the study page read its cards' first frames while idle), before
    the viewer's page has arrived (held back here: 1 s of network latency);
    the viewer adopts it and, when it paints the same pixels on the same
    spot, the early canvas goes. Zoom, pan and the wheel work after that, the
    image is the one a page load shows, and no pixel is asked of the server.
    A frame not read before is read at the click and painted the same way; a
    series not cached opens as before, with nothing drawn early."""
    from selenium.webdriver.common.action_chains import ActionChains

    from tests.test_viewer import ranges, wheel

    study, series = corpus.demo, corpus.demo.series[1]  # CT thorax, 40 images
    images = sum(s.image_count for s in study.series)
    driver = dash_br.driver
    page = f"{live_app}/study/{study.study_uid}"

    def settled() -> None:
        prefetch_done(dash_br, images)
        dash_br.wait_for_no_elements("#first-paint", timeout=15)
        # the cards' frames read (again once the page has stored them)
        WebDriverWait(driver, 30, poll_frequency=0.1).until(
            lambda _d: (
                run(
                    dash_br,
                    "Promise.all([window.imageCache.idle(), window.plotlyWarm,"
                    " window.cardsRead]).then((r) => done(r[2]));",
                )
                == len(study.series)
            )
        )
        driver.execute_script(HANDOVER)

    def card(s):
        return dash_br.find_element(
            f"#series-grid a.thumb-link[href='/viewer/{study.study_uid}/{s.series_uid}']"
        )

    def handed_over() -> dict:
        WebDriverWait(driver, 10, poll_frequency=0.02).until(
            lambda d: d.execute_script("return window.__early.handovers.length === 1")
        )
        assert not driver.find_elements("id", "viewer-early-box")
        assert not driver.find_elements("id", "viewer-early-cover")
        early = driver.execute_script("return window.__early")
        handover = early["handovers"][0]
        assert early["added"] == 1
        # no jump: the same pixels at the same place
        assert handover["early_box"] == handover["viewport"]
        assert handover["early_rect"] == pytest.approx(
            handover["figure_rect"], abs=0.01
        )
        assert handover["viewer_rect"] == pytest.approx(
            handover["figure_rect"], abs=0.01
        )
        assert handover["early"] == handover["viewer"]
        return handover

    sign_in(dash_br, live_app, f"/study/{study.study_uid}")
    settled()
    image_requests.reset()
    latency(driver, 1000)
    try:
        card(series).click()
        # painted in the click's task, before the viewer's page: over a cover
        assert driver.execute_script(
            "return !!document.getElementById('viewer-early-box')"
            " && !!document.getElementById('viewer-early-cover')"
            " && !document.getElementById('viewer-viewport')"
        )
        centre = driver.execute_script(
            "const c = document.getElementById('viewer-early');"
            "return [c.width, c.height].concat(Array.from(c.getContext('2d')"
            ".getImageData(c.width >> 1, c.height >> 1, 1, 1).data));"
        )
        assert centre[:2] == [512, 512]  # the frame itself, full size
        assert centre[5] == 255 and centre[2] > 0  # soft tissue, not black
    finally:
        latency(driver, 0)
    until(dash_br, f"s.shown === 1 && s.loaded.length === {series.image_count}")
    handover = handed_over()
    # the browser's first viewer: painted where the viewport came (no move)
    assert (
        driver.execute_script("return window.__early.placed[0]") == handover["viewport"]
    )
    dash_br.wait_for_text_to_equal("#cache-hit-rate", "cache 100 %")
    assert image_requests.total == 0
    # the viewer works as ever: zoom, pan, wheel
    fit = state(dash_br)["zoom"]
    dash_br.find_element("#zoom-in").click()
    until(dash_br, f"Math.abs(s.zoom - {fit * 1.25}) < 1e-6", what="zoom in")
    x0, _y0 = ranges(dash_br)
    ActionChains(driver).drag_and_drop_by_offset(
        dash_br.find_element("#viewer-viewport"), 80, 40
    ).perform()
    WebDriverWait(driver, 10).until(lambda _d: ranges(dash_br)[0] < x0 - 10)
    wheel(dash_br, 100)
    until(dash_br, "s.shown === 2", what="the wheel's step")
    # the frame and window a page load of the viewer shows
    driver.get(f"{live_app}/viewer/{study.study_uid}/{series.series_uid}")
    until(dash_br, "s.shown === 1")
    frames(dash_br)
    shown = driver.execute_script(
        "return document.getElementById('viewer-canvas').toDataURL()"
    )
    assert shown == handover["viewer"]
    # a frame the study page did not read before: read at the click
    other = study.series[3]  # CT abdomen
    driver.get(page)
    settled()
    run(dash_br, "window.dash_clientside.viewer.readCards(0).then(done);")
    card(other).click()
    until(dash_br, f"s.shown === 1 && s.loaded.length === {other.image_count}")
    handed_over()
    assert image_requests.total == 0
    # a series not cached: nothing early, the viewer loads it from the server
    other = study.series[4]  # MR T1, 24 images
    driver.get(page)
    settled()
    run(dash_br, "window.imageCache.clear().then(done);")
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    image_requests.reset()
    card(other).click()
    until(dash_br, f"s.shown === 1 && s.loaded.length === {other.image_count}")
    assert driver.execute_script("return window.__early.added") == 0
    # (images 1-3 in one batch)
    assert image_requests.total >= other.image_count - 2
    assert dash_br.get_logs() == []
