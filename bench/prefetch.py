"""The study page filling the browser's cache (issue #6, request batching): the
20-series study's images brought into IndexedDB behind the thumbnails, in
batches of 16 images a request (the app) against one request per image (the
baseline, ``localStorage["studyPrefetch.batch"] = "off"``), interleaved in
one run, in headless Chromium on the real Dash app.

Setup as ``bench/cache.py``: a private Orthanc with the generated 20-series
study, ``tests.proxy.CountingProxy`` in a child process, the full Dash app
served by werkzeug on 127.0.0.1, the server's bulk loader finished before
anything is measured (so the figures are the browser's and the app's, not
Orthanc's). Each load empties IndexedDB and the HTTP cache, opens
``/study/<uid>`` and waits until ``window.studyPrefetch`` has every image of
the study fetched and ``imageCache.idle()`` (every write stored).

Figures per mode, median and p95 over ``--runs`` loads each (after one
untimed warm-up of each): ms from navigation start to every image stored;
image requests the server answered (frames and batches, the thumbnails
apart); the page's main-thread time in long tasks (> 50 ms, PerformanceObserver
``longtask``) over that time. Nothing asserts on timings.

Run from the project root::

    .venv/bin/python -m bench.prefetch             # --runs 5, about 2 minutes
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.prefetch")

import argparse
import datetime
import logging
import os
import tempfile
from pathlib import Path

from bench._common import (
    Proxy,
    Served,
    app_env,
    close_all,
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

MODES = ("batches of 16", "image by image")

RECORDER = r"""
(() => {
  const b = window.__pf = {longTasks: 0, longMs: 0};
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { b.longTasks++; b.longMs += e.duration; }
  }).observe({type: 'longtask', buffered: true});
})();
"""

SETTLED = r"""
const p = window.studyPrefetch, total = arguments[0];
return !!p && p.queued === total && p.fetched + p.cached + p.failed === total
  ? Object.assign({}, p) : null;
"""


def one_load(driver, url: str, mode: str, total: int, clock, timeout: float) -> dict:
    driver.get("about:blank")
    driver.get(url.rsplit("/study/", 1)[0] + "/healthz")  # same origin, no page
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const r = indexedDB.deleteDatabase('ctmr-images-v1');"
        "r.onsuccess = r.onerror = r.onblocked = () => done();"
    )
    driver.execute_script(
        "if (arguments[0]) localStorage.setItem('studyPrefetch.batch', 'off');"
        "else localStorage.removeItem('studyPrefetch.batch');",
        mode == "image by image",
    )
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    clock.reset()
    driver.get(url)
    state = wait_for(
        lambda: driver.execute_script(SETTLED, total),
        timeout,
        poll=0.05,
        what="every image of the study in IndexedDB",
    )
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.imageCache.idle().then(() => done(), () => done());"
    )
    ms = driver.execute_script("return performance.now()")
    page = driver.execute_script("return window.__pf")
    with clock.lock:
        records = list(clock.records)
    images = [
        r for r in records if "/frames/" in r["path"] or r["path"].endswith("/frames")
    ]
    return {
        "ms": ms,
        "requests": len(images),
        "long_ms": page["longMs"],
        "long_tasks": page["longTasks"],
        "fetched": state["fetched"],
        "failed": state["failed"],
        "batches": state.get("batches", 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prefetch")
    parser.add_argument("--runs", type=int, default=5, help="loads per mode")
    parser.add_argument("--timeout", type=float, default=120.0, help="per wait, s")
    parser.add_argument("--inproc-proxy", action="store_true")
    args = parser.parse_args(argv)
    machine = machine_note()
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="bench-prefetch-"))
    orthanc = proxy = served = driver = server = None
    try:
        study = make_study(tmp / "dicom", "twenty")
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        os.environ.update(app_env(proxy.url, orthanc, tmp / "app"))
        import app as app_module

        server = app_module.create_dash_app().server
        clock = RequestClock(server)
        served = Served(clock)
        driver = start_browser(tmp / "chrome-profile", "1920,2000")
        driver.set_script_timeout(60)
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER}
        )
        sign_in(driver, served.url)
        url = f"{served.url}/study/{study.study_uid}"
        total = sum(s.image_count for s in study.series)
        driver.get(url)  # starts the server's bulk loader
        wait_loaded(server, study.study_uid, 120)
        print(f"{total} images; load average {load_note()}", flush=True)

        results: dict[str, list[dict]] = {m: [] for m in MODES}
        for rep in range(args.runs + 1):  # the first round is a warm-up
            order = MODES if rep % 2 == 0 else MODES[::-1]
            for mode in order:
                r = one_load(driver, url, mode, total, clock, args.timeout)
                label = "warm-up" if rep == 0 else f"run {rep}"
                print(
                    f"  {label:7} {mode:15}: {r['ms']:.0f} ms, {r['requests']} "
                    f"image requests, long tasks {r['long_tasks']} "
                    f"({r['long_ms']:.0f} ms), fetched {r['fetched']}, "
                    f"failed {r['failed']}",
                    flush=True,
                )
                if rep:
                    results[mode].append(r)

        def stat(mode: str, key: str) -> str:
            values = [r[key] for r in results[mode]]
            return f"{median(values):.0f} / {p95(values):.0f}"

        print()
        print(
            f"# bench.prefetch  {datetime.datetime.now().isoformat(timespec='seconds')}"
        )
        print(f"# {machine}; load average at the end {load_note()}")
        print(f"# {total} images, {args.runs} loads per mode, median / p95")
        rows = [
            [
                mode,
                stat(mode, "ms"),
                stat(mode, "requests"),
                stat(mode, "long_ms"),
                stat(mode, "long_tasks"),
            ]
            for mode in MODES
        ]
        print(
            table(
                [
                    "mode",
                    "all stored, ms",
                    "image requests",
                    "long tasks, ms",
                    "long tasks",
                ],
                rows,
            )
        )
        base = median([r["ms"] for r in results["image by image"]])
        ratio = median([r["ms"] for r in results["batches of 16"]]) / base
        print(f"time ratio batches / image by image: {ratio:.2f}")
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
