/* The page's image worker: fetches an image the page's queue
 * (assets/imagequeue.js) asks for, hands the bytes to the page, then stores
 * them in the browser's cache (assets/imagecache.js, loaded here too), so
 * that reading the response, its CRC-32 and the IndexedDB write never run on
 * the page's main thread, between a wheel event or a jump and its frame.
 *
 * Not loaded by Dash as a page script (app.py, assets_ignore): started with
 * new Worker("/assets/imageworker.js").
 *
 * Messages from the page:
 *   {type: "fetch", id, url, accept, priority, store, settings, urgent}
 *       priority: the Priority header (api/turns.py); store: write the
 *       cache; urgent: the image shown or a neighbour (writes wait)
 *   {type: "batch", ..., answer}   the same for a batch of frames: its
 *       images are stored (each under its own URL) before it answers; with
 *       answer, it answers with them first (the viewer's jump) and stores
 *       them after, as a single image's
 *   {type: "abort", id}
 * to the page:
 *   {id, buffer, headers}          the answer (buffer transferred)
 *   {id, parts: [{url, bytes}]}    a batch's answer, its images stored
 *   {id, parts: [{url, buffer, headers}]}  one asked with answer (buffers
 *                                  transferred)
 *   {id, status, retryAfter}       an HTTP error (the page retries, or renews
 *                                  the session on 401 and asks again itself)
 *   {id, error, name}              a network error or AbortError
 *   {id, url, stored: true|false}  after the write of url (or its failure)
 *   {timing: [{name, startTime, requestStart, responseEnd}]}  this worker's
 *                                  resource timing, in the page's clock (the
 *                                  page's own timeline does not see these)
 */
/* global importScripts */
importScripts("imagecache.js");

(function () {
  "use strict";
  var cache = self.imageCache;
  var running = new Map(); // id -> AbortController
  var urgent = new Set(); // ids of the image shown and its neighbours, running

  function pick(headers) {
    var out = {};
    headers.forEach(function (value, name) {
      if (name.indexOf("x-") === 0 || name === "content-type") out[name] = value;
    });
    return out;
  }

  /* One request: m = {id, url, accept, store, settings}; a batch
   * (type "batch") is split and its images stored before it answers. */
  function fetchOne(m) {
    var ctl = new AbortController();
    running.set(m.id, ctl);
    if (m.urgent) urgent.add(m.id);
    var headers = { Accept: m.accept, Priority: m.priority || "u=3" };
    fetch(m.url, { credentials: "same-origin", signal: ctl.signal, headers: headers })
      .then(function (r) {
        if (!r.ok) {
          var after = Number(r.headers.get("Retry-After"));
          self.postMessage({ id: m.id, status: r.status, retryAfter: isFinite(after) && after > 0 ? after : 0 });
          return;
        }
        return r.arrayBuffer().then(function (buffer) {
          if (m.type === "batch" && m.answer) {
            var parts = cache.splitBatch(buffer, r.headers.get("content-type")).map(function (p) {
              return { url: p.key, buffer: p.buffer, headers: p.headers };
            });
            var copies = m.store
              ? parts.map(function (p) {
                  return p.buffer.slice(0);
                })
              : [];
            self.postMessage(
              { id: m.id, parts: parts },
              parts.map(function (p) {
                return p.buffer;
              })
            );
            copies.forEach(function (copy, i) {
              later({ m: m, url: parts[i].url, buffer: copy, headers: parts[i].headers });
            });
            return;
          }
          if (m.type === "batch") {
            cache.useSettings(m.settings);
            var kept = m.store ? cache.putBatch(buffer, r.headers.get("content-type")) : Promise.resolve([]);
            return kept.then(function (parts) {
              self.postMessage({ id: m.id, parts: parts });
            });
          }
          var headers = pick(r.headers);
          var copy = m.store ? buffer.slice(0) : null; // the page gets the original
          self.postMessage({ id: m.id, buffer: buffer, headers: headers }, [buffer]);
          if (copy) later({ m: m, url: m.url, buffer: copy, headers: headers });
        });
      })
      .catch(function (err) {
        self.postMessage({ id: m.id, error: String(err && err.message), name: err && err.name });
      })
      .then(function () {
        running.delete(m.id);
        if (urgent.delete(m.id) && !urgent.size && writes.length) setTimeout(writeNext, 0);
      });
  }

  var shift = self.performance.timeOrigin; // absolute times: the page subtracts its origin
  new PerformanceObserver(function (list) {
    var timing = list.getEntries().map(function (e) {
      return {
        name: e.name,
        startTime: e.startTime + shift,
        requestStart: e.requestStart + shift,
        responseEnd: e.responseEnd + shift,
      };
    });
    self.performance.clearResourceTimings(); // (a buffer of 250 by default)
    if (timing.length) self.postMessage({ timing: timing });
  }).observe({ type: "resource" });

  /* Writes wait behind the page's requests: one per task, so that a message
   * asking for the image the user waits for is read between two, and none
   * while that image or its neighbours are on their way (a jump). */
  var writes = [];
  var MAX_HELD = 16;
  function later(w) {
    writes.push(w);
    if (writes.length === 1 || writes.length > MAX_HELD) setTimeout(writeNext, 0);
  }
  function writeNext() {
    // (again when the urgent ones end; a long run of them waits for no more
    // than MAX_HELD writes, each a frame's copy)
    if (!writes.length || (urgent.size && writes.length <= MAX_HELD)) return;
    var w = writes[0];
    cache.useSettings(w.m.settings);
    var report = function (stored) {
      self.postMessage({ id: w.m.id, url: w.url, stored: stored });
    };
    cache.put(w.url, w.buffer, w.headers).then(
      function () {
        report(true);
      },
      function () {
        report(false);
      }
    );
    writes.shift();
    if (writes.length) setTimeout(writeNext, 0);
  }

  self.onmessage = function (event) {
    var m = event.data;
    if (m.type === "fetch" || m.type === "batch") fetchOne(m);
    else if (m.type === "abort" && running.has(m.id)) running.get(m.id).abort();
  };
})();
