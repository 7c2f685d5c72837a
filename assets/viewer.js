/* The series viewer, browser side (pages/viewer.py builds the page).
 *
 * One namespace on window.dash_clientside ("viewer") for the page's clientside
 * callbacks, plus wheel, key, mouse and touch listeners attached once to the
 * document. The viewer keeps the series' raw frames (Hounsfield units for CT)
 * in memory, applies the window through a lookup table and draws on a canvas
 * of the image's own size under the Plotly figure's transparent plot area,
 * placed and scaled by CSS at the figure's zoom and pan (the compositor
 * scales: a step changes a quarter of the pixels a viewport-sized canvas
 * would, and fewer frames are missed under load). Nothing on the
 * scroll path goes to the server or through a Python callback; the counter
 * and slider follow through set_props after the paint (a Dash render never
 * sits between an input and its frame).
 * Frames are fetched and stored by the page's image worker (through the
 * queue: assets/imagequeue.js, assets/imageworker.js). A click on a study
 * card paints the series' first image from the browser's cache before the
 * viewer's page arrives, with the same code, and the viewer adopts it
 * (paintEarly).
 *
 * Loading: the image shown first, then +-3 neighbours (the image the go-to
 * box names, as it is typed, and its neighbours next), then the rest nearest
 * first in the direction of travel, at most MAX_IN_FLIGHT requests asked of
 * the page's queue (assets/imagequeue.js) at once (nothing else of the server
 * until the image shown and its neighbours are here, then MAX_BEHIND); a
 * request for an image no longer wanted is cancelled, and when all are out
 * the least wanted one yields to the image the user is waiting for. Decoded frames are kept within
 * MEMORY_BUDGET bytes (farthest dropped first; the browser's cache keeps them).
 */
(function () {
  "use strict";
  var MAX_IN_FLIGHT = 5;
  var NEIGHBOURS = 3;
  var URGENT = 3; // the image shown and its neighbours ahead and behind
  var MAX_BEHIND = 2; // requests in flight for any other image
  var HOLD_DASH = 300; // ms Dash may wait for the image shown and its neighbours
  var SETTLE_MS = 150; // ms without a wheel, key or swipe step: Dash hears of it
  var MEMORY_BUDGET = 128 * 1024 * 1024;
  var ZOOM_STEP = 1.25;
  var WHEEL_NOTCH = 100; // deltaY of one notch in pixel mode (Chrome, Firefox)
  var SWIPE_STEP = 24; // px of vertical swipe per image

  var V = null; // the open viewer, or null
  var serial = 0;

  function dc() {
    return window.dash_clientside;
  }
  function setProps(id, props) {
    if (alive()) dc().set_props(id, props); // (a dcc.Store has no element)
  }
  function clamp(v, lo, hi) {
    return Math.min(Math.max(v, lo), hi);
  }
  function num(text) {
    var v = text === null || text === undefined || text === "" ? NaN : Number(text);
    return isFinite(v) ? v : null;
  }
  function alive() {
    return V && document.body.contains(V.viewport);
  }

  // -- opening a series --------------------------------------------------------

  function open(cfg) {
    close();
    held = new Map(); // the study page's reads: no longer needed
    reading++;
    var viewport = document.getElementById("viewer-viewport");
    var canvas = document.getElementById("viewer-canvas"),
      clip = document.getElementById("viewer-clip");
    if (!viewport || !canvas || !clip || !cfg) return;
    V = {
      id: ++serial,
      cfg: cfg,
      total: cfg.urls.length,
      n: clamp(cfg.start || 1, 1, cfg.urls.length),
      direction: 1,
      images: new Map(), // index -> decoded frame
      bytes: 0,
      inflight: new Map(), // index -> AbortController
      peakInFlight: 0,
      hits: 0, // images of this viewer answered by the browser's cache
      looked: 0, // of images received
      failed: new Map(), // index -> {error}: given up
      window: cfg.window, // [centre, width], null until the first frame
      preset: cfg.window ? "custom" : "default",
      defaultWindow: null,
      shown: -1, // index rendered (window applied), to be blitted
      painted: -1, // index on the canvas
      drawnKey: "",
      viewport: viewport,
      gd: null,
      off: canvas, // the image at its own size (render), placed by CSS (blit)
      clip: clip, // the plot area: the canvas' part outside it is hidden
      placed: "", // where blit put them
      lut: null,
      lutKey: "",
      playing: false,
      fps: cfg.fps || 24,
      loop: true,
      lastCine: null,
      sensitivity: readSensitivity(cfg.user),
      wheelAcc: 0,
      focusSent: cfg.start || 1,
      sliderAt: cfg.start || 1, // the value the slider shows (pushed or moved)
      pushing: false, // a push to Dash is due after the next paint
      dashDue: false, // the next push after a paint goes to Dash (else: schedule)
      settleTimer: null, // the push once the wheel, keys or swipe pause
      pushDue: 0, // a push held back by a jump goes by then (performance.now())
      pushTimer: null,
      noBatch: false, // a jump's batch failed: single images from now on
      typed: -1, // index of the image the go-to box names (asked for before the Enter)
      echoes: new Map(), // slider value -> when we pushed it (not yet echoed)
      infoShown: false,
      urlTimer: null,
    };
    setProps("scroll-sensitivity", { value: V.sensitivity });
    if (window.imageCache) {
      var kept = window.imageCache.settings();
      setProps("cache-expiry-hours", { value: kept.expiryHours });
      setProps("cache-budget-mb", { value: kept.budgetMB });
    }
    attachGraph(V.id);
    adoptEarly();
    var id = V.id;
    var claimed = window.imageCache ? window.imageCache.claim(cfg.user).catch(function () {}) : Promise.resolve();
    claimed.then(function () {
      if (V && V.id === id) schedule(); // another user's images are gone first
    });
    viewport.focus({ preventScroll: true });
  }

  function close() {
    if (!V) return;
    V.playing = false;
    V.inflight.forEach(function (ctl) {
      ctl.abort();
    });
    V = null;
  }

  /* Wait for Plotly to have drawn the figure, then follow its zoom and pan. */
  function attachGraph(id) {
    if (!V || V.id !== id) return;
    var holder = document.getElementById("viewer-graph");
    var gd = holder && holder.querySelector(".js-plotly-plot");
    if (!gd || !gd._fullLayout || !gd.on) {
      requestAnimationFrame(function () {
        attachGraph(id);
      });
      return;
    }
    V.gd = gd;
    ["plotly_relayout", "plotly_relayouting", "plotly_afterplot"].forEach(function (name) {
      gd.on(name, function () {
        if (V && V.gd === gd) {
          blit();
          updateInfo();
        }
      });
    });
    new ResizeObserver(function () {
      // (not once the page is gone: the back button leaves V until the next open)
      if (alive() && V.gd === gd && window.Plotly) window.Plotly.Plots.resize(gd);
    }).observe(V.viewport);
    blit();
  }

  // -- moving through the series -------------------------------------------------

  /* Show image n (1-based): draw it if it is here, else keep the last image on
   * screen and say what is loading; tell Dash, the server's loader and the URL.
   * stepping: a step of the wheel, a key or a swipe (see afterPaint). */
  function go(n, perf, fromSlider, stepping) {
    if (!V) return;
    n = clamp(Math.round(n), 1, V.total);
    if (n === V.n && V.shown === n - 1) return;
    if (n !== V.n) V.direction = n > V.n ? 1 : -1;
    V.n = n;
    draw(perf);
    if (fromSlider) V.sliderAt = n;
    if (!V.images.has(n - 1)) schedule(); // the user waits for this one: ask now
    afterPaint(stepping);
  }

  /* What a step tells Dash, the loader and the URL, once per frame and after
   * it is painted: no Dash render between an input event and its frame.
   * While the wheel, keys or a swipe keep stepping, the counter's text is
   * set here and the preload follows each frame, but Dash (React's render of
   * the counter and slider, 8-20 ms, and the loader's focus callback) waits
   * until they pause for SETTLE_MS: after each step it could sit where the
   * next step's event lands; so after the go-to box's Enter (the next key
   * or wheel comes soon). After a jump,
   * Dash waits until the image shown and its neighbours are here (at most
   * HOLD_DASH ms): it would take the page's main thread while their answers
   * wait for it. */
  function afterPaint(stepping) {
    var id = V.id;
    if (stepping) {
      var counter = document.getElementById("image-counter");
      if (counter) counter.textContent = V.n + " / " + V.total; // (Dash's span)
      clearTimeout(V.settleTimer);
      V.settleTimer = setTimeout(function () {
        if (V && V.id === id) afterPaint();
      }, SETTLE_MS);
    }
    if (!stepping) V.dashDue = true;
    if (V.pushing) return;
    V.pushing = true;
    requestAnimationFrame(function () {
      setTimeout(function () {
        if (!V || V.id !== id) return;
        V.pushing = false;
        if (!V.dashDue) return schedule();
        V.dashDue = false;
        pushPosition();
      }, 0);
    });
  }

  function pushPosition() {
    if (awaiting()) {
      var now = performance.now(),
        id = V.id;
      if (!V.pushDue) V.pushDue = now + HOLD_DASH;
      if (now < V.pushDue) {
        clearTimeout(V.pushTimer);
        V.pushTimer = setTimeout(function () {
          if (V && V.id === id) pushPosition();
        }, V.pushDue - now);
        schedule();
        return;
      }
    }
    clearTimeout(V.pushTimer);
    V.pushDue = 0;
    var n = V.n;
    setProps("image-counter", { children: n + " / " + V.total });
    if (V.sliderAt !== n) {
      V.sliderAt = n;
      V.echoes.set(n, performance.now());
      setProps("viewer-slider", { value: n });
    }
    if (Math.abs(n - V.focusSent) >= 5) {
      V.focusSent = n;
      setProps("viewer-focus", { data: n });
    }
    schedule();
    rememberInUrl();
  }

  function step(delta) {
    if (V) go(V.n + delta, undefined, false, true);
  }

  function rememberInUrl() {
    clearTimeout(V.urlTimer);
    V.urlTimer = setTimeout(function () {
      if (!alive()) return;
      var q = new URLSearchParams(window.location.search);
      q.set("image", String(V.n));
      if (V.window) {
        q.set("wc", String(Math.round(V.window[0])));
        q.set("ww", String(Math.round(V.window[1])));
      }
      window.history.replaceState(window.history.state, "", window.location.pathname + "?" + q);
    }, 250);
  }

  // -- loading -----------------------------------------------------------------

  /* Whether the image shown or a neighbour is still to come (a jump);
   * list: the images to look at (the first URGENT of it), wanted() if none. */
  function awaiting(list) {
    return (list || wanted())
      .slice(0, URGENT)
      .some(function (index) {
        return !V.images.has(index) && !V.failed.has(index);
      });
  }

  /* Indexes to hold in memory, best first: the current image, its neighbours,
   * the image the go-to box names and its neighbours (V.typed: asked for
   * while the user types, before the Enter), then nearest first, ahead
   * before behind, as far as the budget goes. list.early: how many come
   * before the preload (URGENT, plus the go-to box's). */
  function wanted() {
    var here = V.n - 1,
      dir = V.direction,
      out = [here];
    var perImage = V.cfg.rows * V.cfg.columns * 2 || 1;
    var room = Math.max(2 * NEIGHBOURS + 1, Math.floor(MEMORY_BUDGET / perImage));
    for (var d = 1; out.length < room && d < V.total; d++) {
      var ahead = here + dir * d,
        behind = here - dir * d;
      if (ahead >= 0 && ahead < V.total) out.push(ahead);
      if (behind >= 0 && behind < V.total && out.length < room) out.push(behind);
    }
    var first = out.slice(0, URGENT),
      typed = [];
    if (V.typed >= 0) {
      typed = [V.typed, V.typed + 1, V.typed - 1].filter(function (index) {
        return index >= 0 && index < V.total && first.indexOf(index) < 0;
      });
    }
    out = first.concat(
      typed,
      out.slice(URGENT).filter(function (index) {
        return typed.indexOf(index) < 0;
      })
    );
    out.early = first.length + typed.length;
    return out;
  }

  function schedule() {
    if (!alive()) return;
    var list = wanted();
    var rank = new Map();
    list.forEach(function (index, i) {
      rank.set(index, i);
    });
    V.inflight.forEach(function (ctl, index) {
      if (!rank.has(index)) {
        ctl.abort(); // no longer wanted: its slot is free now
        V.inflight.delete(index);
      }
    });
    V.images.forEach(function (img, index) {
      if (!rank.has(index)) forget(index);
    });
    // Until the image shown and its two neighbours are here, no other image
    // is asked for, not even of the browser's cache (its reads take the main
    // thread their answers need), and a far request in flight (a preload
    // left behind by a jump) is cancelled; after that at most MAX_BEHIND
    // others of the server at once. So a jump finds the slots free, and the
    // server (CPU-bound: two cores serve two at a time) has at most
    // MAX_BEHIND requests of the old place ahead of the new ones, not five.
    // Reads of the browser's cache reach no server: they do not count there.
    // The same for the image the go-to box names and its neighbours, once
    // the image shown and its neighbours are here (V.typed).
    var early = list.early,
      near = early - URGENT + 2 * NEIGHBOURS, // the last neighbour's rank
      urgentMissing = awaiting(list),
      typedMissing = awaiting(list.slice(URGENT, early)),
      hurry = urgentMissing || typedMissing,
      first = urgentMissing ? URGENT : early; // what may be asked for now
    var behind = 0;
    V.inflight.forEach(function (ctl, index) {
      var r = rank.get(index);
      if (r < early || ctl.fromCache) return;
      if (hurry && r > near) {
        ctl.abort();
        V.inflight.delete(index);
      } else behind++;
    });
    askTogether(list.slice(urgentMissing ? 0 : URGENT, first));
    for (var i = 0; i < list.length; i++) {
      var index = list[i];
      if (V.images.has(index) || V.inflight.has(index)) continue;
      if (V.failed.has(index)) continue;
      if (i >= first && hurry) continue;
      if (i >= early && !inBrowserCache(index)) {
        if (behind >= MAX_BEHIND) continue;
        behind++;
      }
      if (V.inflight.size >= MAX_IN_FLIGHT) {
        if (i > near) break;
        // a wanted image waits for a slot: the least wanted request yields
        var worst = -1,
          worstRank = i;
        V.inflight.forEach(function (ctl, j) {
          if (rank.get(j) > worstRank) {
            worst = j;
            worstRank = rank.get(j);
          }
        });
        if (worst < 0) break;
        V.inflight.get(worst).abort();
        V.inflight.delete(worst);
      }
      fetchImage(index, i);
    }
  }

  /* A jump: the image shown and its neighbours (indexes) that nobody has
   * asked for and the browser's cache does not hold, when two or more and
   * consecutive, asked of the server as one batch (api/pacs.py bulk_frames):
   * one request, one pass of the server's decoding (CPU-bound: three
   * requests at once take it half as long again), one answer to the page.
   * A batch that fails, the queue's two tries over, turns batches off for
   * this viewer (the images are asked one by one). */
  function askTogether(indexes) {
    if (V.noBatch) return;
    var missing = indexes
      .filter(function (index) {
        return !V.images.has(index) && !V.inflight.has(index) && !V.failed.has(index) && !inBrowserCache(index);
      })
      .sort(function (a, b) {
        return a - b;
      });
    var lo = missing[0],
      count = missing.length;
    if (count < 2 || missing[count - 1] - lo + 1 !== count) return;
    var owner = V.id,
      ctl = new AbortController(),
      q = window.imageQueue;
    missing.forEach(function (index) {
      V.inflight.set(index, ctl);
    });
    V.peakInFlight = Math.max(V.peakInFlight, V.inflight.size);
    var url =
      "/api/pacs/studies/" + V.cfg.study + "/series/" + V.cfg.series + "/images/frames?start=" + lo + "&count=" + count;
    function mine(index) {
      var ours = V && V.id === owner && V.inflight.get(index) === ctl;
      if (ours) V.inflight.delete(index);
      return ours;
    }
    q.fetch(url, { priority: q.PRIORITY.CURRENT, signal: ctl.signal, batch: true, answer: true })
      .then(function (r) {
        var parts = new Map();
        r.parts.forEach(function (part) {
          parts.set(part.url, part);
        });
        missing.forEach(function (index) {
          var part = parts.get(V && V.cfg.urls[index]);
          // (one the server could not decode: asked alone, which says why)
          if (mine(index) && part) hold(index, decode(part.buffer, headerMap(part.headers)), false);
        });
      })
      .catch(function (err) {
        var left = missing.filter(mine).length;
        if (left && err.name !== "AbortError") V.noBatch = true;
      })
      .then(function () {
        if (V && V.id === owner) schedule();
      });
  }

  /* Whether image index is in the browser's cache, as far as the page knows. */
  function inBrowserCache(index) {
    return !!window.imageCache && window.imageCache.has(V.cfg.urls[index]);
  }

  /* The frame through the page's request queue (assets/imagequeue.js): the
   * browser's cache, else the server; the queue retries with backoff. */
  function fetchImage(index, rank) {
    var owner = V.id,
      ctl = new AbortController(),
      q = window.imageQueue,
      priority =
        rank === 0
          ? q.PRIORITY.CURRENT
          : rank <= 2 * NEIGHBOURS
          ? q.PRIORITY.NEIGHBOURS + rank / 100
          : q.PRIORITY.BACKGROUND + rank / 1e6;
    // (decided now: the page notes a key as stored once its request is sent)
    ctl.fromCache = inBrowserCache(index);
    V.inflight.set(index, ctl);
    V.peakInFlight = Math.max(V.peakInFlight, V.inflight.size);
    var cached = false;
    q.fetch(V.cfg.urls[index], { priority: priority, signal: ctl.signal, worker: true })
      .then(function (r) {
        cached = r.cached;
        return decode(r.buffer, headerMap(r.headers));
      })
      .then(function (img) {
        if (!V || V.id !== owner || V.inflight.get(index) !== ctl) return;
        V.inflight.delete(index);
        hold(index, img, cached);
        schedule();
      })
      .catch(function (err) {
        if (!V || V.id !== owner || V.inflight.get(index) !== ctl) return;
        V.inflight.delete(index);
        if (err.name === "AbortError") return;
        // the queue has retried it already: the image is given up
        V.failed.set(index, {
          error: err.status === 401 ? "signed out: reload the page to sign in" : err.message,
        });
        if (index === V.n - 1) status();
        schedule();
      });
  }

  /* Decoded image index arrived (from the browser's cache: cached). */
  function hold(index, img, cached) {
    V.looked++;
    if (cached) V.hits++;
    V.failed.delete(index);
    V.images.set(index, img);
    V.bytes += img.data.byteLength;
    showCacheRate();
    if (index === V.n - 1) draw();
    if (V.pushDue && !awaiting()) afterPaint(); // Dash's turn (pushPosition)
  }

  function headerMap(obj) {
    return {
      get: function (name) {
        var v = obj[name.toLowerCase()];
        return v === undefined ? null : v;
      },
    };
  }

  function showCacheRate() {
    showMemory();
    // this viewer's own images: the page's cache may have served others
    // before (the study page, when the viewer came by client-side navigation)
    var el = document.getElementById("cache-hit-rate");
    if (!el || !V || !V.looked) return;
    var text = "cache " + Math.round((100 * V.hits) / V.looked) + " %";
    if (el.textContent !== text) el.textContent = text;
  }

  /* The decoded frames held in the tab against their budget (cache panel). */
  function showMemory() {
    var el = document.getElementById("memory-summary");
    if (!el || !V) return;
    var mb = function (bytes) {
      return (bytes / 1048576).toFixed(1);
    };
    var text =
      "In memory: " + V.images.size + " decoded images, " + mb(V.bytes) + " of " + mb(MEMORY_BUDGET) + " MB";
    if (el.textContent !== text) el.textContent = text;
  }

  function forget(index) {
    var img = V.images.get(index);
    if (!img) return;
    V.bytes -= img.data.byteLength;
    V.images.delete(index);
  }

  function decode(buf, h) {
    var dtype = h.get("X-Image-Dtype") || "int16";
    var samples = Number(h.get("X-Image-Samples") || 1);
    var data =
      dtype === "int16"
        ? new Int16Array(buf)
        : dtype === "float32"
        ? new Float32Array(buf)
        : new Uint8Array(buf);
    var min = num(h.get("X-Pixel-Min")),
      max = num(h.get("X-Pixel-Max"));
    if (samples === 1 && (min === null || max === null)) {
      min = Infinity;
      max = -Infinity;
      for (var i = 0; i < data.length; i++) {
        var v = data[i];
        if (v < min) min = v;
        if (v > max) max = v;
      }
    } else if (samples !== 1) {
      min = 0;
      max = 255;
    }
    var parts = function (name) {
      var t = h.get(name);
      return t ? t.split("\\").map(Number) : null;
    };
    return {
      data: data,
      rows: Number(h.get("X-Image-Rows")),
      cols: Number(h.get("X-Image-Columns")),
      dtype: dtype,
      samples: samples,
      min: min,
      max: max,
      ownWindow:
        num(h.get("X-Window-Width")) > 0
          ? [num(h.get("X-Window-Center")), num(h.get("X-Window-Width"))]
          : null,
      invert: h.get("X-Photometric") === "MONOCHROME1",
      position: parts("X-Image-Position"),
      spacing: parts("X-Pixel-Spacing"),
      location: num(h.get("X-Slice-Location")),
      thickness: num(h.get("X-Slice-Thickness")),
    };
  }

  // -- window ------------------------------------------------------------------

  function autoWindow(img) {
    return [(img.max + img.min) / 2, Math.max(1, img.max - img.min)];
  }

  /* The series' default: the first image's own window, else its value range. */
  function defaultWindowOf(img) {
    return img.ownWindow || autoWindow(img);
  }

  function setDefaultWindow(img) {
    V.defaultWindow = defaultWindowOf(img);
    if (!V.window) setWindow(V.defaultWindow[0], V.defaultWindow[1], "default");
    else pushWindow(null);
  }

  function setWindow(c, w, preset) {
    if (!V || c === null || w === null || !(w > 0)) return;
    V.window = [c, w];
    if (preset !== null) V.preset = preset || "custom";
    draw();
    pushWindow(preset);
    rememberInUrl();
  }

  function pushWindow(preset) {
    setProps("wl-center", { value: Math.round(V.window[0] * 10) / 10 });
    setProps("wl-width", { value: Math.round(V.window[1] * 10) / 10 });
    if (preset !== null) setProps("wl-preset", { value: preset || "custom" });
  }

  function applyPreset(name) {
    if (!V) return;
    var current = V.images.get(V.shown);
    if (name === "default" && V.defaultWindow) setWindow(V.defaultWindow[0], V.defaultWindow[1], "default");
    else if (name === "auto" && current) setWindow(autoWindow(current)[0], autoWindow(current)[1], "auto");
    else if (V.cfg.presets[name]) setWindow(V.cfg.presets[name][0], V.cfg.presets[name][1], name);
  }

  /* A lookup table from stored value (offset by the image's minimum) to an
   * opaque grey RGBA pixel: the DICOM linear window (PS3.3 C.11.2.1.2).
   * s: where the last table is kept ({lut, lutKey}); win: [centre, width]. */
  function lookup(s, img, win) {
    var c = win[0],
      w = win[1];
    var key = [c, w, img.min, img.max, img.invert].join(",");
    if (key === s.lutKey) return s.lut;
    var n = img.max - img.min + 1;
    var lut = new Uint32Array(n);
    var lo = c - 0.5 - (w - 1) / 2,
      hi = c - 0.5 + (w - 1) / 2;
    for (var i = 0; i < n; i++) {
      var x = img.min + i;
      var g = x <= lo ? 0 : x > hi ? 255 : Math.round(((x - (c - 0.5)) / Math.max(w - 1, 1) + 0.5) * 255);
      if (img.invert) g = 255 - g;
      lut[i] = 0xff000000 | (g << 16) | (g << 8) | g;
    }
    s.lut = lut;
    s.lutKey = key;
    return lut;
  }

  // -- drawing -----------------------------------------------------------------

  /* Render image n into the canvas (window applied), then blit. */
  function draw(perf) {
    if (!alive()) return;
    var index = V.n - 1,
      img = V.images.get(index);
    if (img && !V.defaultWindow) setDefaultWindow(img);
    if (img && V.window) {
      var key = index + ":" + V.window.join(",");
      if (key !== V.drawnKey) {
        render(V, img, V.window);
        V.drawnKey = key;
      }
      V.shown = index;
      blit();
    }
    status();
    if (V.infoShown) updateInfo();
    if (perf && window.viewerPerf) {
      perf.drawn = performance.now();
      perf.shown = V.shown === index;
      window.viewerPerf.push(perf);
      var painted = function () {
        perf.painted = performance.now(); // after this frame's rendering
      };
      // from an animation frame callback: after this frame; else after the
      // next one (when this is a frame's input, a frame late at worst)
      if (perf.inFrame) setTimeout(painted, 0);
      else
        requestAnimationFrame(function () {
          setTimeout(painted, 0);
        });
    }
  }

  /* Render img at window win into the canvas s.off (s: the viewer,
   * or the card click's early paint; it keeps its ImageData and table). */
  function render(s, img, win) {
    var off = s.off;
    if (off.width !== img.cols || off.height !== img.rows) {
      off.width = img.cols;
      off.height = img.rows;
      s.offData = null;
    }
    var ctx = off.getContext("2d");
    if (!s.offData) s.offData = ctx.createImageData(img.cols, img.rows);
    var out = new Uint32Array(s.offData.data.buffer);
    var data = img.data,
      n = img.rows * img.cols,
      i;
    if (img.samples === 3) {
      for (i = 0; i < n; i++) {
        out[i] = 0xff000000 | (data[3 * i + 2] << 16) | (data[3 * i + 1] << 8) | data[3 * i];
      }
    } else if (img.dtype === "float32" || img.max - img.min > 65535) {
      var c = win[0],
        w = win[1];
      for (i = 0; i < n; i++) {
        var g = clamp(Math.round(((data[i] - (c - 0.5)) / Math.max(w - 1, 1) + 0.5) * 255), 0, 255);
        if (img.invert) g = 255 - g;
        out[i] = 0xff000000 | (g << 16) | (g << 8) | g;
      }
    } else {
      var lut = lookup(s, img, win),
        min = img.min;
      for (i = 0; i < n; i++) out[i] = lut[data[i] - min];
    }
    ctx.putImageData(s.offData, 0, 0);
  }

  /* Where the image lies on screen: the Plotly plot area at its axis ranges. */
  function geometry() {
    var gd = V.gd;
    if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis) return null;
    var fl = gd._fullLayout,
      size = fl._size,
      xr = fl.xaxis.range,
      yr = fl.yaxis.range;
    var vp = V.viewport.getBoundingClientRect(),
      g = gd.getBoundingClientRect();
    var sx = size.w / (xr[1] - xr[0]),
      sy = size.h / (yr[0] - yr[1]); // y reversed: row 0 at the top
    return {
      left: g.left - vp.left + size.l,
      top: g.top - vp.top + size.t,
      width: size.w,
      height: size.h,
      sx: sx,
      sy: sy,
      x0: xr[0],
      y0: yr[1],
    };
  }

  /* The rendered image on screen: the clip on the plot area, the canvas
   * where the figure's axes put the image (style only when they moved). */
  function blit() {
    if (!alive() || V.shown < 0) return;
    var geo = geometry();
    if (!geo) return;
    var key = [geo.left, geo.top, geo.width, geo.height, geo.sx, geo.sy, geo.x0, geo.y0, V.off.width, V.off.height].join();
    if (key !== V.placed) {
      V.placed = key;
      place(V.clip, geo.left, geo.top, geo.width, geo.height);
      placeImage(V.off, geo);
    }
    if (V.painted < 0) storeInsets();
    V.painted = V.shown;
    if (early) dropEarly(); // the viewer shows the image itself now
  }

  /* geometry() of a figure not drawn yet (for paintEarly): the viewport's
   * figure (pages/viewer.py: no margins, the pixel grid's ranges, y scaled by
   * aspect) as Plotly fits it into w x h: the ranges widened around the centre. */
  function fitted(img, aspect, w, h) {
    var sx = Math.min(w / img.cols, h / (img.rows * aspect)),
      sy = sx * aspect;
    return {
      left: 0,
      top: 0,
      width: w,
      height: h,
      sx: sx,
      sy: sy,
      x0: (img.cols - 1) / 2 - w / sx / 2,
      y0: (img.rows - 1) / 2 - h / sy / 2,
    };
  }

  function status() {
    var el = document.getElementById("viewer-status");
    if (!el) return;
    var index = V.n - 1,
      f = V.failed.get(index),
      text = "";
    if (!V.images.has(index)) {
      text =
        f
          ? "Image " + V.n + " could not be loaded (" + f.error + ")"
          : "Loading image " + V.n + "…";
    }
    if (el.textContent !== text) el.textContent = text;
    el.classList.toggle("failed", !!f);
  }

  function zoomFactor() {
    var geo = geometry();
    return geo ? geo.sx : 1;
  }

  function fmt(list, digits) {
    return list
      ? list
          .map(function (v) {
            return v.toFixed(digits);
          })
          .join(", ")
      : "—";
  }

  function updateInfo() {
    var el = document.getElementById("viewer-info");
    if (!el || !V) return;
    el.hidden = !V.infoShown;
    if (!V.infoShown) return;
    var img = V.images.get(V.shown) || {};
    var lines = [];
    Object.keys(V.cfg.info).forEach(function (k) {
      lines.push([k, V.cfg.info[k]]);
    });
    lines.push(["Image", V.n + " / " + V.total]);
    lines.push(["Position (mm)", fmt(img.position, 1)]);
    lines.push(["Slice location", img.location === null || img.location === undefined ? "—" : img.location.toFixed(2) + " mm"]);
    lines.push(["Thickness", img.thickness ? img.thickness + " mm" : "—"]);
    lines.push(["Window", V.window ? "C " + Math.round(V.window[0]) + " / W " + Math.round(V.window[1]) : "—"]);
    lines.push(["Zoom", zoomFactor().toFixed(2) + "×"]);
    el.textContent = "";
    lines.forEach(function (kv) {
      var row = document.createElement("div");
      var b = document.createElement("span");
      b.className = "k";
      b.textContent = kv[0] + " ";
      row.appendChild(b);
      row.appendChild(document.createTextNode(kv[1]));
      el.appendChild(row);
    });
  }

  /* The value under the mouse (Hounsfield units for CT). */
  function readout(event) {
    var el = document.getElementById("viewer-readout");
    if (!el || !alive()) return;
    var img = V.images.get(V.shown),
      geo = geometry();
    if (!img || !geo) return;
    var vp = V.viewport.getBoundingClientRect();
    var x = Math.round(geo.x0 + (event.clientX - vp.left - geo.left) / geo.sx);
    var y = Math.round(geo.y0 + (event.clientY - vp.top - geo.top) / geo.sy);
    if (x < 0 || y < 0 || x >= img.cols || y >= img.rows) {
      el.textContent = "";
      return;
    }
    var text;
    if (img.samples === 3) {
      var k = 3 * (y * img.cols + x);
      text = "RGB " + img.data[k] + ", " + img.data[k + 1] + ", " + img.data[k + 2];
    } else {
      var v = img.data[y * img.cols + x];
      text = (img.dtype === "float32" ? v.toFixed(2) : String(v)) + (V.cfg.modality === "CT" ? " HU" : "");
    }
    el.textContent = "x " + x + "  y " + y + "  " + text;
  }

  // -- zoom and pan (the figure's axis ranges) -------------------------------------

  function relayout(xr, yr) {
    if (V && V.gd && window.Plotly) {
      window.Plotly.relayout(V.gd, { "xaxis.range": xr, "yaxis.range": yr });
    }
  }

  function fit() {
    relayout([-0.5, V.cfg.columns - 0.5], [V.cfg.rows - 0.5, -0.5]);
  }

  /* Scale by f around (cx, cy) in image coordinates (default: the centre). */
  function zoomBy(f, cx, cy) {
    var geo = geometry();
    if (!geo) return;
    var x1 = geo.x0 + geo.width / geo.sx,
      y1 = geo.y0 + geo.height / geo.sy;
    if (cx === undefined) {
      cx = (geo.x0 + x1) / 2;
      cy = (geo.y0 + y1) / 2;
    }
    relayout([cx - (cx - geo.x0) / f, cx + (x1 - cx) / f], [cy + (y1 - cy) / f, cy - (cy - geo.y0) / f]);
  }

  function oneToOne() {
    var geo = geometry();
    if (geo) zoomBy(1 / geo.sx); // one image pixel per CSS pixel
  }

  function reset() {
    fit();
    if (V.defaultWindow) setWindow(V.defaultWindow[0], V.defaultWindow[1], "default");
  }

  function toggleInfo() {
    V.infoShown = !V.infoShown;
    updateInfo();
  }

  // -- cine --------------------------------------------------------------------

  function play() {
    if (!V || V.playing) return;
    if (V.n === V.total) go(1);
    V.playing = true;
    V.lastCine = null;
    requestAnimationFrame(tick);
    V.viewport.classList.add("playing");
  }

  function pause() {
    if (!V) return;
    V.playing = false;
    V.viewport.classList.remove("playing");
  }

  /* One animation frame of cine: advance when the next image is due and here
   * (a frame not loaded yet holds the current one: never a blank frame). */
  function tick(ts) {
    if (!alive() || !V.playing) return;
    var interval = 1000 / V.fps;
    if (V.lastCine === null) V.lastCine = ts;
    if (ts - V.lastCine >= interval - 4) {
      var next = V.n + 1;
      if (next > V.total) {
        if (!V.loop) return pause();
        next = 1;
      }
      if (V.images.has(next - 1)) {
        V.direction = 1;
        go(next, window.viewerPerf ? { kind: "cine", event: ts, inFrame: true } : undefined);
        V.lastCine = ts - V.lastCine > 2 * interval ? ts : V.lastCine + interval;
      }
    }
    requestAnimationFrame(tick);
  }

  // -- a card's click: the first image before the viewer's page arrives ---------

  /* A click on a study card (dcc.Link: no page load) reads the series' first
   * frame from the browser's cache at once (imageQueue.expect) and paints it
   * with the code above, full size at its default window, on a canvas where
   * the viewport will be, over a cover hiding the study page; Dash meanwhile
   * fetches and draws the viewer's page. When the viewport is there the
   * cover goes and the canvas sits exactly on it; open() adopts the decoded
   * frame and blit() removes the canvas once the viewer has painted the
   * same pixels under it. Not in the cache: nothing is drawn. Where the
   * viewport will be is where it was last time at this window width
   * (localStorage), else the layout's usual place (the toolbar in one row,
   * as from 1280 px wide). */
  var early = null; // {href, from, url, img, aspect, box, canvas, cover, ...}
  var PLACE_KEY = "viewer.viewportInsets";
  var held = new Map(); // frame url -> {buffer, headers} (readCards)
  var reading = 0; // readCards' run: a newer one, or a viewer, ends it
  var HELD_BYTES = 32 * 1024 * 1024;

  /* The frame a card's thumbnail shows (img: its <img data-src>). */
  function frameOf(img) {
    return img.getAttribute("data-src").split("/rendered")[0];
  }

  /* The study page, settled and idle (assets/app.js): its cards' first
   * frames read from the browser's cache now, one at a time, up to
   * HELD_BYTES, so that a click paints in its own task (no read to wait
   * for behind Dash's work); those already held are kept; let go when a
   * viewer opens. most: at most this many cards (0: let go of all).
   * Returns a promise of how many are held. */
  function readCards(most) {
    var q = window.imageQueue,
      run = ++reading,
      bytes = 0,
      keep = new Map();
    var urls = Array.prototype.map.call(document.querySelectorAll("#series-grid img.thumb-img[data-src]"), frameOf);
    urls.slice(0, most === undefined ? urls.length : most).forEach(function (url) {
      if (held.has(url)) keep.set(url, held.get(url));
    });
    held = keep;
    held.forEach(function (hit) {
      bytes += hit.buffer.byteLength;
    });
    if (!q || !q.read || most === 0) return Promise.resolve(held.size);
    return new Promise(function (resolve) {
      (function next(i) {
        if (i >= urls.length || run !== reading || bytes > HELD_BYTES) return resolve(held.size);
        if (held.has(urls[i])) return next(i + 1);
        q.read(urls[i]).then(function (hit) {
          if (hit && run === reading) {
            held.set(urls[i], hit);
            bytes += hit.buffer.byteLength;
          }
          next(i + 1);
        });
      })(0);
    });
  }

  /* link: the card's <a>. True when the image is painted in this task (a
   * frame readCards holds, the cache not emptied since), else it is read
   * now and painted when read (if cached). */
  function paintEarly(link) {
    dropEarly();
    var thumb = link.querySelector("img.thumb-img[data-src]"),
      q = window.imageQueue,
      c = window.imageCache;
    if (!thumb || !q || !q.expect) return false;
    var url = frameOf(thumb);
    var e = (early = { href: link.getAttribute("href"), from: window.location.pathname, url: url, img: null });
    e.timer = setTimeout(dropEarly, 30000); // never left behind (no page came)
    var hit = held.get(url);
    if (hit && c && c.has(url)) return showEarly(e, hit);
    q.expect(url).then(function (hit) {
      if (early === e) showEarly(e, hit);
    });
    return false;
  }

  /* hit: the frame read from the cache, or null. */
  function showEarly(e, hit) {
    var shown = V && V.painted >= 0 && V.cfg.urls[V.painted] === e.url;
    if (!hit || shown) return dropEarly(); // the viewer does it all as before
    var img = decode(hit.buffer, headerMap(hit.headers)),
      spacing = img.spacing;
    e.img = img;
    e.aspect = spacing && spacing[1] > 0 ? spacing[0] / spacing[1] : 1; // as the figure
    // the frame at its own size, scaled by CSS, as the viewer's (blit)
    e.canvas = document.createElement("canvas");
    e.canvas.id = "viewer-early";
    render({ off: e.canvas }, img, defaultWindowOf(img));
    e.box = document.createElement("div");
    e.box.id = "viewer-early-box";
    e.box.appendChild(e.canvas);
    document.body.appendChild(e.box);
    e.watch = new MutationObserver(function () {
      placeEarly(e);
    });
    e.watch.observe(document.body, { childList: true, subtree: true });
    placeEarly(e);
    return true;
  }

  /* Put early's box on the viewport, or where it will be (the study page
   * still shown: covered), and the image in it where the figure will put it
   * (fitted; unsmoothed where blit would not smooth); drop it when the page
   * went elsewhere. */
  function placeEarly(e) {
    if (early !== e) return;
    var vp = document.getElementById("viewer-viewport"),
      path = window.location.pathname;
    if (path === e.href) e.went = true; // (painted at the click: before the link goes)
    else if (e.went || path !== e.from) return dropEarly();
    if (document.getElementById("viewer-error")) return dropEarly();
    var box;
    if (vp) {
      if (e.cover) e.cover.remove();
      var r = vp.getBoundingClientRect();
      box = [r.left, r.top, vp.clientWidth, vp.clientHeight];
    } else {
      var content = document.getElementById("_pages_content");
      if (!e.cover && content) {
        e.cover = document.createElement("div");
        e.cover.id = "viewer-early-cover";
        e.cover.style.top = content.getBoundingClientRect().top + window.scrollY + "px";
        document.body.appendChild(e.cover);
      }
      var inset = storedInsets() || [12, 146, 12, 49];
      box = [inset[0], inset[1], window.innerWidth - inset[0] - inset[2], window.innerHeight - inset[1] - inset[3]];
    }
    if (box.join() === e.placed) return;
    e.placed = box.join();
    var geo = fitted(e.img, e.aspect, box[2], box[3]);
    place(e.box, box[0], box[1], box[2], box[3]);
    placeImage(e.canvas, geo);
  }

  /* canvas (an image at its own size) where geo's axes put the image,
   * relative to the plot area; its pixels shown when zoomed far in. */
  function placeImage(canvas, geo) {
    place(canvas, (-0.5 - geo.x0) * geo.sx, (-0.5 - geo.y0) * geo.sy, canvas.width * geo.sx, canvas.height * geo.sy);
    canvas.style.imageRendering = geo.sx < 3 ? "auto" : "pixelated";
  }

  /* el at (left, top), w x h CSS pixels. */
  function place(el, left, top, w, h) {
    el.style.left = left + "px";
    el.style.top = top + "px";
    el.style.width = w + "px";
    el.style.height = h + "px";
  }

  function dropEarly() {
    var e = early;
    if (!e) return;
    early = null;
    clearTimeout(e.timer);
    if (e.watch) e.watch.disconnect();
    if (e.box) e.box.remove();
    if (e.cover) e.cover.remove();
  }

  /* open(): the frame the click read is this viewer's first image. */
  function adoptEarly() {
    var e = early,
      index = V.n - 1;
    if (!e) return;
    if (e.url !== V.cfg.urls[index]) return dropEarly();
    if (!e.img) return; // still reading: the viewer's fetch takes the same read
    V.images.set(index, e.img);
    V.bytes += e.img.data.byteLength;
    V.looked++;
    V.hits++; // from the browser's cache
    showCacheRate();
    draw(); // painted once the figure is there (blit)
  }

  /* Where the viewport was (CSS px from the window's edges: left, top,
   * right, bottom; and the window's width), for the next card's click. */
  function storeInsets() {
    var r = V.viewport.getBoundingClientRect();
    var inset = [r.left, r.top, window.innerWidth - r.right, window.innerHeight - r.bottom, window.innerWidth].map(Math.round);
    try {
      window.localStorage.setItem(PLACE_KEY, JSON.stringify(inset));
    } catch (err) {} // (storage full or off: the usual place next time)
  }
  function storedInsets() {
    try {
      var inset = JSON.parse(window.localStorage.getItem(PLACE_KEY));
      // (another width may wrap the toolbar otherwise)
      return Array.isArray(inset) && inset.length === 5 && inset[4] === window.innerWidth ? inset : null;
    } catch (err) {
      return null;
    }
  }

  // -- sensitivity, remembered per user in this browser ------------------------------

  function sensitivityKey(user) {
    return "viewer.sensitivity." + (user || "");
  }
  function readSensitivity(user) {
    var v = num(window.localStorage.getItem(sensitivityKey(user)));
    return v ? clamp(v, 0.5, 3) : 1;
  }

  // -- Dash callbacks ------------------------------------------------------------

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    viewer: {
      init: function (cfg) {
        open(cfg);
      },
      /* The slider moved: by the user, or as the echo of a step we pushed
       * (which may arrive after later steps: never go back to it). */
      slide: function (value) {
        if (!V || !value) return;
        var pushed = V.echoes.get(value);
        V.echoes.delete(value);
        if (pushed && performance.now() - pushed < 2000) return;
        if (value !== V.n) go(value, undefined, true);
      },
      goto: function (value) {
        var empty = value === null || value === undefined || value === "";
        if (!V || empty || (typeof value === "number" && isNaN(value))) {
          setProps("image-goto", { invalid: false });
          return "";
        }
        var n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > V.total) {
          setProps("image-goto", { invalid: true });
          return "No image " + value + ": 1–" + V.total;
        }
        setProps("image-goto", { invalid: false, value: null });
        V.typed = -1; // (the box is emptied)
        go(n);
        V.viewport.focus({ preventScroll: true });
        return "";
      },
      command: function () {
        if (!V) return;
        var id = dc().callback_context.triggered_id;
        ({
          "cine-play": play,
          "cine-pause": pause,
          "cine-stop": function () {
            pause();
            go(1);
          },
          "zoom-fit": fit,
          "zoom-1to1": oneToOne,
          "zoom-in": function () {
            zoomBy(ZOOM_STEP);
          },
          "zoom-out": function () {
            zoomBy(1 / ZOOM_STEP);
          },
          "view-reset": reset,
          "info-toggle": toggleInfo,
        }[id] || function () {})();
      },
      settings: function (sensitivity, fps, loop) {
        if (!V) return;
        if (sensitivity) {
          V.sensitivity = clamp(sensitivity, 0.5, 3);
          window.localStorage.setItem(sensitivityKey(V.cfg.user), String(V.sensitivity));
        }
        if (fps >= 1 && fps <= 60) V.fps = fps;
        V.loop = !!loop;
      },
      window: function (centre, width, preset) {
        var skip = dc().no_update;
        if (!V) return skip;
        if (dc().callback_context.triggered_id === "wl-preset") {
          if (preset && preset !== "custom" && preset !== V.preset) applyPreset(preset);
          return skip;
        }
        var c = num(centre),
          w = num(width);
        if (c === null || w === null || w <= 0) return skip;
        if (V.window && c === Math.round(V.window[0] * 10) / 10 && w === Math.round(V.window[1] * 10) / 10) {
          return skip; // our own echo
        }
        setWindow(c, w, null);
        return "custom";
      },
      /* The cache panel: settings changed, emptied, or opened. Returns a
       * promise of the summary line (Dash waits for it). */
      cache: function (hours, megabytes, clears) {
        var cache = window.imageCache;
        if (!cache) return "No browser cache here.";
        var id = dc().callback_context.triggered_id,
          work;
        if (id === "cache-clear") work = cache.clear();
        else if (id === "cache-toggle") work = Promise.resolve();
        else work = cache.configure({ expiryHours: num(hours) || undefined, budgetMB: num(megabytes) || undefined });
        return work
          .then(function () {
            return cache.summary();
          })
          .then(function (s) {
            showMemory();
            return s.entries + " images, " + (s.bytes / 1048576).toFixed(1) + " MB kept";
          });
      },
      readCards: readCards,
      /* For tests: a smaller budget for decoded frames (bytes). */
      setMemoryBudget: function (bytes) {
        MEMORY_BUDGET = bytes;
        schedule();
        showMemory();
      },
      /* For tests and benchmarks: what the viewer holds (read only). */
      state: function () {
        return V
          ? {
              n: V.n,
              shown: V.painted + 1,
              total: V.total,
              window: V.window,
              zoom: zoomFactor(),
              loaded: Array.from(V.images.keys()).map(function (i) {
                return i + 1;
              }),
              bytes: V.bytes,
              inFlight: V.inflight.size,
              peakInFlight: V.peakInFlight,
              playing: V.playing,
              sensitivity: V.sensitivity,
              fps: V.fps,
            }
          : null;
      },
    },
  });

  // -- input -------------------------------------------------------------------

  /* A plain click on a series card's link (Dash's page; the first-paint
   * copy's links load a page): its first image at once (paintEarly). When
   * that painted it, the link's own click (dcc.Link: Dash's navigation, tens
   * of milliseconds of script in the same task) comes after the next frame,
   * so that this frame shows the image. */
  var passing = false; // our click of the link: Dash's turn
  document.addEventListener(
    "click",
    function (event) {
      if (passing || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      var link = event.target.closest && event.target.closest("a.thumb-link");
      if (!link || !link.closest("#_pages_content") || !paintEarly(link)) return;
      event.preventDefault();
      event.stopPropagation();
      requestAnimationFrame(function () {
        setTimeout(function () {
          if (!document.contains(link)) return dropEarly();
          passing = true;
          try {
            link.click();
          } finally {
            passing = false;
          }
        }, 0);
      });
    },
    true
  );

  function inViewport(target) {
    return target && target.closest && target.closest("#viewer-viewport");
  }

  var KEYS = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
  var PRESET_KEYS = { 0: "default", 1: "soft", 2: "lung", 3: "liver", 4: "bone", 5: "brain" };

  document.addEventListener("keydown", function (event) {
    // event: keys act on the viewer unless the user types into a field
    if (!alive() || event.ctrlKey || event.metaKey || event.altKey) return;
    var t = event.target,
      tag = (t && t.tagName) || "";
    var field = tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (t && t.isContentEditable);
    if (field || (t && t.closest && t.closest("[role=slider]"))) {
      if (event.key === "Escape") V.viewport.focus({ preventScroll: true });
      if (event.key === "Enter" && t.id === "image-goto") gotoAtOnce(t);
      return;
    }
    var k = event.key,
      handled = true;
    if (k in KEYS) step(KEYS[k]);
    else if (k === "Home") go(1);
    else if (k === "End") go(V.total);
    else if (k === " ") V.playing ? pause() : play();
    else if (k in PRESET_KEYS) applyPreset(PRESET_KEYS[k]);
    else if (k === "r" || k === "R") reset();
    else if (k === "i" || k === "I") toggleInfo();
    else if (k === "+" || k === "=") zoomBy(ZOOM_STEP);
    else if (k === "-") zoomBy(1 / ZOOM_STEP);
    else handled = false;
    if (handled) event.preventDefault();
  });

  /* Enter in the go-to box: a valid image number moves at once, the box is
   * emptied and the keys go back to the viewport (the Enter's keyup lands
   * there), and Dash (whose input commits on the Enter's keyup and on blur,
   * and runs the goto callback) does not hear of it: no React render takes
   * the main thread meanwhile; the counter and slider follow as after a
   * step (afterPaint). Anything else, or the first valid number after a
   * refused one (its message to clear), goes through the goto callback,
   * which checks and says. */
  var gotoBlur = null; // the box whose focusout Dash must not see
  function gotoAtOnce(box) {
    var n = Number(box.value);
    if (!Number.isInteger(n) || n < 1 || n > V.total || box.classList.contains("is-invalid")) return;
    gotoBlur = box;
    box.value = "";
    V.typed = -1;
    try {
      V.viewport.focus({ preventScroll: true });
    } finally {
      gotoBlur = null;
    }
    go(n, undefined, false, true);
  }

  /* Typing in the go-to box: the image it names, and its neighbours, are
   * asked for at once (wanted, schedule), so that they are here or on their
   * way by the Enter (a person's pause before it is a hundred milliseconds
   * or more; a batch takes a few tens). A number the next digit changes is
   * no longer wanted: its request is cancelled. */
  document.addEventListener(
    "input",
    function (event) {
      var box = event.target;
      if (!alive() || !box || box.id !== "image-goto") return;
      var n = Number(box.value),
        typed = Number.isInteger(n) && n >= 1 && n <= V.total ? n - 1 : -1;
      if (typed === V.typed) return;
      V.typed = typed;
      schedule();
    },
    true
  );
  document.addEventListener(
    "focusout",
    function (event) {
      if (event.target === gotoBlur) event.stopPropagation(); // before React's listener on Dash's root
    },
    true
  );

  /* Wheel: images, at the chosen sensitivity, applied once per animation
   * frame; ctrl+wheel (and trackpad pinch) zooms around the pointer. */
  var wheelFrame = null,
    wheelPerf = null;
  document.addEventListener(
    "wheel",
    function (event) {
      if (!alive() || !inViewport(event.target)) return;
      event.preventDefault();
      var delta = event.deltaY * (event.deltaMode === 1 ? 33 : event.deltaMode === 2 ? 400 : 1);
      if (event.ctrlKey) {
        var geo = geometry(),
          vp = V.viewport.getBoundingClientRect();
        if (geo) {
          zoomBy(
            Math.pow(1.002, -delta),
            geo.x0 + (event.clientX - vp.left - geo.left) / geo.sx,
            geo.y0 + (event.clientY - vp.top - geo.top) / geo.sy
          );
        }
        return;
      }
      V.wheelAcc += (delta / WHEEL_NOTCH) * V.sensitivity;
      if (window.viewerPerf && !wheelPerf) wheelPerf = { kind: "wheel", event: event.timeStamp };
      if (wheelFrame === null) {
        // Chrome hands wheel events to the page at the start of a frame: the
        // first one since the last frame is drawn at once, in this frame;
        // more before the next frame add up and are drawn together
        applyWheel(false);
        wheelFrame = requestAnimationFrame(function () {
          wheelFrame = null;
          applyWheel(true);
          wheelPerf = null; // (part of a step: not timed)
        });
      }
    },
    { passive: false }
  );

  /* The whole steps the wheel has added up; inFrame: called from an
   * animation frame callback (for the benchmark's records). */
  function applyWheel(inFrame) {
    if (!V) return;
    var steps = V.wheelAcc > 0 ? Math.floor(V.wheelAcc) : Math.ceil(V.wheelAcc);
    if (!steps) return;
    V.wheelAcc -= steps;
    var perf = wheelPerf;
    wheelPerf = null;
    if (perf) perf.inFrame = inFrame;
    go(V.n + steps, perf || undefined, false, true);
  }

  /* Right-drag: window (horizontal: width, vertical: centre), captured before
   * Plotly's drag layer sees it. */
  var drag = null;
  document.addEventListener(
    "mousedown",
    function (event) {
      if (!alive() || !inViewport(event.target)) return;
      V.viewport.focus({ preventScroll: true });
      if (event.button !== 2 || !V.window) return;
      event.preventDefault();
      event.stopPropagation();
      var img = V.images.get(V.shown);
      var range = img ? Math.max(img.max - img.min, 1) : 1000;
      drag = { x: event.clientX, y: event.clientY, window: V.window.slice(), perPx: Math.max(range / 512, 0.5) };
    },
    true
  );
  document.addEventListener("mousemove", function (event) {
    if (drag && V) {
      var w = Math.max(1, drag.window[1] + (event.clientX - drag.x) * drag.perPx);
      var c = drag.window[0] + (event.clientY - drag.y) * drag.perPx;
      V.window = [c, w];
      draw();
      return;
    }
    if (alive() && inViewport(event.target)) readout(event);
  });
  document.addEventListener("mouseup", function () {
    if (drag && V) {
      drag = null;
      setWindow(V.window[0], V.window[1], "custom");
    }
  });
  document.addEventListener("contextmenu", function (event) {
    if (alive() && inViewport(event.target)) event.preventDefault();
  });

  /* Touch: a one-finger vertical swipe steps through the series. */
  var touchY = null;
  document.addEventListener(
    "touchstart",
    function (event) {
      if (!alive() || !inViewport(event.target) || event.touches.length !== 1) return;
      touchY = event.touches[0].clientY;
    },
    { passive: true, capture: true }
  );
  document.addEventListener(
    "touchmove",
    function (event) {
      if (touchY === null || !alive() || event.touches.length !== 1) return;
      var dy = touchY - event.touches[0].clientY,
        steps = Math.trunc(dy / SWIPE_STEP);
      event.preventDefault();
      event.stopPropagation();
      if (steps) {
        touchY -= steps * SWIPE_STEP;
        step(steps);
      }
    },
    { passive: false, capture: true }
  );
  document.addEventListener(
    "touchend",
    function () {
      touchY = null;
    },
    true
  );
})();
