"""The series viewer (issue #5) in headless Chromium on the real Dash app:
wheel step to painted, against go.Heatmap / go.Image baselines in the same
page; the neighbours of a far image ready after a jump; sustained cine fps;
window change to painted; memory held for a 500-image series.

Setup: a private Orthanc (``scripts.orthanc_local.LocalOrthanc``) with one
generated study of two 512 x 512 CT series (``services.demo``): ``wheel``,
240 images (125 MB of decoded frames: within the viewer's 160 MiB budget, so
the browser holds every image), and ``big``, 500 images (more than the
budget). ``tests.proxy.CountingProxy`` sits between the app and Orthanc (in a
child process), the full Dash app (``app.create_dash_app()``) is served by
werkzeug on 127.0.0.1 (threads in this process), and the server's bulk loader
has loaded the whole study before anything is measured (so "loaded on the
server" holds and the loader does not compete for the CPU). With ``--server
gunicorn`` Chromium talks to the app as the ``Procfile`` runs it instead
(``gunicorn app:server``, 2 workers x 4 threads) on the same ``CACHE_DIR``,
so with the same loaded cache. Chromium signs in once through ``/login``.

Timing in the page: ``event.timeStamp`` of the input event (wheel from CDP
``Input.dispatchMouseEvent``, keys from WebDriver) and ``performance.now()``
share the page's time origin. ``painted`` is ``performance.now()`` in a
``setTimeout(0)`` queued from an animation frame callback, i.e. after that
frame's rendering on the main thread (raster and display come after, off the
main thread, the same for every method). The viewer records its own wheel and
cine steps when ``window.viewerPerf`` is an array (``assets/viewer.js``:
``{kind, event, drawn, painted, shown}``); the rest is recorded by a script
installed before any document script (CDP
``Page.addScriptToEvaluateOnNewDocument``), which also keeps Chrome's long
animation frames (``PerformanceObserver`` type ``long-animation-frame``).

1. **Wheel**: on the ``wheel`` series with every image in the browser
   (``state().loaded.length === total``), ``--steps`` real wheel events of
   deltaY 100, each after the previous step is painted (one event, one step);
   then ``--fast-events`` events every ``--fast-interval`` ms without waiting
   (the viewer coalesces them per animation frame; Chrome may coalesce too:
   the DOM wheel events are counted).
2. **Baselines** in a div over the viewport of the same page: a ``heatmap``
   trace (512 x 512 frames of the same API as nested arrays, what a Dash
   figure carries) changed with ``Plotly.restyle(gd, {z: [frame]})``, and an
   ``image`` trace whose ``source`` is swapped to a PNG data URI
   (``/rendered?format=png``), ``--baseline-steps`` each, from the call to the
   paint: the restyle promise, then the ``load`` of the SVG ``<image>`` when its
   ``href`` changed, then the next frame as above.
3. **Jump**: ``--jumps`` fresh pages of the ``big`` series, then k typed
   into ``#image-goto`` and Enter; ms from the Enter's keydown to image k
   painted and to ``state().loaded`` holding k + 1 and k - 1 (polled every
   4 ms in the page, from before the Enter), the same from the last digit's
   ``input`` event (the viewer asks for k +- 1 as k is typed), and when the
   request carrying k (the viewer's batch of k - 1..k + 1, else k's own) was
   sent and answered (Resource Timing).
   When (``--jump-after``): ``painted``, right after the first image is
   painted (the browser's cache, IndexedDB and HTTP, emptied before each
   page: the browser has nothing, the server everything); ``settled``, the
   same once the page's preload is over (``settle``: the images nearest
   image 1 held, nothing in flight for 2 s), to images beyond those it
   holds: a jump that meets neither Dash's start nor the preload, as when a
   reader has looked at the first image a while; ``cached``, settled with
   the far half of the series in the browser's cache (IndexedDB, as the
   study page's loading leaves it) but not in memory. How (``--typing``):
   ``apart``, the digits, then the Enter once the page has had two frames
   (a person's pause between the last digit and the Enter gives it more);
   ``together``, digits and Enter in one burst (the page handles the digits'
   input events after the Enter's keydown).
4. **Cine** on the ``wheel`` series (all loaded): ``#cine-fps`` 30 and 60,
   ``#cine-play`` for ``--cine-seconds``; images painted per second from the
   viewer's cine records, and the page's animation frames per second.
5. **Window**: ``--window-changes`` presses of keys 1..5 on the viewport
   (keydown ``timeStamp`` to the next frame painted, the window checked), and
   ``--typed`` values typed into ``#wl-center`` + Enter (through Dash).
6. **Memory** in a fresh browser (``--enable-precise-memory-info``): the
   ``big`` series opened and preloaded until nothing is in flight and nothing
   more loads; then cine at 60 fps to image 500 (loop off), then Home. At each
   stage: ``state().bytes``, ``performance.memory.usedJSHeapSize``, CDP
   ``Performance.getMetrics`` JSHeapUsedSize (before and after a CDP garbage
   collection), and psutil RSS / PSS / USS of the page's renderer process
   (the renderer with the most private memory) and of every Chromium process.
   The JS heap does not hold ArrayBuffer contents (the decoded frames): the
   process figures do.
7. **Bulk loading** (issue #9): the ``big`` series from the server into a
   fresh page (browser cache and IndexedDB emptied), opened at image 1 until
   the preload settles, then End until it settles again; the page's
   main-thread long tasks (``PerformanceObserver`` ``longtask``) and long
   animation frames from the navigation on, and CDP ``Performance.getMetrics``
   ``TaskDuration`` / ``ScriptDuration`` (the page's main thread) over the two
   loads; once per ``--runs``.

Parts 3 and 7 run once per ``--modes`` entry: ``worker`` (the image requests,
their checksum and IndexedDB writes in the page's Web Worker,
``assets/imageworker.js``) and ``page`` (all on the main thread; localStorage
``imageQueue.worker`` = ``off``), in the same run.

Figures: median and p95 (nearest rank) of the pooled samples of ``--runs``
repetitions of parts 1, 2, 4 and 5 on the same loaded page. Targets (issue
#5): wheel p95 within ~2 frames (33 ms) of the event (Chrome aligns wheel
events to frames: ~17 ms go before any work), neighbours after a jump
<= 50 ms (PRD < 200 ms), cine >= 30 fps, memory <= 250 MB (PRD < 500 MB).
Nothing asserts on timings.

Run from the project root::

    .venv/bin/python -m bench.viewer                 # about 1.5 minutes
    .venv/bin/python -m bench.viewer --runs 2 --jumps 16   # about 2.5 minutes
    .venv/bin/python -m bench.viewer --skip memory --skip baseline
    .venv/bin/python -m bench.viewer --modes worker,page --skip wheel --skip cine
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.viewer")

import argparse
import datetime
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from bench._common import (
    Proxy,
    Served,
    app_env,
    close_all,
    load_note,
    machine_note,
    median,
    p95,
    start_orthanc,
    table,
    wait_for,
    wait_loaded,
)
from bench.thumbnails import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM, sign_in

MB = 1e6  # figures in MB (10^6 bytes); the viewer's budget is 128 MiB = 134.2 MB

RECORDER = r"""
(() => {
  if (window.__bench) return;
  performance.setResourceTimingBufferSize(10000);  // (250 by default)
  const b = window.__bench = {wheel: 0, enter: null, typed: null, keys: [], watchKeys: false, loaf: []};
  window.addEventListener('wheel', () => { b.wheel += 1; }, {capture: true, passive: true});
  // the go-to box's last input event (its last digit)
  window.addEventListener('input', (e) => {
    if (e.target && e.target.id === 'image-goto') b.typed = e.timeStamp;
  }, true);
  window.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.key === 'Enter' && t && (t.id === 'image-goto' || t.id === 'wl-center')) {
      b.enter = {id: t.id, ts: e.timeStamp};
    }
    if (b.watchKeys && /^[0-5]$/.test(e.key)) b.keys.push({key: e.key, event: e.timeStamp});
  }, true);
  // bubbling to window comes after the viewer's own listener on document
  window.addEventListener('keydown', (e) => {
    const rec = b.keys[b.keys.length - 1];
    if (!b.watchKeys || !rec || rec.event !== e.timeStamp || rec.drawn !== undefined) return;
    rec.drawn = performance.now();
    const s = window.dash_clientside.viewer.state();
    rec.window = s && s.window;
    requestAnimationFrame(() => setTimeout(() => { rec.painted = performance.now(); }, 0));
  });
  // the start (rAF timestamp) of every animation frame while b.frames is an array
  b.frames = null;
  (function tick(t) {
    if (b.frames) b.frames.push(t);
    requestAnimationFrame(tick);
  })(0);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        b.loaf.push({start: e.startTime, duration: e.duration, blocking: e.blockingDuration});
      }
    }).observe({type: 'long-animation-frame', buffered: true});
  } catch (err) { b.loafError = String(err); }
  b.longtask = [];
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        b.longtask.push({start: e.startTime, duration: e.duration});
      }
    }).observe({type: 'longtask', buffered: true});
  } catch (err) { b.longtaskError = String(err); }
})();
"""

STATE = (
    "return window.dash_clientside && window.dash_clientside.viewer "
    "&& window.dash_clientside.viewer.state()"
)

# wait (in the page) until the viewer has recorded `count` painted steps
WAIT_RECORDS = r"""
const [count, ms] = arguments, done = arguments[arguments.length - 1];
const limit = performance.now() + ms;
(function check() {
  const p = window.viewerPerf || [];
  if (p.length >= count && p[p.length - 1].painted !== undefined) return done(true);
  if (performance.now() > limit) return done(false);
  setTimeout(check, 2);
})();
"""

# wait until the viewer's records stop growing for `quiet` ms
WAIT_QUIET = r"""
const [quiet, ms] = arguments, done = arguments[arguments.length - 1];
const limit = performance.now() + ms;
let seen = -1, since = performance.now();
(function check() {
  const p = window.viewerPerf || [];
  const now = performance.now();
  if (p.length !== seen) { seen = p.length; since = now; }
  const last = p[p.length - 1];
  if (now - since > quiet && (!last || last.painted !== undefined)) return done(true);
  if (now > limit) return done(false);
  setTimeout(check, 5);
})();
"""

# after a goto: times (ms after the Enter) of image k painted, k-1 / k+1
# loaded, polled from before the Enter (JUMP_ARM, then JUMP_WAIT: a poll
# started once WebDriver has sent the Enter would count its round trip)
JUMP_ARM = r"""
const [k, ms] = arguments;
const b = window.__bench, v = window.dash_clientside.viewer;
const start = performance.now(), out = {shown: null, next: null, prev: null};
b.jump = null;
(function check() {
  const s = v.state(), now = performance.now();
  if (b.enter && s) {
    const loaded = new Set(s.loaded);
    if (out.next === null && (k + 1 > s.total || loaded.has(k + 1))) out.next = now - b.enter.ts;
    if (out.prev === null && (k - 1 < 1 || loaded.has(k - 1))) out.prev = now - b.enter.ts;
    if (out.shown === null && s.shown === k) {
      out.shown = -1;  // painted with the next frame
      requestAnimationFrame(() => setTimeout(() => {
        out.shown = performance.now() - b.enter.ts;
      }, 0));
    }
    if (out.next !== null && out.prev !== null && out.shown > 0) {
      out.enter = b.enter.ts;
      out.typed = b.typed === null ? null : b.enter.ts - b.typed;
      b.jump = out;
      return;
    }
  }
  if (now - start > ms) { out.timeout = true; out.state = s; b.jump = out; return; }
  setTimeout(check, 4);
})();
"""
JUMP_WAIT = r"""
const done = arguments[arguments.length - 1], b = window.__bench;
(function check() { if (b.jump) return done(b.jump); setTimeout(check, 20); })();
"""

# the go-to box shows `text` and the page has had two frames since (what a
# person's pause between the last digit and the Enter gives it)
TYPED = r"""
const [text] = arguments, done = arguments[arguments.length - 1];
const box = document.getElementById('image-goto');
(function check() {
  if (box.value !== text) return setTimeout(check, 4);
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => done(true), 0)));
})();
"""

RESOURCES = r"""
const [paths, since] = arguments;
const out = {};
const all = window.imageQueue && window.imageQueue.entries
  ? window.imageQueue.entries() : performance.getEntriesByType('resource');
for (const e of all) {
  const u = new URL(e.name), p = u.pathname;
  if (e.startTime < since) continue;
  const times = {start: e.startTime, requestStart: e.requestStart, end: e.responseEnd};
  if (paths.includes(p)) out[p] = times;
  // a batch of frames (the viewer's jump): under each of its images, 1-based
  if (p.endsWith('/images/frames')) {
    const start = Number(u.searchParams.get('start')), count = Number(u.searchParams.get('count'));
    for (let i = start + 1; i <= start + count; i++) out['image ' + i] = times;
  }
}
return out;
"""

# after the window is typed: ms from the Enter to the frame painted with it
WAIT_WINDOW = r"""
const [centre, ms] = arguments, done = arguments[arguments.length - 1];
const b = window.__bench, v = window.dash_clientside.viewer;
const start = performance.now();
(function frame() {
  const s = v.state();
  if (b.enter && s && s.window && s.window[0] === centre) {
    return setTimeout(() => done(performance.now() - b.enter.ts), 0);
  }
  if (performance.now() - start > ms) return done(null);
  requestAnimationFrame(frame);
})();
"""

BASELINE_PREPARE = r"""
const [rawUrls, pngUrls, win] = arguments, done = arguments[arguments.length - 1];
(async () => {
  const frames = [], pngs = [];
  let pngBytes = 0;
  for (const u of rawUrls) {
    const r = await fetch(u, {credentials: 'same-origin',
                              headers: {Accept: 'application/octet-stream'}});
    const rows = +r.headers.get('X-Image-Rows'), cols = +r.headers.get('X-Image-Columns');
    const a = new Int16Array(await r.arrayBuffer()), z = [];
    for (let y = 0; y < rows; y++) z.push(Array.from(a.subarray(y * cols, (y + 1) * cols)));
    frames.push(z);  // nested plain arrays, as a Dash figure's JSON gives them
  }
  for (const u of pngUrls) {
    const blob = await (await fetch(u, {credentials: 'same-origin'})).blob();
    pngBytes += blob.size;
    pngs.push(await new Promise((res) => {
      const fr = new FileReader();
      fr.onload = () => res(fr.result);
      fr.readAsDataURL(blob);
    }));
  }
  const vp = document.getElementById('viewer-viewport').getBoundingClientRect();
  const layout = {margin: {l: 0, r: 0, t: 0, b: 0}, showlegend: false,
                  paper_bgcolor: 'black', plot_bgcolor: 'black', hovermode: false,
                  xaxis: {visible: false}, dragmode: 'pan',
                  yaxis: {visible: false, autorange: 'reversed', scaleanchor: 'x'}};
  const config = {displayModeBar: false, scrollZoom: false, responsive: false};
  const make = (id) => {
    const div = document.createElement('div');
    div.id = id;
    Object.assign(div.style, {position: 'fixed', left: vp.left + 'px', top: vp.top + 'px',
                              width: vp.width + 'px', height: vp.height + 'px',
                              zIndex: 2000, background: 'black'});
    document.body.appendChild(div);
    return div;
  };
  const heat = make('bench-heatmap');
  await Plotly.newPlot(heat, [{type: 'heatmap', z: frames[0], colorscale: 'Greys',
                               zmin: win[0] - win[1] / 2,
                               zmax: win[0] + win[1] / 2, showscale: false,
                               hoverinfo: 'skip'}], layout, config);
  heat.style.display = 'none';
  const img = make('bench-image');
  await Plotly.newPlot(img, [{type: 'image', source: pngs[0], hoverinfo: 'skip'}],
                       layout, config);
  img.style.display = 'none';
  window.__base = {frames, pngs, heat, img};
  return {frames: frames.length, pngs: pngs.length, pngBytes: pngBytes,
          size: [vp.width, vp.height]};
})().then(done, (e) => done({error: String(e)}));
"""

BASELINE_RUN = r"""
const [kind, steps] = arguments, done = arguments[arguments.length - 1];
(async () => {
  const B = window.__base, gd = kind === 'heatmap' ? B.heat : B.img;
  gd.style.display = '';
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const href = (im) => im.getAttribute('href') || im.getAttribute('xlink:href');
  await frame();
  const out = [];
  for (let i = 1; i <= steps; i++) {
    const images = Array.from(gd.querySelectorAll('image'));
    const before = images.map(href);
    const loads = images.map((im) => new Promise((res) => {
      im.addEventListener('load', res, {once: true});
      setTimeout(res, 5000);
    }));
    const t0 = performance.now();
    await Plotly.restyle(gd, kind === 'heatmap'
      ? {z: [B.frames[i % B.frames.length]]}
      : {source: [B.pngs[i % B.pngs.length]]});
    const t1 = performance.now();
    const after = Array.from(gd.querySelectorAll('image'));
    let waited = false;
    for (let j = 0; j < after.length; j++) {
      if (j < images.length && after[j] === images[j] && href(after[j]) !== before[j]) {
        await loads[j];
        waited = true;
      }
    }
    const t2 = performance.now();
    await frame();
    out.push({drawn: t1 - t0, loaded: t2 - t0, painted: performance.now() - t0, waited});
    await new Promise((r) => setTimeout(r, Math.random() * 16));  // random phase
  }
  gd.style.display = 'none';
  return out;
})().then(done, (e) => done({error: String(e)}));
"""

CINE_FRAMES = r"""
const [ms] = arguments, done = arguments[arguments.length - 1];
const ts = [], start = performance.now();
requestAnimationFrame(function f(t) {
  ts.push(t);
  if (performance.now() - start > ms) return done(ts);
  requestAnimationFrame(f);
});
"""

LOAF = "return (window.__bench.loaf || []).filter(e => e.start >= arguments[0]);"

# where the page's image requests run (assets/imagequeue.js): "worker" or "page"
MODE = r"""
const mode = arguments[0];
if (mode === 'page') localStorage.setItem('imageQueue.worker', 'off');
else localStorage.removeItem('imageQueue.worker');
"""

# main-thread long tasks and long animation frames since ``since``
LONG = r"""
const since = arguments[0], b = window.__bench;
return {longtask: (b.longtask || []).filter(e => e.start >= since),
        loaf: (b.loaf || []).filter(e => e.start >= since),
        errors: [b.longtaskError || null, b.loafError || null],
        queue: window.imageQueue ? window.imageQueue.stats() : null};
"""


# -- browser ---------------------------------------------------------------------


def start_browser(profile: Path, window: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROME_FLAGS, "--enable-precise-memory-info"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={window}")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Performance.enable", {})
    driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER}
    )
    return driver


def state(driver) -> dict:
    return driver.execute_script(STATE)


def until(driver, condition: str, timeout: float, what: str = "") -> None:
    """Wait until ``condition`` (JavaScript over ``s``, the viewer's state) holds."""
    script = (
        "const v = window.dash_clientside && window.dash_clientside.viewer;"
        f"const s = v && v.state(); return !!(s && ({condition}));"
    )
    try:
        wait_for(lambda: driver.execute_script(script), timeout, 0.02, what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; state {brief(state(driver))}") from None


def brief(s: dict | None) -> dict | None:
    if not s:
        return s
    return {k: (len(v) if k == "loaded" else v) for k, v in s.items()}


def open_viewer(driver, base: str, study_uid: str, series_uid: str, fresh: bool):
    driver.get("about:blank")
    if fresh:
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.get(f"{base}/viewer/{study_uid}/{series_uid}")
    until(driver, "s.shown === s.n", 30, "the first image painted")


def wheel(driver, delta_y: float, rect: dict) -> None:
    driver.execute_cdp_cmd(
        "Input.dispatchMouseEvent",
        {
            "type": "mouseWheel",
            "x": rect["x"] + rect["width"] / 2,
            "y": rect["y"] + rect["height"] / 2,
            "deltaX": 0,
            "deltaY": delta_y,
        },
    )


def burst_wheel(driver, rect: dict, count: int, interval_ms: float) -> float:
    """Send ``count`` wheel events (deltaY 100) every ``interval_ms`` without
    waiting for each to be handled: straight on the page's DevTools socket
    (chromedriver's ``execute_cdp_cmd`` waits for Chromium's ack of each event,
    which comes after the next frame). Returns the seconds taken to send."""
    import requests
    import trio
    import trio_websocket

    addr = driver.capabilities["goog:chromeOptions"]["debuggerAddress"]
    host, port = addr.rsplit(":", 1)
    if host not in ("localhost", "127.0.0.1"):
        raise RuntimeError(f"DevTools not on this machine: {addr}")
    session = requests.Session()
    session.trust_env = False
    targets = session.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
    url = next(
        t["webSocketDebuggerUrl"]
        for t in targets
        if t.get("type") == "page" and t.get("url") == driver.current_url
    ).replace("ws://localhost:", "ws://127.0.0.1:")
    params = {
        "type": "mouseWheel",
        "x": rect["x"] + rect["width"] / 2,
        "y": rect["y"] + rect["height"] / 2,
        "deltaX": 0,
        "deltaY": 100,
    }

    async def run() -> float:
        async with trio_websocket.open_websocket_url(
            url, message_queue_size=count + 16
        ) as ws:
            t0 = trio.current_time()
            for i in range(count):
                message = {"id": i + 1, "method": "Input.dispatchMouseEvent"}
                await ws.send_message(json.dumps({**message, "params": params}))
                await trio.sleep_until(t0 + (i + 1) * interval_ms / 1000)
            sent = trio.current_time() - t0
            acked = 0
            with trio.move_on_after(15):
                while acked < count:
                    if "id" in json.loads(await ws.get_message()):
                        acked += 1
            if acked < count:
                raise RuntimeError(f"{acked} of {count} wheel events acknowledged")
            return sent

    return trio.run(run)


def viewport_rect(driver) -> dict:
    return driver.execute_script(
        "return document.getElementById('viewer-viewport')"
        ".getBoundingClientRect().toJSON()"
    )


def press(driver, *keys) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "viewer-viewport").send_keys(*keys)


def type_into(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text, Keys.ENTER)


def now_ms(driver) -> float:
    return driver.execute_script("return performance.now()")


def long_frames(driver, since: float) -> list[dict]:
    return driver.execute_script(LOAF, since)


def loaf_note(frames: list[dict]) -> str:
    if not frames:
        return "no long animation frame (> 50 ms)"
    d = sorted(f["duration"] for f in frames)
    return (
        f"{len(d)} long animation frames (> 50 ms): median {median(d):.0f} ms, "
        f"longest {d[-1]:.0f} ms"
    )


# -- figures ---------------------------------------------------------------------


def ms(values: list[float]) -> tuple[str, str]:
    values = [v for v in values if v is not None]
    if not values:
        return "-", "-"
    return f"{median(values):.1f}", f"{p95(values):.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def process_memory(driver) -> dict:
    """RSS / PSS / USS of the page's renderer (the renderer with the most
    private memory) and of every Chromium process under chromedriver."""
    import psutil

    rows = []
    root = psutil.Process(driver.service.process.pid)
    for proc in root.children(recursive=True):
        try:
            cmd = proc.cmdline()
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        if not cmd or "chrom" not in os.path.basename(cmd[0]):
            continue
        kind = next(
            (a.split("=", 1)[1] for a in cmd if a.startswith("--type=")), "browser"
        )
        rows.append(dict(kind=kind, rss=info.rss, pss=info.pss, uss=info.uss))
    renderers = [r for r in rows if r["kind"] == "renderer"]
    page = max(renderers, key=lambda r: r["uss"]) if renderers else {}
    return dict(
        renderer_rss=page.get("rss", float("nan")),
        renderer_pss=page.get("pss", float("nan")),
        renderer_uss=page.get("uss", float("nan")),
        renderers=len(renderers),
        processes=len(rows),
        all_rss=sum(r["rss"] for r in rows),
        all_pss=sum(r["pss"] for r in rows),
    )


def js_heap(driver) -> dict:
    def metric(name: str) -> float:
        metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
        return next((m["value"] for m in metrics if m["name"] == name), float("nan"))

    pm = driver.execute_script(
        "const m = performance.memory; return m ? m.usedJSHeapSize : null"
    )
    out = dict(perf_memory=pm, cdp_used=metric("JSHeapUsedSize"))
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    out["cdp_used_gc"] = metric("JSHeapUsedSize")
    out["cdp_total_gc"] = metric("JSHeapTotalSize")
    return out


def memory_row(driver, stage: str) -> list:
    s = state(driver)
    heap = js_heap(driver)
    time.sleep(0.3)  # let the collection settle before reading the processes
    proc = process_memory(driver)
    return [
        stage,
        f"{len(s['loaded'])} / {s['total']}",
        f"{s['bytes'] / MB:.1f}",
        f"{heap['perf_memory'] / MB:.1f}" if heap["perf_memory"] else "-",
        f"{heap['cdp_used'] / MB:.1f}",
        f"{heap['cdp_used_gc'] / MB:.1f}",
        f"{proc['renderer_rss'] / MB:.0f}",
        f"{proc['renderer_pss'] / MB:.0f}",
        f"{proc['renderer_uss'] / MB:.0f}",
        f"{proc['all_rss'] / MB:.0f} ({proc['processes']})",
        f"{proc['all_pss'] / MB:.0f}",
    ]


def settle(driver, timeout: float) -> float:
    """Wait until nothing is in flight and the images held stop growing (2 s)."""
    t0 = time.monotonic()
    last, since = -1, time.monotonic()
    for _ in range(int(timeout / 0.25) + 2):
        s = state(driver)
        held = len(s["loaded"])
        if held != last or s["inFlight"]:
            last, since = held, time.monotonic()
        elif time.monotonic() - since >= 2.0:
            return time.monotonic() - t0 - 2.0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"preload did not settle: {brief(s)}")
        time.sleep(0.25)
    raise TimeoutError("preload did not settle")


# -- the parts -------------------------------------------------------------------


def part_wheel(driver, args, total: int) -> dict:
    """One wheel event per step (each painted before the next), then a fast burst."""
    rect = viewport_rect(driver)
    press_home(driver)
    driver.execute_script(
        "window.viewerPerf = []; window.__bench.wheel = 0; window.__bench.frames = [];"
    )
    t_start = now_ms(driver)
    deadline = time.monotonic() + args.part_timeout
    n, direction, lost = 1, 1, 0
    for i in range(args.steps):
        if not 1 <= n + direction <= total:
            direction = -direction
        wheel(driver, 100 * direction, rect)
        n += direction
        if not driver.execute_async_script(WAIT_RECORDS, i + 1 - lost, 3000):
            lost += 1  # the event did not make one step (nothing recorded)
            n = state(driver)["n"]
        if time.monotonic() > deadline:
            print(f"  wheel: part timeout after {i + 1} steps", flush=True)
            break
    steps = driver.execute_script("return window.viewerPerf")
    dom_events = driver.execute_script("return window.__bench.wheel")
    frames_steps = driver.execute_script("return window.__bench.frames")
    loaf_steps = long_frames(driver, t_start)

    # fast: one event every --fast-interval ms, no waiting
    press_home(driver)
    start_n = state(driver)["n"]
    driver.execute_script(
        "window.viewerPerf = []; window.__bench.wheel = 0; window.__bench.frames = [];"
    )
    t_fast = now_ms(driver)
    events = min(args.fast_events, total - start_n)
    try:
        sent_s, how = burst_wheel(driver, rect, events, args.fast_interval), "pipelined"
    except Exception as exc:  # no DevTools socket: one CDP call after another
        print(f"  fast wheel: pipelined CDP failed ({exc!r}); sequential", flush=True)
        t0 = time.perf_counter()
        for _ in range(events):
            wheel(driver, 100, rect)
        sent_s, how = time.perf_counter() - t0, "sequential"
    driver.execute_async_script(WAIT_QUIET, 300, 10000)
    fast = driver.execute_script("return window.viewerPerf")
    fast_dom = driver.execute_script("return window.__bench.wheel")
    frames_fast = driver.execute_script(
        "const f = window.__bench.frames; window.__bench.frames = null; return f"
    )
    aligned(steps, frames_steps)
    aligned(fast, frames_fast)
    end_n = state(driver)["n"]
    return dict(
        steps=[r for r in steps if r.get("kind") == "wheel"],
        dom_events=dom_events,
        lost=lost,
        loaf_steps=loaf_steps,
        fast=[r for r in fast if r.get("kind") == "wheel"],
        fast_sent=events,
        fast_rate=events / sent_s if sent_s else float("nan"),
        fast_how=how,
        fast_dom=fast_dom,
        fast_images=end_n - start_n,
        loaf_fast=long_frames(driver, t_fast),
    )


def aligned(records: list[dict], frames: list[float]) -> None:
    """Add ``frame``: the start of the animation frame in which each step was drawn."""
    frames = sorted(frames or [])
    for r in records:
        before = [f for f in frames if f <= r["drawn"]]
        r["frame"] = before[-1] if before else None


def press_home(driver) -> None:
    from selenium.webdriver.common.keys import Keys

    press(driver, Keys.HOME)
    until(driver, "s.n === 1 && s.shown === 1", 10, "image 1")


def part_baseline(driver, args, raw_urls, png_urls, prepared: dict | None) -> dict:
    if prepared is None:
        win = state(driver)["window"]
        prepared = driver.execute_async_script(
            BASELINE_PREPARE, raw_urls, png_urls, win
        )
        if "error" in prepared:
            raise RuntimeError(f"baseline preparation: {prepared['error']}")
    out = dict(prepared=prepared)
    for kind in ("heatmap", "image"):
        t0 = now_ms(driver)
        rec = driver.execute_async_script(BASELINE_RUN, kind, args.baseline_steps)
        if isinstance(rec, dict) and "error" in rec:
            raise RuntimeError(f"baseline {kind}: {rec['error']}")
        out[kind] = rec
        out[f"loaf_{kind}"] = long_frames(driver, t0)
    return out


def part_cine(driver, args) -> dict:
    from selenium.webdriver.common.by import By

    out = {}
    for fps in (30, 60):
        press_home(driver)
        type_into(driver, "cine-fps", str(fps))
        until(driver, f"s.fps === {fps}", 10, f"fps {fps}")
        driver.execute_script("window.viewerPerf = [];")
        t0 = now_ms(driver)
        driver.find_element(By.ID, "cine-play").click()
        until(driver, "s.playing", 5, "cine playing")
        frames = driver.execute_async_script(CINE_FRAMES, args.cine_seconds * 1000)
        driver.find_element(By.ID, "cine-pause").click()
        until(driver, "!s.playing", 5, "cine paused")
        rec = [
            r
            for r in driver.execute_script("return window.viewerPerf")
            if r.get("kind") == "cine" and r.get("painted") is not None
        ]
        out[fps] = dict(records=rec, frames=frames, loaf=long_frames(driver, t0))
    press_home(driver)
    return out


def part_window(driver, args, presets: dict) -> dict:
    keys = [str(1 + i % 5) for i in range(args.window_changes)]
    press(driver, "0")  # start from the image's default window
    driver.execute_script("window.__bench.keys = []; window.__bench.watchKeys = true;")
    t0 = now_ms(driver)
    for i, key in enumerate(keys):
        press(driver, key)
        driver.execute_async_script(
            "const [i, ms] = arguments, done = arguments[arguments.length - 1];"
            "const b = window.__bench, limit = performance.now() + ms;"
            "(function c() { const r = b.keys[i];"
            " if (r && r.painted !== undefined) return done(true);"
            " if (performance.now() > limit) return done(false); setTimeout(c, 2); })();",
            i,
            3000,
        )
    records = driver.execute_script(
        "window.__bench.watchKeys = false; return window.__bench.keys"
    )
    loaf_keys = long_frames(driver, t0)
    order = list(presets)
    wrong = sum(
        1 for r in records if r.get("window") != list(presets[order[int(r["key"]) - 1]])
    )
    typed = []
    t1 = now_ms(driver)
    for i in range(args.typed):
        centre = 20 + 7 * i  # distinct, never equal to a preset's centre
        driver.execute_script("window.__bench.enter = null;")
        type_into(driver, "wl-center", str(centre))
        typed.append(driver.execute_async_script(WAIT_WINDOW, centre, 5000))
    press(driver, "0")
    return dict(
        keys=records,
        wrong=wrong,
        loaf_keys=loaf_keys,
        typed=typed,
        loaf_typed=long_frames(driver, t1),
    )


def set_mode(driver, base: str, mode: str) -> None:
    """Image requests in the page's worker or on its main thread from the next
    page on (a localStorage switch read by assets/imagequeue.js)."""
    if not driver.current_url.startswith(base):
        driver.get(base + "/")
    driver.execute_script(MODE, mode)


def main_thread_seconds(driver) -> dict:
    """Chromium's cumulative main-thread figures of the page (CDP metrics, s)."""
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    names = ("TaskDuration", "ScriptDuration")
    return {m["name"]: m["value"] for m in metrics if m["name"] in names}


def part_bulk(driver, args, base, study_uid, series_uid, mode: str) -> dict:
    """Issue #9: main-thread long tasks while the ``big`` series loads from the
    server into a fresh page (browser cache and IndexedDB empty): opened at
    image 1 until the preload settles, then End until it settles again."""
    set_mode(driver, base, mode)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.imageCache.clear().then(() => done(true), () => done(false));"
    )
    open_viewer(driver, base, study_uid, series_uid, fresh=True)
    before = main_thread_seconds(driver)
    since = now_ms(driver)  # the page's own start is not the bulk load
    page_start = driver.execute_script(LONG, 0)
    t0 = time.monotonic()
    settle(driver, args.part_timeout)
    first_s = time.monotonic() - t0 - 2.0
    from selenium.webdriver.common.keys import Keys

    press(driver, Keys.END)
    t1 = time.monotonic()
    settle(driver, args.part_timeout)
    end_s = time.monotonic() - t1 - 2.0
    after = main_thread_seconds(driver)
    long = driver.execute_script(LONG, since)
    frames = driver.execute_script(
        "return window.imageQueue.entries()"
        ".filter(e => /\\/frames\\/\\d+$/.test(e.name)).length"
    )
    return dict(
        mode=mode,
        first_s=first_s,
        end_s=end_s,
        frames=frames,
        held=len(state(driver)["loaded"]),
        task_s=after.get("TaskDuration", 0) - before.get("TaskDuration", 0),
        script_s=after.get("ScriptDuration", 0) - before.get("ScriptDuration", 0),
        start_longtask=[e for e in page_start["longtask"] if e["start"] < since],
        **long,
    )


NEIGHBOURS_HELD = 3  # the viewer's +-3 (assets/viewer.js NEIGHBOURS)


def far_targets(lo: int, hi: int, count: int) -> list[int]:
    """``count`` images spread over [lo, hi], interleaved so that consecutive
    jumps are far apart."""
    if count == 1:
        return [(lo + hi) // 2]
    spread = [lo + round(i * (hi - lo) / (count - 1)) for i in range(count)]
    return spread[::2] + spread[1::2]


def jump_targets(total: int, count: int) -> list[int]:
    """Far images (>= 1/8 of the series from image 1), spread over the series."""
    return far_targets(max(3, total // 8), total - 2, count)


def part_jumps(
    driver, args, base, study_uid, series_uid, urls, after: str, typing: str
) -> list[dict]:
    """Jumps on fresh pages (module docstring, part 3). ``after``: painted,
    settled or cached; ``typing``: apart (the digits, then the Enter once the
    page has had two frames) or together (digits and Enter in one burst)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = []
    deadline = time.monotonic() + args.part_timeout * (1 if after == "painted" else 4)
    targets = jump_targets(len(urls), args.jumps)
    if after == "cached":  # the far images into the browser's cache first
        empty_browser_cache(driver, base)
        driver.get(f"{base}/viewer/{study_uid}/{series_uid}?image={len(urls)}")
        until(driver, "s.shown === s.n", 30, "the last image painted")
        settle(driver, args.part_timeout)
        wait_for(
            lambda: driver.execute_script(CACHED, urls[len(urls) // 2 :]),
            args.part_timeout,
            0.25,
            "the far half in the browser's cache",
        )
    for n, k in enumerate(targets):
        if time.monotonic() > deadline:
            print("  jumps: part timeout", flush=True)
            break
        if after != "cached":  # nothing of the series in the browser
            empty_browser_cache(driver, base)
        open_viewer(driver, base, study_uid, series_uid, fresh=True)
        if after != "painted":
            settle(driver, args.part_timeout)
            held = state(driver)["loaded"]
            lo = max(held, default=0) + NEIGHBOURS_HELD + 10  # none of k +- 1 held
            if lo >= len(urls) - 1:
                raise RuntimeError("the series is held whole: no far image to jump to")
            k = far_targets(lo, len(urls) - 1, len(targets))[n]
        if after == "cached":
            assert driver.execute_script(CACHED, urls[k - 2 : k + 1]), k
        before = state(driver)
        driver.execute_script("window.__bench.enter = window.__bench.typed = null;")
        t0 = now_ms(driver)
        box = driver.find_element(By.ID, "image-goto")
        driver.execute_script(JUMP_ARM, k, 15000)
        if typing == "apart":
            box.send_keys(str(k))
            driver.execute_async_script(TYPED, str(k))
            box.send_keys(Keys.ENTER)
        else:
            box.send_keys(str(k), Keys.ENTER)
        rec = driver.execute_async_script(JUMP_WAIT)
        paths = [urls[i - 1] for i in (k - 1, k, k + 1) if 1 <= i <= len(urls)]
        res = driver.execute_script(RESOURCES, paths, t0)
        enter = rec.get("enter") or t0
        timing = {}
        for label, i in (("prev", k - 1), ("k", k), ("next", k + 1)):
            entry = (
                res.get(urls[i - 1]) or res.get(f"image {i}")
                if 1 <= i <= len(urls)
                else None
            )
            if entry:
                timing[label] = {
                    "sent": entry["start"] - enter,
                    "answered": entry["end"] - enter,
                }
        rec.update(
            k=k,
            held_before=len(before["loaded"]),
            in_flight_before=before["inFlight"],
            resources=timing,
            loaf=long_frames(driver, t0),
        )
        out.append(rec)
        if rec.get("timeout"):
            s = rec.get("state") or {}
            rec["stuck"] = s.get("inFlight") == 0 and k not in s.get("loaded", [])
            print(
                f"  jump to {k}: timed out; Enter seen {rec.get('enter') is not None}"
                f", {driver.execute_script('return window.__bench.enter')}; state n "
                f"{s.get('n')}, shown {s.get('shown')}, held {len(s.get('loaded', []))}"
                f", in flight {s.get('inFlight')}; box "
                f"{driver.find_element(By.ID, 'image-goto').get_attribute('value')!r}"
                f", feedback {driver.find_element(By.ID, 'goto-feedback').text!r}",
                flush=True,
            )
        print(
            f"  jump to {k:3}: painted {fmt(rec.get('shown'))} ms, k+1 loaded "
            f"{fmt(rec.get('next'))} ms, k-1 loaded {fmt(rec.get('prev'))} ms "
            f"(held {rec['held_before']} images, {rec['in_flight_before']} in flight "
            "at the Enter)",
            flush=True,
        )
    driver.get("about:blank")
    return out


CACHED = "return arguments[0].every(u => window.imageCache.has(u))"


def empty_browser_cache(driver, base: str) -> None:
    """No page open: IndexedDB of the app's origin deleted, HTTP cache emptied."""
    driver.get("about:blank")
    driver.execute_cdp_cmd(
        "Storage.clearDataForOrigin", {"origin": base, "storageTypes": "indexeddb"}
    )
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})


def fmt(v) -> str:
    return "-" if v is None or v < 0 else f"{v:.0f}"


def part_memory(driver, args, base, study_uid, series_uid) -> dict:
    from selenium.webdriver.common.by import By

    rows = []
    open_viewer(driver, base, study_uid, series_uid, fresh=True)
    t_open = time.monotonic()
    settle_s = settle(driver, args.part_timeout)
    rows.append(memory_row(driver, "opened at image 1, preload settled"))
    preload_s = time.monotonic() - t_open - 2.0

    # cine at 60 fps to the last image, loop off, sampling the renderer's memory
    type_into(driver, "cine-fps", "60")
    until(driver, "s.fps === 60", 10, "fps 60")
    driver.find_element(By.ID, "cine-loop").click()
    time.sleep(0.3)  # the settings callback (no state field to wait for)
    driver.execute_script("window.viewerPerf = [];")
    t0 = now_ms(driver)
    driver.find_element(By.ID, "cine-play").click()
    until(driver, "s.playing", 10, "cine playing")
    peak = dict(rss=0, uss=0, bytes=0, held=0)
    deadline = time.monotonic() + args.part_timeout
    t_cine = time.monotonic()
    for _ in range(int(args.part_timeout / 0.5) + 2):
        s = state(driver)
        proc = process_memory(driver)
        peak["rss"] = max(peak["rss"], proc["renderer_rss"])
        peak["uss"] = max(peak["uss"], proc["renderer_uss"])
        peak["bytes"] = max(peak["bytes"], s["bytes"])
        peak["held"] = max(peak["held"], len(s["loaded"]))
        if not s["playing"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    cine_s = time.monotonic() - t_cine
    end = state(driver)
    if end["playing"]:
        driver.find_element(By.ID, "cine-pause").click()
    cine = [
        r
        for r in driver.execute_script("return window.viewerPerf")
        if r.get("kind") == "cine"
    ]
    driver.execute_script("window.viewerPerf = null;")
    loaf = long_frames(driver, t0)
    settle(driver, args.part_timeout)
    rows.append(memory_row(driver, f"after cine 60 fps to image {end['n']}"))
    press_home(driver)
    settle(driver, args.part_timeout)
    rows.append(memory_row(driver, "after Home (back to image 1), settled"))
    return dict(
        rows=rows,
        peak=peak,
        settle_s=settle_s,
        preload_s=preload_s,
        cine=cine,
        cine_s=cine_s,
        cine_end=end["n"],
        loaf=loaf,
    )


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.viewer")
    parser.add_argument("--runs", type=int, default=1, help="repeat parts 1, 2, 4, 5")
    parser.add_argument("--steps", type=int, default=200, help="wheel steps per run")
    parser.add_argument("--fast-events", type=int, default=200)
    parser.add_argument("--fast-interval", type=float, default=8.0, help="ms")
    parser.add_argument("--baseline-steps", type=int, default=40)
    parser.add_argument("--jumps", type=int, default=12)
    parser.add_argument("--cine-seconds", type=float, default=6.0)
    parser.add_argument("--window-changes", type=int, default=60)
    parser.add_argument("--typed", type=int, default=20, help="#wl-center values")
    parser.add_argument("--wheel-images", type=int, default=240)
    parser.add_argument("--big-images", type=int, default=500)
    parser.add_argument("--window", default="1600,1000", help="browser window W,H")
    parser.add_argument("--part-timeout", type=float, default=120.0, help="s")
    parser.add_argument("--skip", action="append", default=[], help="part to skip")
    parser.add_argument("--inproc-proxy", action="store_true")
    parser.add_argument(
        "--jump-after",
        default="painted,settled",
        help="when the jumps come: painted (right after the fresh page's first "
        "image), settled (after its preload): painted,settled",
    )
    parser.add_argument(
        "--typing",
        default="apart",
        help="how #image-goto is typed: apart (the digits, then the Enter once "
        "the page has had two frames, as a person types), together (digits and "
        "Enter in one burst): apart,together",
    )
    parser.add_argument(
        "--server",
        choices=("werkzeug", "gunicorn"),
        default="werkzeug",
        help="what the browser talks to: the app in this process (werkzeug, "
        "threads) or the Procfile's gunicorn, 2 workers x 4 threads, on the same "
        "CACHE_DIR",
    )
    parser.add_argument(
        "--modes",
        default="worker,page",
        help="where image requests run for the jump and bulk parts: worker,page",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10:
        parser.error("--runs must be 1..10")
    if args.steps < 1 or args.wheel_images < 3 or args.big_images < 10:
        parser.error("too few steps or images")
    machine = machine_note()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from services.demo import SeriesSpec, generate_study

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-viewer-"))
    orthanc = proxy = served = driver = server = gunicorn = None
    loads = [f"start {load_note()}"]
    try:
        study = generate_study(
            tmp / "dicom",
            (
                SeriesSpec(
                    "CT wheel", "CT", 1, args.wheel_images, 512, 512, 1.0, 0.7, "thorax"
                ),
                SeriesSpec(
                    "CT big", "CT", 2, args.big_images, 512, 512, 1.0, 0.75, "abdomen"
                ),
            ),
            patient_name="BENCH^VIEWER",
            patient_id="BENCHVIEW",
            accession="BENCHVIEW",
            seed=5,
        )
        small, big = study.series
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        os.environ.update(app_env(proxy.url, orthanc, tmp / "app"))
        import app as app_module

        dash_app = app_module.create_dash_app()
        from pages.viewer import CT_PRESETS, frame_url  # after the app (pages)

        server = dash_app.server
        served = Served(server)
        pacs, loader = server.extensions["pacs"], server.extensions["loader"]
        loader.start()  # (the app starts it on its first request)
        loader.prefetch(study.study_uid)
        urls = {
            s.series_uid: [
                frame_url(i) for i in pacs.list_images(study.study_uid, s.series_uid)
            ]
            for s in study.series
        }
        t_load = time.perf_counter()
        wait_loaded(server, study.study_uid, 2 * args.part_timeout)
        server_load_s = time.perf_counter() - t_load
        base = served.url
        if args.server == "gunicorn":  # shares this app's CACHE_DIR: loaded too
            from bench.load import App, Mode

            gunicorn = App(Mode(2, threads=4), {}, tmp / "gunicorn.log")
            gunicorn.wait_ready()
            base = gunicorn.url
        driver = start_browser(tmp / "chrome-profile", args.window)
        sign_in(driver, base)
        setup_s = time.perf_counter() - started
        print(
            f"setup {setup_s:.0f} s (server loader {server_load_s:.0f} s for "
            f"{small.image_count + big.image_count} images); load {load_note()}",
            flush=True,
        )

        results: dict[str, object] = {}
        wheel_runs, base_runs, cine_runs, window_runs = [], [], [], []
        presets = {k: (c, w) for k, (_n, c, w) in CT_PRESETS.items()}
        small_urls = urls[small.series_uid]
        if not {"wheel", "baseline", "cine", "window"} <= set(args.skip):
            open_viewer(driver, base, study.study_uid, small.series_uid, True)
            t = time.monotonic()
            until(
                driver,
                "s.loaded.length === s.total && s.inFlight === 0",
                args.part_timeout,
                "every image of the wheel series in the browser",
            )
            print(
                f"wheel series: {small.image_count} images in the browser "
                f"{time.monotonic() - t:.1f} s after the first image",
                flush=True,
            )
            prepared = None
            for run in range(1, args.runs + 1):
                if "wheel" not in args.skip:
                    wheel_runs.append(part_wheel(driver, args, small.image_count))
                    w = wheel_runs[-1]
                    print(
                        f"  run {run} wheel: {len(w['steps'])} steps, event->painted "
                        f"median {ms([r['painted'] - r['event'] for r in w['steps']])[0]} "
                        f"ms; fast: {w['fast_sent']} events, {len(w['fast'])} "
                        f"updates, {w['fast_images']} images; load {load_note()}",
                        flush=True,
                    )
                if "baseline" not in args.skip:
                    picks = list(range(0, small.image_count, small.image_count // 20))
                    raw = [small_urls[i] for i in picks[:20]]
                    png = [u + "/rendered?format=png" for u in raw]
                    b = part_baseline(driver, args, raw, png, prepared)
                    prepared = b["prepared"]
                    base_runs.append(b)
                    print(
                        f"  run {run} baselines: heatmap painted median "
                        f"{ms([r['painted'] for r in b['heatmap']])[0]} ms, image "
                        f"{ms([r['painted'] for r in b['image']])[0]} ms; "
                        f"load {load_note()}",
                        flush=True,
                    )
                if "cine" not in args.skip:
                    cine_runs.append(part_cine(driver, args))
                    print(f"  run {run} cine done; load {load_note()}", flush=True)
                if "window" not in args.skip:
                    window_runs.append(part_window(driver, args, presets))
                    print(f"  run {run} window done; load {load_note()}", flush=True)
            loads.append(f"after parts 1, 2, 4, 5 {load_note()}")
        modes = [m for m in args.modes.split(",") if m]
        jumps: dict[str, list[dict]] = {}
        for mode in modes if "jump" not in args.skip else []:
            set_mode(driver, base, mode)
            for after in args.jump_after.split(","):
                for typing in args.typing.split(","):
                    label = f"{mode}, {after}" + (
                        ", digits and Enter at once" if typing == "together" else ""
                    )
                    jumps[label] = part_jumps(
                        driver,
                        args,
                        base,
                        study.study_uid,
                        big.series_uid,
                        urls[big.series_uid],
                        after,
                        typing,
                    )
                    loads.append(f"after the jumps ({label}) {load_note()}")
        bulk: list[dict] = []
        for _ in range(args.runs if "bulk" not in args.skip else 0):
            for mode in modes:
                bulk.append(
                    part_bulk(driver, args, base, study.study_uid, big.series_uid, mode)
                )
                b = bulk[-1]
                print(
                    f"  bulk ({mode}): {b['frames']} frames, {len(b['longtask'])} "
                    f"long tasks, main thread {b['task_s']:.2f} s; load {load_note()}",
                    flush=True,
                )
            loads.append(f"after the bulk loads {load_note()}")
        if modes:
            set_mode(driver, base, modes[0])
        memory = None
        if "memory" not in args.skip:
            driver.quit()
            driver = start_browser(tmp / "chrome-profile-2", args.window)
            sign_in(driver, base)
            memory = part_memory(driver, args, base, study.study_uid, big.series_uid)
            loads.append(f"after the memory part {load_note()}")
        results.update(
            wheel=wheel_runs,
            baseline=base_runs,
            cine=cine_runs,
            window=window_runs,
            jumps=jumps,
            bulk=bulk,
            memory=memory,
        )
        report(args, machine, loads, setup_s, study, results)
        print(f"total wall time {time.perf_counter() - started:.0f} s")
        return 0
    finally:
        if gunicorn is not None:
            gunicorn.close()
        close_all(
            driver=driver,
            server=server,
            served=served,
            proxy=proxy,
            orthanc=orthanc,
            tmp=tmp,
        )


def report(args, machine, loads, setup_s, study, results) -> None:
    small, big = study.series
    print()
    print(f"# bench.viewer  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"machine: {machine}")
    print(f"load averages (1/5/15 min): {'; '.join(loads)}")
    print(
        f"series: wheel {small.image_count} x 512 x 512 CT, big {big.image_count} x "
        f"512 x 512 CT; runs {args.runs}; window {args.window}; setup {setup_s:.0f} s;"
        f" server {args.server}"
    )

    wheel_runs = results["wheel"]
    base_runs = results["baseline"]
    if wheel_runs:
        steps = [r for w in wheel_runs for r in w["steps"]]
        fast = [r for w in wheel_runs for r in w["fast"]]
        s_drawn = [r["drawn"] - r["event"] for r in steps]
        s_paint = [r["painted"] - r["event"] for r in steps]
        f_drawn = [r["drawn"] - r["event"] for r in fast]
        f_paint = [r["painted"] - r["event"] for r in fast]
        not_shown = sum(1 for r in steps + fast if not r.get("shown"))
        s_wait = [r["frame"] - r["event"] for r in steps if r.get("frame") is not None]
        s_work = [
            r["painted"] - r["frame"] for r in steps if r.get("frame") is not None
        ]
        f_wait = [r["frame"] - r["event"] for r in fast if r.get("frame") is not None]
        f_work = [r["painted"] - r["frame"] for r in fast if r.get("frame") is not None]
        rows = [
            [
                "viewer, 1 event per step (each painted before the next)",
                f"{len(steps)} steps / {sum(w['dom_events'] for w in wheel_runs)} "
                "DOM events",
                *ms(s_drawn),
                *ms(s_paint),
            ],
            [
                f"viewer, fast: an event every {args.fast_interval:g} ms "
                f"(sent at {median([w['fast_rate'] for w in wheel_runs]):.0f}/s, "
                f"{wheel_runs[0]['fast_how']})",
                f"{sum(w['fast_sent'] for w in wheel_runs)} sent / "
                f"{sum(w['fast_dom'] for w in wheel_runs)} DOM events / "
                f"{len(fast)} updates / "
                f"{sum(w['fast_images'] for w in wheel_runs)} images",
                *ms(f_drawn),
                *ms(f_paint),
            ],
        ]
        if base_runs:
            for kind, label in (
                ("heatmap", "baseline: go.Heatmap, Plotly.restyle z (512 x 512)"),
                ("image", "baseline: go.Image, Plotly.restyle source (PNG data URI)"),
            ):
                recs = [r for b in base_runs for r in b[kind]]
                rows.append(
                    [
                        label,
                        f"{len(recs)} steps ({sum(1 for r in recs if r['waited'])} "
                        "waited for the <image> load)",
                        *ms([r["drawn"] for r in recs]),
                        *ms([r["painted"] for r in recs]),
                    ]
                )
        print()
        print("## 1-2. Wheel step to painted (ms; baselines: from the call)")
        print(
            table(
                [
                    "method",
                    "count",
                    "to drawn p50",
                    "to drawn p95",
                    "to painted p50",
                    "to painted p95",
                ],
                rows,
            )
        )
        if not_shown:
            print(f"\n{not_shown} wheel updates drew nothing (image not loaded)")
        lost = sum(w["lost"] for w in wheel_runs)
        if lost:
            print(f"\n{lost} wheel events made no step within 3 s")
        print()
        print(
            "Frame alignment (viewer): the event waits for the animation frame in "
            "which the step is drawn, then the frame's work and rendering:"
        )
        print(
            table(
                [
                    "run",
                    "event->frame start p50",
                    "p95",
                    "frame start->painted p50",
                    "p95",
                ],
                [
                    ["1 event per step", *ms(s_wait), *ms(s_work)],
                    ["fast", *ms(f_wait), *ms(f_work)],
                ],
            )
        )
        print()
        print(
            f"one-step wheel event->painted: median {median(s_paint):.1f} ms, p95 "
            f"{p95(s_paint):.1f} ms; target p95 <= 33 ms (two frames), floor ~17 ms"
        )
        for run, w in enumerate(wheel_runs, 1):
            print(
                f"run {run} long frames: steps: {loaf_note(w['loaf_steps'])}; fast: "
                f"{loaf_note(w['loaf_fast'])}"
            )
        if base_runs:
            prep = base_runs[0]["prepared"]
            print(
                f"baselines: {prep['frames']} raw frames and {prep['pngs']} PNGs "
                f"(mean {prep['pngBytes'] / prep['pngs'] / 1000:.0f} kB) cycled, in a "
                f"{prep['size'][0]:.0f} x {prep['size'][1]:.0f} px div over the viewport"
            )
            ratio_rows = []
            for kind in ("heatmap", "image"):
                recs = [r["painted"] for b in base_runs for r in b[kind]]
                ratio_rows.append(
                    [
                        f"viewer event->painted / {kind} call->painted",
                        ratio(median(s_paint), median(recs)),
                        ratio(p95(s_paint), p95(recs)),
                    ]
                )
                ratio_rows.append(
                    [
                        f"viewer frame start->painted / {kind} call->painted",
                        ratio(median(s_work), median(recs)),
                        ratio(p95(s_work), p95(recs)),
                    ]
                )
            print()
            print(table(["to painted", "ratio of medians", "ratio of p95"], ratio_rows))
            for run, b in enumerate(base_runs, 1):
                print(
                    f"run {run} long frames: heatmap: {loaf_note(b['loaf_heatmap'])}; image: "
                    f"{loaf_note(b['loaf_image'])}"
                )

    for mode, jumps in results["jumps"].items():
        report_jumps(jumps, big, mode)
    if results["cine"]:
        report_cine(results["cine"], small, args)
    report_rest(results, big)
    if results["bulk"]:
        report_bulk(results["bulk"], big)


RAW_JUMP_KEYS = ("k", "shown", "next", "prev", "typed", "timeout", "stuck")


def report_jumps(jumps, big, mode) -> None:
    if jumps:
        done = [j for j in jumps if not j.get("timeout")]

        def col(key):
            return [j[key] for j in done if j.get(key) is not None]

        both = [max(j["next"], j["prev"]) for j in done]
        # from the last digit typed: the page asks for k +- 1 from there on
        gaps = [j.get("typed") for j in done]
        typed = [b + g for b, g in zip(both, gaps, strict=True) if g is not None]
        gaps = [g for g in gaps if g is not None]

        def res(label, part):
            return [
                j["resources"][label][part]
                for j in done
                if label in j["resources"] and j["resources"][label][part] is not None
            ]

        rows = [
            ["image k painted", len(col("shown")), *ms(col("shown"))],
            ["k + 1 loaded (decoded, held)", len(col("next")), *ms(col("next"))],
            ["k - 1 loaded", len(col("prev")), *ms(col("prev"))],
            ["**k - 1 and k + 1 loaded**", len(both), *ms(both)],
            ["(the last digit to the Enter)", len(gaps), *ms(gaps)],
            ["k - 1 and k + 1 loaded, from the last digit", len(typed), *ms(typed)],
            # (one request for k - 1..k + 1 when the viewer asked a batch)
            ["request for k sent", len(res("k", "sent")), *ms(res("k", "sent"))],
            [
                "answer for k received",
                len(res("k", "answered")),
                *ms(res("k", "answered")),
            ],
            [
                "request for k + 1 sent",
                len(res("next", "sent")),
                *ms(res("next", "sent")),
            ],
            [
                "answer for k + 1 received",
                len(res("next", "answered")),
                *ms(res("next", "answered")),
            ],
        ]
        print()
        print(
            f"## 3. After a jump with #image-goto (ms from the Enter; fresh page, "
            f"{big.image_count}-image series; requests in the {mode})"
        )
        print(table(["figure", "jumps", "median", "p95"], rows))
        print()
        print(
            f"k: {', '.join(str(j['k']) for j in jumps)}; timeouts "
            f"{len(jumps) - len(done)} (of which "
            f"{sum(1 for j in jumps if j.get('stuck'))} stuck: image k neither held "
            "nor in flight after 10 s, the viewer showing 'Loading image k'); at the Enter the page held "
            f"{median([j['held_before'] for j in jumps]):.0f} images (median) with "
            f"{median([j['in_flight_before'] for j in jumps]):.0f} in flight; "
            f"target k +- 1 <= 50 ms (PRD < 200 ms)"
        )
        print(f"long frames: {loaf_note([f for j in jumps for f in j['loaf']])}")
        print(
            json.dumps(
                {
                    "jumps_raw": [
                        {
                            k: (round(v, 1) if isinstance(v, float) else v)
                            for k, v in j.items()
                            if k in RAW_JUMP_KEYS
                        }
                        for j in jumps
                    ]
                }
            )
        )


def report_bulk(bulk, big) -> None:
    rows = []
    for b in bulk:
        lt = sorted(e["duration"] for e in b["longtask"])
        lf = b["loaf"]
        rows.append(
            [
                b["mode"],
                f"{b['frames']} ({b['held']} held)",
                f"{b['first_s']:.1f} + {b['end_s']:.1f}",
                len(lt),
                f"{sum(lt):.0f}",
                f"{sum(max(0, d - 50) for d in lt):.0f}",
                f"{lt[-1]:.0f}" if lt else "-",
                len(lf),
                f"{sum(e['blocking'] or 0 for e in lf):.0f}",
                f"{max((e['duration'] for e in lf), default=0):.0f}" if lf else "-",
                f"{b['task_s'] * 1000:.0f}",
                f"{b['script_s'] * 1000:.0f}",
            ]
        )
    print()
    print(
        f"## 7. Bulk loading (issue #9): the {big.image_count}-image series from the "
        "server into a fresh page (opened at 1 until the preload settles, then End "
        "until it settles); main-thread figures of the page from the first image "
        "painted on, ms"
    )
    print(
        table(
            [
                "requests in",
                "frames fetched",
                "settled s (1 + End)",
                "long tasks",
                "their ms",
                "blocking ms (> 50)",
                "longest",
                "long anim. frames",
                "LoAF blocking ms",
                "longest LoAF",
                "main-thread task ms (CDP)",
                "script ms (CDP)",
            ],
            rows,
        )
    )
    errors = {e for b in bulk for e in b["errors"] if e}
    if errors:
        print(f"observer errors: {errors}")
    starts = [sum(e["duration"] for e in b["start_longtask"]) for b in bulk]
    print(
        "before (the page's start up to the first image, not counted): long tasks "
        f"{', '.join(f'{v:.0f}' for v in starts)} ms"
    )
    q = bulk[-1]["queue"] or {}
    print(f"last run's queue: {q}")


def report_cine(cine_runs, small, args) -> None:
    if cine_runs:
        rows = []
        for fps in (30, 60):
            achieved, rates, gaps, counts, late = [], [], [], 0, 0
            for c in cine_runs:
                rec = c[fps]["records"]
                counts += len(rec)
                if len(rec) >= 2:
                    span = (rec[-1]["event"] - rec[0]["event"]) / 1000
                    achieved.append((len(rec) - 1) / span)
                    steps = [
                        b["event"] - a["event"]
                        for a, b in zip(rec, rec[1:], strict=False)
                    ]
                    gaps += steps
                    late += sum(1 for g in steps if g > 1000 / fps * 1.5)
                f = c[fps]["frames"]
                if len(f) >= 2:
                    rates.append((len(f) - 1) / ((f[-1] - f[0]) / 1000))
            rows.append(
                [
                    fps,
                    counts,
                    f"{median(achieved):.1f}",
                    f"{min(achieved):.1f}" if achieved else "-",
                    f"{median(rates):.1f}",
                    *ms(gaps),
                    late,
                    *ms(
                        [
                            r["painted"] - r["event"]
                            for c in cine_runs
                            for r in c[fps]["records"]
                        ]
                    ),
                ]
            )
        print()
        print(
            f"## 4. Cine on the {small.image_count}-image series, all loaded "
            f"({args.cine_seconds:g} s per setting and run)"
        )
        print(
            table(
                [
                    "fps set",
                    "images painted",
                    "achieved fps (median)",
                    "lowest run",
                    "page frames/s",
                    "interval p50 ms",
                    "interval p95 ms",
                    "intervals > 1.5x",
                    "frame->painted p50",
                    "frame->painted p95",
                ],
                rows,
            )
        )
        for run, c in enumerate(cine_runs, 1):
            print(
                f"run {run} long frames: 30 fps: {loaf_note(c[30]['loaf'])}; 60 fps: "
                f"{loaf_note(c[60]['loaf'])}"
            )


def report_rest(results, big) -> None:
    window_runs = results["window"]
    if window_runs:
        keys = [r for w in window_runs for r in w["keys"] if r.get("painted")]
        typed = [t for w in window_runs for t in w["typed"] if t is not None]
        rows = [
            [
                "keys 1-5 (presets) on the viewport, keydown->",
                len(keys),
                *ms([r["drawn"] - r["event"] for r in keys]),
                *ms([r["painted"] - r["event"] for r in keys]),
            ],
            [
                "#wl-center typed + Enter (Dash callback), keydown->",
                len(typed),
                "-",
                "-",
                *ms(typed),
            ],
        ]
        print()
        print("## 5. Window change to painted (ms)")
        print(
            table(
                [
                    "change",
                    "count",
                    "drawn p50",
                    "drawn p95",
                    "painted p50",
                    "painted p95",
                ],
                rows,
            )
        )
        wrong = sum(w["wrong"] for w in window_runs)
        lost = sum(len(w["keys"]) for w in window_runs) - len(keys)
        print(
            f"\npreset windows not as expected: {wrong}; key presses with no paint "
            f"recorded: {lost}; typed values not painted within 5 s: "
            f"{sum(len(w['typed']) for w in window_runs) - len(typed)}"
        )
        for run, w in enumerate(window_runs, 1):
            print(
                f"run {run} long frames: keys: {loaf_note(w['loaf_keys'])}; typed: "
                f"{loaf_note(w['loaf_typed'])}"
            )

    memory = results["memory"]
    if memory:
        print()
        print(
            f"## 6. Memory, {big.image_count}-image 512 x 512 CT series "
            "(MB = 10^6 bytes; fresh browser)"
        )
        print(
            table(
                [
                    "stage",
                    "images held",
                    "state().bytes",
                    "performance.memory used",
                    "CDP JSHeapUsed",
                    "JSHeapUsed after GC",
                    "renderer RSS",
                    "renderer PSS",
                    "renderer USS",
                    "all Chromium RSS (processes)",
                    "all Chromium PSS",
                ],
                memory["rows"],
            )
        )
        peak = memory["peak"]
        cine = memory["cine"]
        span = (cine[-1]["event"] - cine[0]["event"]) / 1000 if len(cine) > 1 else 0
        print()
        print(
            f"preload after the first image settled in {memory['settle_s']:.1f} s; "
            f"cine at 60 fps reached image {memory['cine_end']} in "
            f"{memory['cine_s']:.1f} s ({len(cine)} images painted, "
            f"{(len(cine) - 1) / span if span else float('nan'):.1f} fps while "
            f"loading); peaks sampled every 0.5 s during cine: renderer RSS "
            f"{peak['rss'] / MB:.0f} MB, USS {peak['uss'] / MB:.0f} MB, state().bytes "
            f"{peak['bytes'] / MB:.1f} MB, {peak['held']} images held"
        )
        print(f"long frames during cine: {loaf_note(memory['loaf'])}")
        print("target: <= 250 MB (PRD < 500 MB)")


if __name__ == "__main__":
    raise SystemExit(main())
