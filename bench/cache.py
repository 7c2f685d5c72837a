"""Click-to-view latency for a cached series and the browser cache's hit rate
over repeated views (issue #6), in headless Chromium on the real Dash app.

Setup: a private Orthanc (``scripts.orthanc_local.LocalOrthanc``) with the
generated 20-series study (``services.demo.many_series_specs(20)``),
``tests.proxy.CountingProxy`` between the app and Orthanc (in a child
process), the full Dash app (``app.create_dash_app()``) served by werkzeug on
127.0.0.1, the server's bulk loader finished before anything is measured.
Chromium signs in once through ``/login`` on its own profile directory.

Each view loads ``/study/<uid>`` (a full page load), waits until Dash has
drawn the cards (the first-paint copy gone, every thumbnail shown) and the
page's background loading has settled (``window.studyPrefetch``: every image
of the study queued and each fetched or found in IndexedDB), then clicks a
card's thumbnail (a real WebDriver click) and waits for the viewer's first
image painted. Modes, in this order in every round:

- ``cached, click``: the series is in IndexedDB; the card's link as the app
  has it (``dcc.Link``: client-side navigation, no page load);
- ``cached, page load``: the same, but the click's link does a full page load
  (the bench sets ``location`` to the card's ``href`` in the click's capture
  phase and cancels the click: what an ``<a href>`` card does);
- ``empty, click``: IndexedDB emptied and the HTTP cache cleared just before
  the click: the first image comes from the server (its cache warm).

Series cycle through the study's 20, so a series is viewed again every
``20 / 3`` rounds. After the rounds, the browser is closed and started again
on the same profile (as ``tests/test_browser_cache.py::test_cache010``) and
one more ``cached, click`` view is made.

In the page, a script installed before any document script (CDP
``Page.addScriptToEvaluateOnNewDocument``) records absolute times
(``performance.timeOrigin + t``, so a click on one document and the paint on
the next compare): the click (``event.timeStamp``, kept in sessionStorage
across a page load), ``history.pushState``, ``#viewer-viewport`` in the DOM
(MutationObserver), ``window.Plotly`` set (a setter: plotly.js evaluated),
the figure's ``.main-svg`` in the DOM, the viewer's first
``imageCache.get`` of a frame (start and end: the IndexedDB read), the first
draw of the image (``putImageData`` or ``drawImage`` onto ``#viewer-early``,
the canvas a card's click paints before the viewer's page is there, when the
app has one, else onto the viewer's ``#viewer-canvas``) and ``painted``:
``performance.now()`` in a ``setTimeout(0)`` after the frame that shows that
draw (queued from the draw when it runs in an animation frame callback, else
from the next one), as ``bench/viewer.py`` does; and the viewer's own first
draw onto ``#viewer-canvas``. Resource Timing gives the layout callback's
request, plotly.js and ``async-graph.js``; a WSGI wrapper times the layout
callback on the server and counts the pixel requests the server answers.

Hit rate of a view: ``imageCache.stats()`` hits / (hits + misses) from the
click until the viewer holds every image of the series; pixel requests: the
page's Resource Timing entries for ``/frames/`` and ``/rendered`` after the
click, and the server's own count.

Figures: median and p95 (nearest rank: the slowest run when there are fewer
than 20) over ``--runs`` rounds after one untimed warm-up round. Targets:
cached click to painted <= 100 ms (PRD < 500 ms); hit rate 100 % within the
expiry (PRD > 80 %). Nothing asserts on timings.

Run from the project root::

    .venv/bin/python -m bench.cache              # --runs 10, about 2 minutes
    .venv/bin/python -m bench.cache --runs 20 --skip restart
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.cache")

import argparse
import datetime
import logging
import os
import tempfile
import time
from pathlib import Path

from bench._common import (
    CallTimer,
    Proxy,
    Served,
    app_env,
    close_all,
    is_pixel_path,
    load_note,
    machine_note,
    make_study,
    median,
    p95,
    start_orthanc,
    table,
    wait_for,
    wait_loaded,
)
from bench.thumbnails import RequestClock, sign_in, start_browser

MODES = ("cached, click", "cached, page load", "empty, click")

RECORDER = r"""
(() => {
  if (window.__cb) return;
  const abs = (t) => performance.timeOrigin + t;
  const now = () => abs(performance.now());
  // a click on the previous document that loaded this one (a viewer)
  const saved = location.pathname.startsWith('/viewer/') && sessionStorage.getItem('cb.click');
  const b = window.__cb = {click: saved ? +saved : null, marks: {}, fullLoad: !!saved};
  sessionStorage.removeItem('cb.click');
  performance.setResourceTimingBufferSize(100000);  // a study page asks hundreds
  const mark = (name, t) => {
    if (b.click !== null && !(name in b.marks)) b.marks[name] = t === undefined ? now() : t;
  };
  b.mark = mark;
  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a.thumb-link');
    if (!a || !e.isTrusted) return;  // (not the app's own click of the link)
    b.click = abs(e.timeStamp);
    b.marks = {};
    sessionStorage.setItem('cb.click', String(b.click));  // if a page load follows
    if (b.forceLoad) {  // the "page load" mode: what an <a href> card does
      e.preventDefault();
      e.stopImmediatePropagation();
      window.location.assign(a.getAttribute('href'));
    }
  }, true);
  const push = history.pushState;
  history.pushState = function () {
    mark('pushState');
    sessionStorage.removeItem('cb.click');  // no page load: this document goes on
    return push.apply(this, arguments);
  };
  // animation frame callbacks: is the current task one?
  const raf = window.requestAnimationFrame.bind(window);
  let inRaf = false;
  window.requestAnimationFrame = (cb) => raf((t) => {
    inRaf = true;
    try { cb(t); } finally { inRaf = false; }
  });
  new MutationObserver(() => {
    if (b.click === null) return;
    if (!b.marks.viewport && document.getElementById('viewer-viewport')) mark('viewport');
    if (!b.marks.svg && document.querySelector('#viewer-graph .main-svg')) mark('svg');
  }).observe(document, {childList: true, subtree: true});
  let plotly;
  Object.defineProperty(window, 'Plotly', {
    configurable: true,
    get: () => plotly,
    set: (v) => { plotly = v; b.plotlyAt = now(); mark('plotly'); },
  });
  let queue;
  Object.defineProperty(window, 'imageQueue', {
    configurable: true,
    get: () => queue,
    set: (v) => {
      queue = v;
      const fetch = v.fetch;
      v.fetch = function (url) {
        if (b.click !== null && !b.marks.ask && /\/frames\/\d+$/.test(url)) mark('ask');
        return fetch.apply(this, arguments);
      };
    },
  });
  let cache;
  Object.defineProperty(window, 'imageCache', {
    configurable: true,
    get: () => cache,
    set: (v) => {
      cache = v;
      const get = v.get;
      v.get = function (key) {
        const first = b.click !== null && !b.marks.getStart && /\/frames\/\d+$/.test(key);
        if (first) mark('getStart');
        const p = get.apply(this, arguments);
        if (first) p.then((r) => { mark('getEnd'); b.firstHit = !!r; }, () => {});
        return p;
      };
    },
  });
  // the first image drawn: by the card click's early paint (#viewer-early,
  // before the viewer's page) or by the viewer (#viewer-canvas): drawImage or
  // putImageData
  const drawn = (canvas) => {
    const id = canvas.id;
    if (b.click === null || (id !== 'viewer-canvas' && id !== 'viewer-early')) return;
    if (id === 'viewer-canvas') mark('viewerDrawn');
    if (!b.marks.drawn) {
      mark('drawn');
      b.drawnOn = id;
      const painted = () => setTimeout(() => mark('painted'), 0);
      if (inRaf) painted(); else raf(painted);
    }
  };
  const draw = CanvasRenderingContext2D.prototype.drawImage;
  CanvasRenderingContext2D.prototype.drawImage = function () {
    const out = draw.apply(this, arguments);
    drawn(this.canvas);
    return out;
  };
  const put = CanvasRenderingContext2D.prototype.putImageData;
  CanvasRenderingContext2D.prototype.putImageData = function () {
    const out = put.apply(this, arguments);
    drawn(this.canvas);
    return out;
  };
})();
"""

READY = r"""
const total = arguments[0];
const t = [...document.querySelectorAll('#series-grid .thumb-img')];
const p = window.studyPrefetch;
return !document.getElementById('first-paint') && t.length > 0
  && t.every(i => i.complete && i.naturalWidth > 0)
  && !!p && p.queued === total && p.fetched + p.cached + p.failed === p.queued;
"""

COLLECT = r"""
const b = window.__cb, s = window.imageCache.stats();
const res = performance.getEntriesByType('resource')
  .map(e => ({name: new URL(e.name).pathname, start: performance.timeOrigin + e.startTime,
              requestStart: performance.timeOrigin + e.requestStart,
              end: performance.timeOrigin + e.responseEnd, size: e.transferSize}))
  .filter(e => e.start >= b.click - 1);
const v = window.dash_clientside.viewer.state();
return {click: b.click, marks: b.marks, fullLoad: b.fullLoad, firstHit: b.firstHit,
        drawnOn: b.drawnOn,
        plotlyBefore: b.plotlyAt !== undefined && b.plotlyAt < b.click,
        stats: s, resources: res, state: v, path: location.pathname};
"""


def layout_targets(server) -> dict[str, tuple[object, str]]:
    """The viewer layout's calls (nested: a row includes those below it)."""
    import sys

    viewer = sys.modules["pages.viewer"]
    ext = server.extensions
    pacs, loader = ext["pacs"], ext["loader"]
    return {
        "pacs.get_study": (pacs, "get_study"),
        "pacs.list_series": (pacs, "list_series"),
        "pacs.list_images": (pacs, "list_images"),
        "pacs.get_instance_meta": (pacs, "get_instance_meta"),
        "loader.prefetch": (loader, "prefetch"),
        "loader.focus": (loader, "focus"),
        "pages.viewer.config (the store)": (viewer, "config"),
        "pages.viewer.toolbar": (viewer, "toolbar"),
        "pages.viewer.viewport (figure)": (viewer, "viewport"),
    }


def open_study(driver, url: str, total: int, timeout: float) -> None:
    driver.get(url)
    wait_for(
        lambda: driver.execute_script(READY, total),
        timeout,
        poll=0.05,
        what="the study page drawn and its images in IndexedDB",
    )
    # the page settled: its writes stored, plotly.js warmed and the cards'
    # first frames read (when the app does)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all([window.imageCache.idle(), window.plotlyWarm, window.cardsRead])"
        ".then(done, done);"
    )


def one_view(driver, mode: str, card: int, clock, timeout: float) -> dict:
    """Click card ``card`` on the study page that is open; wait for the viewer."""
    from selenium.webdriver.common.by import By

    if mode.startswith("empty"):
        driver.execute_async_script(
            "window.imageCache.clear().then(arguments[arguments.length - 1]);"
        )
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.execute_script(
        "window.__cb.forceLoad = arguments[0];", mode == "cached, page load"
    )
    before = driver.execute_script("return window.imageCache.stats();")
    links = driver.find_elements(By.CSS_SELECTOR, "#series-grid a.thumb-link")
    href = links[card].get_attribute("href")
    driver.execute_async_script(  # in view, then a frame: nothing else moves
        "arguments[0].scrollIntoView({block: 'center'});"
        "requestAnimationFrame(() => setTimeout(arguments[arguments.length - 1], 0));",
        links[card],
    )
    clock.reset()
    links[card].click()
    wait_for(
        lambda: driver.execute_script(
            "const b = window.__cb, v = window.dash_clientside"
            " && window.dash_clientside.viewer && window.dash_clientside.viewer.state();"
            "return b && b.marks.painted && v && v.inFlight === 0"
            " && v.loaded.length === v.total;"
        ),
        timeout,
        poll=0.02,
        what="the viewer's first image painted and the series loaded",
    )
    data = driver.execute_script(COLLECT)
    if not href.endswith(data["path"]):
        raise RuntimeError(f"the click opened {data['path']}, not {href}")
    m, click = data["marks"], data["click"]

    def since(name: str) -> float:
        return m[name] - click if name in m else float("nan")

    def resource(part: str, field: str) -> float:
        found = [r for r in data["resources"] if part in r["name"]]
        return found[0][field] - click if found else float("nan")

    if data["fullLoad"]:
        before = {"hits": 0, "misses": 0}  # a new document counts from zero
    page_cb = clock.of("page callback")
    hits = data["stats"]["hits"] - before["hits"]
    misses = data["stats"]["misses"] - before["misses"]
    pixels = [r for r in data["resources"] if is_pixel_path(r["name"])]
    server_pixels = sum(1 for r in clock.records if is_pixel_path(r["path"]))
    return dict(
        painted=since("painted"),
        push=since("pushState"),
        cb_sent=resource("/_dash-update-component", "requestStart"),
        cb_end=resource("/_dash-update-component", "end"),
        cb_server=1000 * page_cb[0]["s"] if page_cb else float("nan"),
        viewport=since("viewport"),
        plotly_js_end=resource("plotly.min.js", "end"),
        plotly=since("plotly"),
        plotly_warm=data["plotlyBefore"],
        graph_js_end=resource("async-graph.js", "end"),
        svg=since("svg"),
        ask=since("ask"),
        get_start=since("getStart"),
        get_end=since("getEnd"),
        drawn=since("drawn"),
        early=data["drawnOn"] == "viewer-early",
        viewer_drawn=since("viewerDrawn"),
        first_hit=data["firstHit"],
        hits=hits,
        misses=misses,
        pixel_requests=len(pixels),
        server_pixels=server_pixels,
        total=data["state"]["total"],
        full_load=data["fullLoad"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache")
    parser.add_argument("--runs", type=int, default=10, help="rounds (default 10)")
    parser.add_argument(
        "--window",
        default="1920,2000",
        help="browser window W,H (all 20 cards in view)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait, s")
    parser.add_argument("--inproc-proxy", action="store_true")
    parser.add_argument(
        "--skip", action="append", default=[], choices=["restart", *MODES]
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="one more cached click with timers around the viewer layout's calls",
    )
    args = parser.parse_args(argv)
    machine = machine_note()  # before the bench loads the machine
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    modes = [m for m in MODES if m not in args.skip]

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    orthanc = proxy = served = driver = server = None
    profile = tmp / "chrome-profile"

    def browser():
        d = start_browser(profile, args.window)
        d.set_script_timeout(60)
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER})
        return d

    try:
        study = make_study(tmp / "dicom", "twenty")
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        os.environ.update(app_env(proxy.url, orthanc, tmp / "app"))
        import app as app_module

        server = app_module.create_dash_app().server
        clock = RequestClock(server)
        served = Served(clock)
        driver = browser()
        sign_in(driver, served.url)
        url = f"{served.url}/study/{study.study_uid}"
        total = sum(s.image_count for s in study.series)
        n_series = len(study.series)
        driver.get(url)  # the page starts the server's bulk loader
        wait_loaded(server, study.study_uid, 120)
        setup_s = time.perf_counter() - started
        print(f"setup {setup_s:.1f} s; load average {load_note()}", flush=True)

        results: dict[str, list[dict]] = {m: [] for m in modes}
        view = 0
        for rep in range(args.runs + 1):  # the first round is a warm-up
            for mode in modes:
                open_study(driver, url, total, args.timeout)
                card = view % n_series
                view += 1
                r = one_view(driver, mode, card, clock, args.timeout)
                label = "warm-up" if rep == 0 else f"run {rep}"
                plotly = "warm" if r["plotly_warm"] else f"{r['plotly']:.0f}"
                print(
                    f"  {label:7} {mode:17} card {card + 1:2}: painted "
                    f"{r['painted']:.0f} ms (layout answered {r['cb_end']:.0f}, "
                    f"plotly {plotly}, "
                    f"read {r['get_start']:.0f}-{r['get_end']:.0f}, drawn "
                    f"{r['drawn']:.0f}{' early' if r['early'] else ''}, viewer "
                    f"{r['viewer_drawn']:.0f}); hits {r['hits']}/{r['hits'] + r['misses']}, "
                    f"pixel requests {r['pixel_requests']} (server {r['server_pixels']})",
                    flush=True,
                )
                if rep:
                    results[mode].append(r)

        timer = None
        if args.breakdown:
            open_study(driver, url, total, args.timeout)
            with CallTimer(layout_targets(server)) as timer:
                r = one_view(driver, "cached, click", 1, clock, args.timeout)
            timer_note = (
                f"painted {r['painted']:.0f} ms, layout callback on the server "
                f"{r['cb_server']:.0f} ms"
            )

        restart = None
        if "restart" not in args.skip:
            driver.quit()
            driver = browser()  # a new browser process on the same profile
            driver.get(url)
            if driver.find_elements("id", "login-form"):  # session cookies gone
                sign_in(driver, served.url)
            open_study(driver, url, total, args.timeout)
            restart = one_view(driver, "cached, click", 0, clock, args.timeout)
            print(
                f"  after a browser restart, cached, click card 1: painted "
                f"{restart['painted']:.0f} ms; hits {restart['hits']}/"
                f"{restart['hits'] + restart['misses']}, pixel requests "
                f"{restart['pixel_requests']} (server {restart['server_pixels']})",
                flush=True,
            )

        def stat(mode: str, key: str) -> list[str]:
            values = [r[key] for r in results[mode]]
            return [f"{median(values):.0f}", f"{p95(values):.0f}"]

        print()
        print(f"# bench.cache  {datetime.datetime.now().isoformat(timespec='seconds')}")
        print(f"machine: {machine}; load average now {load_note()}")
        print(
            f"study: {n_series} series, {total} images; runs: {args.runs} "
            f"(+1 warm-up round); window {args.window}; setup {setup_s:.1f} s"
        )
        print()
        rows = [
            ["**click to first image painted**, ms", mode, *stat(mode, "painted")]
            for mode in modes
        ]
        print(table(["figure", "mode", "median", "p95"], rows))
        if "cached, click" in results and "cached, page load" in results:
            a = median(r["painted"] for r in results["cached, click"])
            b = median(r["painted"] for r in results["cached, page load"])
            print(f"\ncached click / cached page load: {a / b:.2f}")
        if "cached, click" in results:
            a = median(r["painted"] for r in results["cached, click"])
            print(
                f"cached click vs targets: {a:.0f} ms / 100 ms = {a / 100:.2f} "
                f"(PRD: < 500 ms: {a / 500:.2f})"
            )
        print()
        print("## where the time goes (medians; ms after the click)")
        steps = [
            ("push", "history.pushState (client-side navigation)"),
            ("cb_sent", "layout callback request sent"),
            ("cb_server", "server: layout callback (duration)"),
            ("cb_end", "layout callback answered"),
            ("viewport", "#viewer-viewport in the DOM"),
            ("ask", "viewer asks the queue for the first frame"),
            ("get_start", "IndexedDB read of the first frame starts"),
            ("get_end", "first frame read from IndexedDB (or missed)"),
            ("plotly_js_end", "plotly.min.js received"),
            ("plotly", "plotly.js evaluated (window.Plotly set)"),
            ("graph_js_end", "async-graph.js received"),
            ("svg", "figure's .main-svg in the DOM"),
            ("drawn", "first image drawn (#viewer-early, else #viewer-canvas)"),
            ("painted", "painted (after that frame)"),
            ("viewer_drawn", "the viewer's own first draw (#viewer-canvas)"),
        ]
        detail = []
        for key, label in steps:
            detail.append([label, *(" / ".join(stat(m, key)) for m in modes)])
        print(table(["step (median / p95)", *modes], detail))
        print(
            "\nfirst image drawn by the click's early paint (#viewer-early): "
            + ", ".join(
                f"{m} {sum(r['early'] for r in results[m])}/{len(results[m])}"
                for m in modes
            )
        )
        print(
            "plotly.js already loaded at the click: "
            + ", ".join(
                f"{m} {sum(r['plotly_warm'] for r in results[m])}/{len(results[m])}"
                for m in modes
            )
        )
        print()
        print("## hit rate and pixel requests over the views")
        hit_rows = []
        for mode in modes:
            rs = results[mode]
            hits = sum(r["hits"] for r in rs)
            looked = hits + sum(r["misses"] for r in rs)
            hit_rows.append(
                [
                    mode,
                    len(rs),
                    f"{hits}/{looked}",
                    f"{100 * hits / looked:.1f} %" if looked else "-",
                    sum(r["pixel_requests"] for r in rs),
                    sum(r["server_pixels"] for r in rs),
                ]
            )
        if restart is not None:
            looked = restart["hits"] + restart["misses"]
            hit_rows.append(
                [
                    "cached, click after a browser restart",
                    1,
                    f"{restart['hits']}/{looked}",
                    f"{100 * restart['hits'] / looked:.1f} %" if looked else "-",
                    restart["pixel_requests"],
                    restart["server_pixels"],
                ]
            )
        print(
            table(
                [
                    "mode",
                    "views",
                    "IndexedDB hits",
                    "hit rate",
                    "pixel requests (page)",
                    "pixel requests (server)",
                ],
                hit_rows,
            )
        )
        if timer is not None:
            print(
                "\n## diagnostic cached click with timers (not in the figures): "
                f"{timer_note}; wall times, including waits for the GIL"
            )
            print(table(["call", "calls", "total s", "mean ms"], timer.rows()))
        print(f"\ntotal wall time {time.perf_counter() - started:.1f} s")
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
