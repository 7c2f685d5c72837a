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

/* Study page: once the server has loaded a series, its images come into the
 * browser's cache too, in the background (lowest priority in the page's
 * queue), so the viewer opens it with no network for pixels. Up to 80 % of
 * the cache's budget, leaving room for what the viewer keeps; images already
 * cached are not asked again. Series follow the server's progress, in display
 * order; a series whose listing fails is left to the viewer to load. */
(function () {
  "use strict";
  var match = window.location.pathname.match(/^\/study\/([0-9.]{1,64})$/);
  if (!match || !window.imageQueue || !window.imageCache || !window.apiFetch) return;
  var here = window.location.pathname;
  var base = "/api/pacs/studies/" + match[1];
  var POLL_MS = 2000,
    WORKERS = 5,
    PAGE = 500;
  var started = new Set(); // series whose images are queued
  var room = 0;
  var state = { queued: 0, fetched: 0, cached: 0, failed: 0, full: false };
  window.studyPrefetch = state; // for tests and benchmarks

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

  function listing(series, start, urls) {
    var url = base + "/series/" + series + "/images/bulk?start=" + start + "&count=" + PAGE;
    return json(url).then(function (page) {
      page.images.forEach(function (i) {
        urls.push(i.imageUrl);
      });
      return page.hasMore ? listing(series, start + PAGE, urls) : urls;
    });
  }

  function load(urls) {
    var next = 0;
    function worker() {
      if (next >= urls.length || state.full || window.location.pathname !== here) return null;
      var url = urls[next++];
      return window.imageQueue
        .fetch(url, { priority: window.imageQueue.PRIORITY.BACKGROUND })
        .then(
          function (r) {
            if (r.cached) state.cached++;
            else {
              state.fetched++;
              room -= r.buffer.byteLength;
              if (room <= 0) state.full = true;
            }
          },
          function () {
            state.failed++;
          }
        )
        .then(worker);
    }
    var workers = [];
    for (var i = 0; i < WORKERS; i++) workers.push(worker());
    return Promise.all(workers);
  }

  var chain = Promise.resolve();
  function poll() {
    if (state.full || window.location.pathname !== here) return;
    json(base + "/progress/")
      .then(function (progress) {
        progress.series.forEach(function (s) {
          if (s.state !== "complete" || started.has(s.seriesUid)) return;
          started.add(s.seriesUid);
          chain = chain.then(function () {
            return listing(s.seriesUid, 0, [])
              .then(function (urls) {
                state.queued += urls.length;
                return load(urls);
              })
              .catch(function () {}); // the viewer loads it when opened
          });
        });
        var moving = progress.series.some(function (s) {
          return s.state !== "complete" && s.state !== "error";
        });
        if (moving) setTimeout(poll, POLL_MS);
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
})();
