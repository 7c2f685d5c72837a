"""Time to the first and to the last series thumbnail painted on the study page
of a 20-series study, in headless Chromium, on the real Dash app.

Setup: a private Orthanc (``scripts.orthanc_local.LocalOrthanc``) with the
generated 20-series study (``services.demo.many_series_specs(20)``),
``tests.proxy.CountingProxy`` between the app and Orthanc (in a child process),
and the full Dash app (``app.create_dash_app()`` from environment variables, as
``python app.py`` builds it) served by werkzeug on 127.0.0.1. Chromium signs in
once through ``/login``.

Each repetition loads ``/study/<uid>`` in four states:

- ``cold``: every server cache emptied first (image cache, shared state and
  loader queue, the Orthanc client's HTTP metadata cache), and both browser
  caches: the HTTP cache (CDP ``Network.clearBrowserCache`` after
  ``about:blank``) and the page's IndexedDB image cache
  (``Storage.clearDataForOrigin``); the thumbnails come from Orthanc while the
  bulk loader, started by the page, competes for the same 5 Orthanc slots;
- ``warm``: the same study again after the bulk loader finished (server
  caches full, both browser caches still emptied);
- ``reopen, IndexedDB only``: server warm, the HTTP cache emptied but
  IndexedDB kept with the thumbnails of the load before (what every figure
  since session 3 measured as "cold" and "warm", by mistake: the bench did not
  empty IndexedDB); since the first-paint thumbnails are kept by the HTTP
  cache only, IndexedDB holds none of them and this mode is a warm load;
- ``reopen``: server warm, both browser caches kept as the load before left
  them (a study opened again in the same browser).

The server's own count of thumbnail requests and the page's Resource Timing
(the queue's ``fetch`` entries; their transfer size tells the network from the
HTTP cache) say where the thumbnails came from.

In the page, a script installed before any document script (CDP
``Page.addScriptToEvaluateOnNewDocument``) polls every animation frame and
records ``performance.now()`` (ms since navigation start) when each
``.thumb-img`` is ``complete`` with ``naturalWidth > 0``, i.e. the frame in
which it is first painted; image ``load`` events, the first ``.thumb-img`` in
the DOM and Navigation/Resource Timing are recorded too. A WSGI wrapper around
the app times the server side of each request (the page callback that runs
the study layout, each thumbnail).

Figures: median and p95 (nearest rank: the slowest run when there are fewer
than 20) over ``--runs`` repetitions (default 5) after one untimed warm-up
round. Targets: first thumbnail <= 300 ms, all 20 <= 1 s (PRD: first < 1 s,
all < 2 s).

Run from the project root::

    .venv/bin/python -m bench.thumbnails            # --runs 5
    .venv/bin/python -m bench.thumbnails --runs 10 --window 1920,2000
    .venv/bin/python -m bench.thumbnails --what-if no-loader --what-if identity
    .venv/bin/python -m bench.thumbnails --breakdown

``--what-if`` adds diagnostic cold modes (not the app's default behaviour; the
app's code is unchanged, live objects are set for those loads only):
``no-loader`` holds the bulk loader's lease during the load, so the thumbnails
do not share Orthanc's 5 slots with the loader; ``identity`` makes the app's
Orthanc session ask for uncompressed answers (Orthanc gzips them otherwise);
``no-dash`` blocks Dash's scripts in the browser (CDP ``Network.setBlockedURLs``),
so the first-paint copy's thumbnails have the main thread to themselves (a
cold and a warm mode): how much of their time is Dash's.
``--breakdown`` adds one cold load with timers wrapped around the server's
calls (page layout, thumbnail rendering, fetch, decode, cache, auth).
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit(
        "run from the project root as: .venv/bin/python -m bench.thumbnails"
    )

import argparse
import datetime
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench._common import (
    ADMIN,
    CallTimer,
    Proxy,
    Served,
    app_env,
    clear_server,
    close_all,
    machine_note,
    make_study,
    median,
    p95,
    start_orthanc,
    table,
    wait_for,
    wait_loaded,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
)

RECORDER = r"""
(() => {
  if (window.__bench) return;
  const b = window.__bench = {painted: {}, loaded: {}, errors: 0, inDom: null, count: 0};
  performance.setResourceTimingBufferSize(10000);  // (250 by default)
  b.long = [];  // the main thread's long tasks (> 50 ms): [start, duration]
  b.swapped = null;  // the first-paint copy made way for Dash's page
  new MutationObserver(() => {
    if (b.swapped === null && document.getElementById('_pages_content') &&
        !document.getElementById('first-paint')) b.swapped = performance.now();
  }).observe(document, {childList: true, subtree: true});
  new PerformanceObserver((list) => list.getEntries().forEach(
    (e) => b.long.push([e.startTime, e.duration]))).observe({type: 'longtask'});
  // the thumbnail's address (its src is a blob: URL when the queue loaded it)
  const key = (img) => img.getAttribute('data-src') || img.src;
  const thumb = (t) => t && t.tagName === 'IMG' && t.classList.contains('thumb-img');
  document.addEventListener('load', (e) => {
    if (thumb(e.target) && !(key(e.target) in b.loaded)) b.loaded[key(e.target)] = performance.now();
  }, true);
  document.addEventListener('error', (e) => { if (thumb(e.target)) b.errors += 1; }, true);
  const poll = () => {
    const imgs = document.getElementsByClassName('thumb-img');
    if (imgs.length && b.inDom === null) b.inDom = performance.now();
    b.count = imgs.length;
    for (const img of imgs) {
      // on screen: not inside anything display:none (getClientRects is empty)
      if (img.complete && img.naturalWidth > 0 && img.getClientRects().length > 0 &&
          !(key(img) in b.painted)) {
        b.painted[key(img)] = performance.now();
      }
    }
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})();
"""

COLLECT = r"""
const nav = performance.getEntriesByType('navigation')[0] || {};
// the thumbnails' requests: fetch() entries of the page's queue (or <img>)
const thumbs = performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/rendered?') && !e.name.startsWith('blob:'))
  .map(e => ({start: e.startTime, requestStart: e.requestStart,
              responseStart: e.responseStart, end: e.responseEnd,
              transferSize: e.transferSize}));
const ends = (part) => performance.getEntriesByType('resource')
  .filter(e => e.name.includes(part)).map(e => e.responseEnd);
return {bench: window.__bench, thumbs: thumbs,
        queueIn: ends('/assets/imagequeue.js')[0],
        cssIn: ends('.css').length ? Math.max(...ends('.css')) : undefined,
        nav: {responseEnd: nav.responseEnd, dcl: nav.domContentLoadedEventEnd,
              load: nav.loadEventEnd}};
"""


class RequestClock:
    """WSGI wrapper: server-side wall time of each request (start to last byte)."""

    def __init__(self, app) -> None:
        self.app = app
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.t0 = time.perf_counter()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        kind = None
        if path.endswith("/rendered"):
            kind = "thumbnail"
        elif path == "/_dash-update-component":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            kind = "page callback" if b"_pages_content" in body else "other callback"
        start = time.perf_counter()
        result = self.app(environ, start_response)
        clock = self

        class Timed:
            def __iter__(self):
                yield from result

            def close(self):
                if hasattr(result, "close"):
                    result.close()
                with clock.lock:
                    clock.records.append(
                        dict(
                            path=path,
                            kind=kind,
                            start=start - clock.t0,
                            s=time.perf_counter() - start,
                        )
                    )

        return Timed()

    def of(self, kind: str) -> list[dict]:
        with self.lock:
            return [r for r in self.records if r["kind"] == kind]


def breakdown_targets(server) -> dict[str, tuple[object, str]]:
    """Calls timed in the diagnostic load (nested: a row includes those below it)."""
    import services.imaging as imaging

    study_page = sys.modules["pages.study"]
    ext = server.extensions
    pacs, loader, users = ext["pacs"], ext["loader"], ext["users"]
    return {
        "page: pacs.get_study": (pacs, "get_study"),
        "page: pacs.list_series": (pacs, "list_series"),
        "page: pacs.series_images": (pacs, "series_images"),
        "page: loader.prefetch": (loader, "prefetch"),
        "  loader._revalidate (per series)": (loader, "_revalidate"),
        "loader.progress (page + poll)": (loader, "progress"),
        "thumbnail: pacs.render_frame": (pacs, "render_frame"),
        "  pacs.get_instance_meta": (pacs, "get_instance_meta"),
        "  pacs._file (lock wait + fetch)": (pacs, "_file"),
        "    pacs._fetch (one instance)": (pacs, "_fetch"),
        "      SharedSlots.acquire (wait for a slot)": (ext["slots"], "acquire"),
        "      HTTP session.request (+gunzip)": (pacs.inner.session, "request"),
        "      images.set (diskcache)": (pacs.images, "set"),
        "  imaging.decode_frames (one frame)": (imaging, "decode_frames"),
        "page: study_view (HTML first paint + page callback)": (
            study_page,
            "study_view",
        ),
        "  pacs.get_frame": (pacs, "get_frame"),
        "  imaging.to_8bit": (imaging, "to_8bit"),
        "  imaging.encode (JPEG 256)": (imaging, "encode"),
        "auth: UserStore.exists": (users, "exists"),
        "auth: UserStore.is_revoked": (users, "is_revoked"),
    }


def start_browser(profile: Path, window: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={window}")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    return driver


def sign_in(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/login?next=/")
    driver.find_element(By.ID, "username").send_keys(ADMIN[0])
    driver.find_element(By.ID, "password").send_keys(ADMIN[1])
    driver.find_element(By.ID, "login-submit").click()
    wait_for(
        lambda: (
            driver.current_url.rstrip("/") == base
            and driver.find_elements(By.ID, "react-entry-point")
        ),
        15,
        what="the sign-in",
    )


STORED = r"""
const done = arguments[arguments.length - 1];
const want = [...document.querySelectorAll('img.thumb-img[data-src]')]
  .map(i => new URL(i.getAttribute('data-src'), location.href).pathname
            + new URL(i.getAttribute('data-src'), location.href).search);
if (!window.imageCache) return done(true);
window.imageCache.summary().then(s => {
  const keys = new Set((s.keys || []).map(k => new URL(k, location.href).pathname
                                                + new URL(k, location.href).search));
  done(want.every(w => keys.has(w)));
}, () => done(false));
"""

REOPEN_IDB, REOPEN = "reopen, IndexedDB only", "reopen"

# what one_load keeps of the browser's caches from the load before
KEEP_NOTHING, KEEP_INDEXEDDB, KEEP_BOTH = "nothing", "indexeddb", "both"


def one_load(
    driver,
    url: str,
    expected: int,
    timeout: float,
    keep: str = KEEP_NOTHING,
    then_stored: bool = False,
    swap: bool = True,
) -> dict:
    """Load the study page with the browser's caches emptied as ``keep`` says;
    wait for every thumbnail. ``then_stored``: afterwards, wait (up to 3 s)
    until IndexedDB holds the page's thumbnails, for a reopen next. ``swap``:
    wait too for Dash's page to take over from the first-paint copy."""
    driver.get("about:blank")
    if keep != KEEP_BOTH:
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    if keep == KEEP_NOTHING:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin",
            {"origin": origin, "storageTypes": "indexeddb"},
        )
    driver.get(url)
    wait_for(
        lambda: driver.execute_script(
            "return window.__bench && (Object.keys(window.__bench.painted).length >= "
            f"{expected} || window.__bench.errors > 0);"
        ),
        timeout,
        poll=0.05,
        what="every thumbnail",
    )
    if swap:
        wait_for(
            lambda: driver.execute_script("return window.__bench.swapped !== null"),
            15,
            poll=0.05,
            what="Dash's page",
        )
    data = driver.execute_script(COLLECT)
    if then_stored:
        try:
            wait_for(
                lambda: driver.execute_async_script(STORED),
                3,
                poll=0.1,
                what="the thumbnails in IndexedDB",
            )
        except TimeoutError:  # the reopen then measures what is there
            print("  note: IndexedDB does not hold every thumbnail of the page")
    driver.get("about:blank")  # stop the page's progress poll
    return data


def summarise(
    data: dict, clock: RequestClock, proxy_stats: dict, expected: int
) -> dict:
    b = data["bench"]
    painted = sorted(b["painted"].values())
    if len(painted) < expected:  # a thumbnail failed: no "all painted" time
        painted.append(float("nan"))
    loaded = sorted(b["loaded"].values())
    thumbs = data["thumbs"]
    page = clock.of("page callback")
    served = clock.of("thumbnail")
    return dict(
        first=painted[0],
        last=painted[-1],
        first_load=loaded[0] if loaded else float("nan"),
        last_load=loaded[-1] if loaded else float("nan"),
        in_dom=b["inDom"],
        errors=b["errors"],
        nav_response=data["nav"]["responseEnd"],
        dcl=data["nav"]["dcl"],
        swapped=b.get("swapped") or float("nan"),
        long_ms=sum(min(d, max(0.0, painted[-1] - t)) for t, d in b.get("long", [])),
        queue_in=data.get("queueIn") or float("nan"),
        css_in=data.get("cssIn") or float("nan"),
        thumb_req_first=min((t["start"] for t in thumbs), default=float("nan")),
        thumb_resp_first=min((t["end"] for t in thumbs), default=float("nan")),
        thumb_resp_last=max((t["end"] for t in thumbs), default=float("nan")),
        thumb_requests=len(thumbs),
        from_network=sum(1 for t in thumbs if t["transferSize"] > 0),
        served_thumbs=len(served),
        page_cb_ms=1000 * sum(r["s"] for r in page),
        thumb_server_med_ms=1000 * median(r["s"] for r in served)
        if served
        else float("nan"),
        thumb_server_max_ms=1000 * max((r["s"] for r in served), default=float("nan")),
        orthanc=proxy_stats["forwarded"],
        orthanc_pixel=proxy_stats["pixel"],
        peak=proxy_stats["max_in_flight"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thumbnails")
    parser.add_argument("--runs", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument(
        "--window",
        default="1920,2000",
        help="browser window W,H (all 20 cards in view)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="per load, s")
    parser.add_argument("--inproc-proxy", action="store_true")
    parser.add_argument(
        "--what-if",
        action="append",
        default=[],
        choices=["no-loader", "identity", "no-dash"],
        help="add a cold mode: the bulk loader held off during the load "
        "(no-loader), the app's Orthanc session asking Accept-Encoding: "
        "identity (identity), Dash's scripts blocked in the browser (no-dash); "
        "diagnostics, not the app's default behaviour",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="one more cold load with timers around the server's calls",
    )
    args = parser.parse_args(argv)
    machine = machine_note()  # before the bench loads the machine
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-thumbnails-"))
    orthanc = proxy = served = driver = server = None
    try:
        study = make_study(tmp / "dicom", "twenty")
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        os.environ.update(app_env(proxy.url, orthanc, tmp / "app"))
        import app as app_module

        dash_app = app_module.create_dash_app()
        server = dash_app.server
        clock = RequestClock(server)
        served = Served(clock)
        driver = start_browser(tmp / "chrome-profile", args.window)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER}
        )
        sign_in(driver, served.url)
        url = f"{served.url}/study/{study.study_uid}"
        expected = len(study.series)
        setup_s = time.perf_counter() - started

        modes = ["cold", "warm", REOPEN_IDB, REOPEN]
        keeps = {REOPEN_IDB: KEEP_INDEXEDDB, REOPEN: KEEP_BOTH}
        if "no-loader" in args.what_if:
            modes.append("cold, loader held off")
        if "identity" in args.what_if:
            modes.append("cold, identity")
        if "no-dash" in args.what_if:
            modes += ["cold, Dash blocked", "warm, Dash blocked"]
        results: dict[str, list[dict]] = {m: [] for m in modes}
        session_headers = server.extensions["pacs"].inner.session.headers
        saved_encoding = session_headers.get("Accept-Encoding")
        state = server.extensions["state"]
        for rep in range(args.runs + 1):  # the first round is a warm-up
            for i, mode in enumerate(modes):
                after = modes[i + 1] if i + 1 < len(modes) else None
                if mode.startswith("cold"):
                    driver.get("about:blank")
                    clear_server(server, proxy)
                else:
                    wait_loaded(server, study.study_uid, 120)
                    proxy.reset()
                if mode == "cold, loader held off":
                    # what-if: another holder of the loader's lease, so this
                    # process's loader schedules nothing during the load
                    state.set("lease:bulk-loader", "bench-holds-it", expire=60)
                if mode == "cold, identity":
                    session_headers["Accept-Encoding"] = "identity"
                if mode.endswith("Dash blocked"):
                    driver.execute_cdp_cmd(
                        "Network.setBlockedURLs",
                        {"urls": ["*/_dash-component-suites/*"]},
                    )
                clock.reset()
                try:
                    data = one_load(
                        driver,
                        url,
                        expected,
                        args.timeout,
                        keep=keeps.get(mode, KEEP_NOTHING),
                        then_stored=keeps.get(after) == KEEP_INDEXEDDB,
                        swap=not mode.endswith("Dash blocked"),
                    )
                finally:
                    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
                    if mode == "cold, loader held off":
                        state.delete("lease:bulk-loader")
                    if saved_encoding is None:
                        session_headers.pop("Accept-Encoding", None)
                    else:
                        session_headers["Accept-Encoding"] = saved_encoding
                r = summarise(data, clock, proxy.stats(), expected)
                if r["errors"]:
                    print(f"  warning: {r['errors']} thumbnail error(s) in this load")
                label = "warm-up" if rep == 0 else f"run {rep}"
                print(
                    f"  {label:7} {mode:23}: first {r['first']:.0f} ms, all {r['last']:.0f} ms "
                    f"(thumbnails on the wire {r['from_network']}/{expected}, served "
                    f"{r['served_thumbs']}; Orthanc {r['orthanc']} requests, "
                    f"peak {r['peak']})",
                    flush=True,
                )
                if rep:
                    results[mode].append(r)

        def row(mode: str, key: str, label: str, fmt: str = "{:.0f}") -> list:
            values = [r[key] for r in results[mode]]
            return [label, mode, fmt.format(median(values)), fmt.format(p95(values))]

        rows = []
        for mode in modes:
            rows += [
                row(mode, "first", "**first thumbnail painted**, ms"),
                row(mode, "last", f"**all {expected} thumbnails painted**, ms"),
            ]
        detail = []
        for mode in modes:
            detail += [
                row(mode, "nav_response", "HTML answered (navigation responseEnd), ms"),
                row(mode, "css_in", "stylesheets in (last responseEnd), ms"),
                row(mode, "queue_in", "the queue's script in (imagequeue.js), ms"),
                row(mode, "dcl", "DOMContentLoaded, ms"),
                row(mode, "swapped", "Dash's page drawn (first-paint copy gone), ms"),
                row(mode, "long_ms", "main thread in long tasks until all painted, ms"),
                row(mode, "in_dom", "first .thumb-img seen by an animation frame, ms"),
                row(mode, "thumb_req_first", "first thumbnail request sent, ms"),
                row(mode, "thumb_resp_first", "first thumbnail response end, ms"),
                row(mode, "first_load", "first thumbnail load event, ms"),
                row(mode, "last_load", "last thumbnail load event, ms"),
                row(mode, "thumb_resp_last", "last thumbnail response end, ms"),
                row(mode, "page_cb_ms", "server: page callback (study layout), ms"),
                row(
                    mode,
                    "thumb_server_med_ms",
                    "server: one thumbnail, median of 20, ms",
                ),
                row(mode, "thumb_server_max_ms", "server: slowest thumbnail, ms"),
                row(
                    mode, "thumb_requests", "thumbnail requests (page's fetch entries)"
                ),
                row(
                    mode, "from_network", "  of which on the wire (not the HTTP cache)"
                ),
                row(mode, "served_thumbs", "  thumbnails served by the server"),
                row(mode, "orthanc", "Orthanc requests during the load"),
                row(mode, "orthanc_pixel", "  of which pixel requests"),
                row(mode, "peak", "peak Orthanc requests in flight"),
            ]
        print()
        print(
            f"# bench.thumbnails  {datetime.datetime.now().isoformat(timespec='seconds')}"
        )
        print(f"machine: {machine}")
        print(
            f"study: 20 series, {sum(s.image_count for s in study.series)} images; "
            f"runs: {args.runs} (+1 warm-up pair); window {args.window}; setup {setup_s:.1f} s"
        )
        print()
        print(table(["figure", "caches", "median", "p95"], rows))
        first = median(r["first"] for r in results["cold"])
        last = median(r["last"] for r in results["cold"])
        print()
        print(
            f"cold vs targets: first {first:.0f} ms / 300 ms = {first / 300:.2f}, "
            f"all {last:.0f} ms / 1000 ms = {last / 1000:.2f} "
            f"(PRD: first < 1000 ms, all < 2000 ms)"
        )
        wf = median(r["first"] for r in results["warm"])
        wl = median(r["last"] for r in results["warm"])
        print(f"warm / cold: first {wf / first:.2f}, all {wl / last:.2f}")
        print()
        print("## where the time goes (medians; ms since navigation start)")
        print(table(["step", "caches", "median", "p95"], detail))
        print()
        if args.breakdown:
            driver.get("about:blank")
            clear_server(server, proxy)
            clock.reset()
            with CallTimer(breakdown_targets(server), split_loader=True) as timer:
                data = one_load(driver, url, expected, args.timeout)
            r = summarise(data, clock, proxy.stats(), expected)
            print(
                f"## diagnostic cold load with timers (not in the figures): first "
                f"{r['first']:.0f} ms, all {r['last']:.0f} ms; calls made from the "
                "bulk loader's threads are marked [loader]; times are wall times "
                "and include waiting for the GIL"
            )
            print(table(["call", "calls", "total s", "mean ms"], timer.rows()))
            print()
        print(
            json.dumps(
                {
                    "browser_cache_check": {
                        m: [r["from_network"] for r in results[m]] for m in results
                    }
                }
            )
        )
        print(f"total wall time {time.perf_counter() - started:.1f} s")
        return 0
    finally:
        close_all(
            driver=driver,
            server=server,
            served=served,
            proxy=proxy,
            orthanc=orthanc,
            tmp=tmp,
        )


if __name__ == "__main__":
    raise SystemExit(main())
