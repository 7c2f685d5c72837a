/* Page-wide helpers (no Dash callbacks here; thumbnails are loaded by
 * assets/imagequeue.js).
 *
 * First paint: the study page's HTML carries a plain copy of its cards
 * (#first-paint, pages/study.py) while CSS hides Dash's page; once Dash has
 * drawn a page and its thumbnails are shown (the same blob URLs as the copy's)
 * or given up for now, the copy goes. After 10 s it goes anyway.
 */
(function () {
  var shell = document.getElementById("first-paint");
  if (!shell) return;
  var started = Date.now();
  function swap() {
    var page = document.getElementById("_pages_content");
    var ready = page !== null && page.children.length > 0;
    if (ready) {
      var imgs = page.getElementsByClassName("thumb-img");
      for (var i = 0; i < imgs.length && ready; i++) {
        var img = imgs[i];
        ready = (img.getAttribute("src") && img.complete) || img.parentElement.classList.contains("failed");
      }
    }
    if (ready || Date.now() - started > 10000) shell.remove();
    else setTimeout(swap, 30);
  }
  swap();
})();

(function () {
  "use strict";

  /* Study page: its cards' first frames read from IndexedDB, for a click to
   * paint at once (assets/viewer.js): when the page has settled, and again
   * once its background loading has stored what was missing; most: at most
   * this many (0 on other pages: what was read is let go). */
  function readCards(most) {
    var viewer = window.dash_clientside && window.dash_clientside.viewer;
    // (a promise of how many, for tests and benchmarks)
    window.cardsRead = viewer && viewer.readCards ? viewer.readCards(most) : Promise.resolve(0);
  }

  /* Client-side navigation (dcc.Link, the back button): call fn(pathname) now
   * and after every change of page without a page load.
   *   fn: function (pathname) called on each page */
  function onPage(fn) {
    var last = null;
    function check() {
      if (window.location.pathname === last) return;
      last = window.location.pathname;
      fn(last);
    }
    window.addEventListener("_dashprivate_pushstate", check); // dcc.Link, dcc.Location
    window.addEventListener("popstate", check);
    check();
  }

  /* Study page: once the server has loaded a series, its images come into the
   * browser's cache too, in the background (lowest priority in the page's
   * queue, batches of 16 images: see load), so the viewer opens it with no
   * network for pixels. Up to 80 % of the cache's budget, leaving room for
   * what the viewer keeps; images already cached are not asked again. Series
   * follow the server's progress, in display order; a series whose listing
   * fails is left to the viewer to load. Runs again when the study page comes
   * back without a page load (the back button from the viewer); a run stops
   * when the page changes. */
  (function () {
    "use strict";
    if (!window.imageQueue || !window.imageCache || !window.apiFetch) return;
    var POLL_MS = 2000,
      WORKERS = 3, // batches in flight (the server has few cores)
      BATCH = 16, // images a batch (api/pacs.py MAX_BATCH: 32)
      PAGE = 500;
    var runs = 0;
    // localStorage "studyPrefetch.batch" = "off": image by image (benchmarks)
    var BATCHING = window.localStorage.getItem("studyPrefetch.batch") !== "off";

    function json(url) {
      return window.apiFetch(url).then(function (r) {
        if (!r.ok) {
          var error = new Error("HTTP " + r.status);
          error.status = r.status;
          throw error;
        }
        return r.json();
      });
    }

    /* One run for the study page at `here` (its pathname), study `uid`. */
    function run(here, uid) {
      var me = ++runs;
      var base = "/api/pacs/studies/" + uid;
      var started = new Set(); // series whose images are queued
      var room = 0;
      var state = { queued: 0, fetched: 0, cached: 0, failed: 0, full: false, batches: 0, batchFailures: 0 };
      window.studyPrefetch = state; // for tests and benchmarks
      function alive() {
        return me === runs && window.location.pathname === here;
      }

      function listing(series, start, urls) {
        var url = base + "/series/" + series + "/images/bulk?start=" + start + "&count=" + PAGE;
        return json(url).then(function (page) {
          page.images.forEach(function (i) {
            urls.push(i.imageUrl);
          });
          return page.hasMore ? listing(series, start + PAGE, urls) : urls;
        });
      }

      /* A series' images not in the browser's cache yet, in chunks of
       * consecutive images (BATCH at most): one batch request each, the
       * images it did not bring asked singly (graceful degradation: a
       * batch that fails twice is asked image by image, and after two such
       * failures this run asks singly only). */
      function load(series, urls) {
        var chunks = [],
          last = null;
        urls.forEach(function (url, i) {
          if (window.imageCache.has(url)) return state.cached++;
          if (!last || last.start + last.urls.length !== i || last.urls.length >= BATCH) {
            chunks.push((last = { start: i, urls: [] }));
          }
          last.urls.push(url);
        });
        var next = 0;
        function worker() {
          if (next >= chunks.length || state.full || !alive()) return null;
          return batch(series, chunks[next++]).then(worker);
        }
        var workers = [];
        for (var i = 0; i < WORKERS; i++) workers.push(worker());
        return Promise.all(workers);
      }

      function took(bytes) {
        state.fetched++;
        room -= bytes;
        if (room <= 0) state.full = true;
      }

      function batch(series, chunk) {
        if (state.batchFailures >= 2 || !BATCHING) return singles(chunk.urls);
        var url = base + "/series/" + series + "/images/frames?start=" + chunk.start + "&count=" + chunk.urls.length;
        var q = window.imageQueue;
        return q.fetch(url, { priority: q.PRIORITY.BACKGROUND, batch: true }).then(
          function (r) {
            state.batches++;
            var got = new Set();
            r.parts.forEach(function (part) {
              got.add(part.url);
              took(part.bytes);
            });
            return singles(
              chunk.urls.filter(function (u) {
                return !got.has(u);
              })
            );
          },
          function () {
            state.batchFailures++;
            return singles(chunk.urls);
          }
        );
      }

      function singles(urls) {
        return urls.reduce(function (chain, url) {
          return chain.then(function () {
            if (state.full || !alive()) return;
            return window.imageQueue.fetch(url, { priority: window.imageQueue.PRIORITY.BACKGROUND }).then(
              function (r) {
                if (r.cached) state.cached++;
                else took(r.buffer.byteLength);
              },
              function () {
                state.failed++;
              }
            );
          });
        }, Promise.resolve());
      }

      var chain = Promise.resolve();
      function poll() {
        if (state.full || !alive()) return;
        json(base + "/progress/")
          .then(function (progress) {
            progress.series.forEach(function (s) {
              if (s.state !== "complete" || started.has(s.seriesUid)) return;
              started.add(s.seriesUid);
              chain = chain.then(function () {
                return listing(s.seriesUid, 0, [])
                  .then(function (urls) {
                    state.queued += urls.length;
                    return load(s.seriesUid, urls);
                  })
                  .catch(function () {}); // the viewer loads it when opened
              });
            });
            var moving = progress.series.some(function (s) {
              return s.state !== "complete" && s.state !== "error";
            });
            if (moving) setTimeout(poll, POLL_MS);
            else {
              chain.then(function () {
                if (alive() && state.fetched) readCards(); // the cards' frames are there now
              });
            }
          })
          .catch(function (error) {
            // no such study: nothing will ever load (the page says so); stop
            if (error && error.status === 404) return;
            setTimeout(poll, POLL_MS * 2);
          });
      }

      window.imageCache.summary().then(function (kept) {
        room = window.imageCache.settings().budgetMB * 1048576 * 0.8 - kept.bytes;
        state.full = room <= 0;
        poll();
      });
    }

    onPage(function (path) {
      var match = path.match(/^\/study\/([0-9.]{1,64})$/);
      if (match) run(path, match[1]);
    });
  })();

  /* Study page, once idle: get the viewer's code ready before a card is
   * clicked. Dash loads plotly.js (~4.5 MB, ~250 ms to evaluate) and the
   * dcc.Graph and dcc.Slider chunks only when such a component first
   * appears, i.e. after the click;
   * here they are loaded (and Plotly's drawing code run once, off screen) while
   * the user looks at the cards. Dash's Graph uses window.Plotly when it is
   * there, and webpack takes a chunk already loaded as installed. */
  (function () {
    "use strict";
    var warmed = false;

    function script(src) {
      return new Promise(function (resolve, reject) {
        var s = document.createElement("script");
        s.src = src;
        s.async = true;
        s.onload = resolve;
        s.onerror = reject;
        document.head.appendChild(s);
      });
    }

    /* The viewer's dcc chunks (dcc.Graph, dcc.Slider), next to Dash's dcc
     * bundle (webpack's public path). */
    function chunks() {
      var dcc = document.querySelector("script[src*='/dcc/dash_core_components.']");
      if (!dcc) return Promise.resolve();
      var src = dcc.getAttribute("src"),
        dir = src.slice(0, src.lastIndexOf("/") + 1);
      return Promise.all([script(dir + "async-graph.js"), script(dir + "async-slider.js")]);
    }

    /* Draw an empty figure once off screen: Plotly's code compiled now. */
    function drawOnce() {
      var div = document.createElement("div");
      div.style.cssText = "position:fixed;left:-10000px;top:0;width:200px;height:200px";
      document.body.appendChild(div);
      var axis = { range: [-0.5, 9.5], visible: false };
      return window.Plotly.newPlot(
        div,
        [],
        { xaxis: axis, yaxis: axis, margin: { l: 0, r: 0, t: 0, b: 0 }, dragmode: "pan" },
        { displayModeBar: false }
      ).then(function () {
        window.Plotly.purge(div);
        div.remove();
      });
    }

    function warm() {
      if (warmed || !/^\/study\//.test(window.location.pathname)) return;
      warmed = true;
      var plotly = window.Plotly || !window._dashPlotlyJSURL ? Promise.resolve() : script(window._dashPlotlyJSURL);
      window.plotlyWarm = Promise.all([plotly, chunks()]) // for tests and benchmarks
        .then(function () {
          return window.Plotly ? drawOnce() : null;
        })
        .then(
          function () {
            return true;
          },
          function () {
            return false; // the viewer loads them itself, as without this
          }
        );
    }

    /* After the study page at `path` has drawn its cards (the first-paint
     * copy gone), idle. */
    function whenSettled(path) {
      if (!/^\/study\//.test(path)) return readCards(0);
      if (window.location.pathname !== path || document.getElementById("study-error")) return;
      if (document.getElementById("first-paint") || !window._dashPlotlyJSURL || !document.getElementById("series-grid")) {
        setTimeout(function () {
          whenSettled(path);
        }, 100);
        return;
      }
      var idle = function () {
        warm();
        readCards();
      };
      if (window.requestIdleCallback) window.requestIdleCallback(idle, { timeout: 2000 });
      else setTimeout(idle, 200);
    }

    onPage(whenSettled);
  })();
})();
