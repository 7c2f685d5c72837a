/* window.imageQueue: every image request of the page goes through here.
 *
 *   imageQueue.fetch(url, {priority, signal, accept}) -> Promise of
 *     {buffer, headers, cached}   (headers: the x-* and content-type ones)
 *   imageQueue.expect(url): start reading url from the cache now, for a
 *     fetch(url) about to come; a promise of that read
 *   imageQueue.read(url): a read of the cache alone (no request after it)
 *   imageQueue.fetch(url, {batch: true, priority, signal}) -> Promise of
 *     {parts: [{url, bytes}]}: a batch of frames (api/pacs.py bulk_frames),
 *     one request and one slot, each image stored under its own URL; not
 *     read from the cache (the caller asks for what it lacks) and tried
 *     twice, not five times: its caller falls back to single-image requests
 *   imageQueue.fetch(url, {batch: true, answer: true, ...}) -> Promise of
 *     {parts: [{url, buffer, headers}]}: the same, the images handed over
 *     first and stored after (as a single image's answer)
 *
 * The browser's cache first (assets/imagecache.js: no network, no slot), else
 * the server, and what arrives is stored in that cache. At most MAX_IN_FLIGHT
 * requests at once for the whole page, best priority first (CURRENT image >
 * NEIGHBOURS > THUMBNAIL > BACKGROUND; fractions order inside a class). When
 * every slot is busy, a current or neighbouring image takes the slot of the
 * least urgent request, which waits again. A caller's AbortSignal cancels its
 * request, queued or in flight. Failures are retried with exponential backoff
 * and jitter; 429 and 503 honour Retry-After and hold the whole queue that
 * long (the server said it is busy); 4xx answers are final.
 *
 * Each request tells the server its class in an RFC 9218 Priority header
 * (CURRENT u=0, NEIGHBOURS u=1, THUMBNAIL u=2, BACKGROUND u=5): the server
 * holds background requests back while it answers urgent ones (api/turns.py).
 *
 * A request with the option worker: true (the viewer's frames), and storing
 * its answer, run in a Web Worker (assets/imageworker.js) when the browser has
 * one, so that neither reading a response nor its checksum and IndexedDB
 * write takes the main thread from the viewer; else, or with localStorage
 * "imageQueue.worker" = "off" (for benchmarks), on the main thread. A 401 is
 * asked again from the page, which renews the session (assets/apifetch.js).
 * imageQueue.entries() lists the page's and the worker's resource timing.
 *
 * Thumbnails: an <img class="thumb-img" data-src="..."> anywhere in the page
 * (the study page's first paint and its Dash cards) is loaded through the
 * queue and the cache and shown from a blob URL; one request per URL. The
 * first-paint copy's images are not: they come while Dash's bundles run on
 * the main thread, where each step of an IndexedDB read (open, keys, owner,
 * entry) or of a fetch waits behind them, so the browser loads them itself
 * (img.src, from the network or its HTTP cache: the answers are private,
 * immutable), each holding a slot of the queue until its load event, and
 * copied into IndexedDB from the HTTP cache when the page is idle (keepLater).
 * The HTML asks for the first 5 itself (src, pages/study.py), before any
 * script; the queue counts those in flight as it meets them.
 *
 * Loaded in <head> (app.py), before the page's body, so the first-paint
 * thumbnails start while Dash's bundles load.
 */
(function () {
  "use strict";
  var MAX_IN_FLIGHT = 5;
  var MAX_TRIES = 5;
  var PRIORITY = { CURRENT: 0, NEIGHBOURS: 1, THUMBNAIL: 2, BACKGROUND: 3 };
  var URGENCY = ["u=0", "u=1", "u=2", "u=5"]; // the Priority header of each class

  var waiting = []; // jobs not started, kept sorted: best first
  var running = new Set();
  var holdUntil = 0; // 429/503: nothing starts before this (performance.now())
  var holdTimer = null;
  var serial = 0;
  var figures = { requests: 0, hits: 0, retries: 0, failures: 0, preempted: 0, peak: 0, viaWorker: 0 };

  // -- the image worker ------------------------------------------------------------

  var worker = startWorker();
  var asked = new Map(); // worker request id -> {resolve, reject}
  var storing = new Map(); // worker request id + " " + url -> done(stored)
  var workerSerial = 0;
  var workerTiming = []; // the worker's resource timing, in this page's clock

  function startWorker() {
    try {
      if (window.localStorage.getItem("imageQueue.worker") === "off") return null;
      if (!window.Worker || !window.indexedDB) return null;
      var w = new Worker("/assets/imageworker.js");
      w.onmessage = fromWorker;
      w.onerror = function () {
        worker = null; // the script failed: the page fetches itself from now on
        asked.forEach(function (p) {
          p.reject(Object.assign(new Error("worker failed"), { status: 0 }));
        });
        asked.clear();
      };
      return w;
    } catch (e) {
      return null;
    }
  }

  /* m: a message of assets/imageworker.js. */
  function fromWorker(event) {
    var m = event.data;
    if (m.timing) {
      m.timing.forEach(function (e) {
        ["startTime", "requestStart", "responseEnd"].forEach(function (k) {
          e[k] -= performance.timeOrigin;
        });
        workerTiming.push(e);
      });
      if (workerTiming.length > 5000) workerTiming.splice(0, workerTiming.length - 5000);
      return;
    }
    if (m.stored !== undefined) return stored(m.id, m.url, m.stored);
    var p = asked.get(m.id);
    if (!p) return; // aborted meanwhile
    asked.delete(m.id);
    if (m.buffer) return p.resolve({ buffer: m.buffer, headers: m.headers, cached: false });
    if (m.parts) {
      m.parts.forEach(function (part) {
        // an answer's images are written after it: the worker says when
        if (part.buffer) noteWrite(p.cache, m.id, part.url);
        else if (window.imageCache) window.imageCache.noteWrite(part.url, Promise.resolve(true));
      });
      return p.resolve({ parts: m.parts });
    }
    var e = new Error(m.status ? "HTTP " + m.status : m.error);
    if (m.name === "AbortError") e.name = "AbortError";
    e.status = m.status || 0;
    e.retryAfter = m.retryAfter || 0;
    p.reject(e);
  }

  /* The page's cache told that the worker writes url for request id. */
  function noteWrite(c, id, url) {
    if (!c) return;
    c.noteWrite(
      url,
      new Promise(function (resolve) {
        storing.set(id + " " + url, resolve);
      })
    );
  }

  /* The worker's write of url for request id: stored (true), or none will
   * come (false: failed, or the request was aborted or refused; the page's
   * cache forgets the key at once, before whatever the abort's caller does
   * next). url undefined: every write of the request. */
  function stored(id, url, ok) {
    storing.forEach(function (done, key) {
      var at = key.indexOf(" ");
      if (key.slice(0, at) !== String(id) || (url !== undefined && key.slice(at + 1) !== url)) return;
      storing.delete(key);
      if (!ok && window.imageCache) window.imageCache.forget(key.slice(at + 1));
      done(ok);
    });
  }

  /* The request of a started job through the worker, which also stores the
   * answer (imageCache.noteWrite tells the page's cache). */
  function viaWorker(job, c) {
    var id = ++workerSerial;
    var store = !!c && !c.signingOut();
    figures.viaWorker++;
    return new Promise(function (resolve, reject) {
      asked.set(id, { resolve: resolve, reject: reject, cache: store ? c : null });
      job.ctl.signal.addEventListener("abort", function () {
        if (!asked.has(id)) return;
        asked.delete(id);
        stored(id, undefined, false);
        if (worker) worker.postMessage({ type: "abort", id: id });
        reject(abortError());
      });
      if (store && !job.batch) noteWrite(c, id, job.url);
      worker.postMessage({
        type: job.batch ? "batch" : "fetch",
        id: id,
        url: job.url,
        accept: job.accept,
        priority: urgency(job),
        store: store,
        settings: store ? c.settings() : null,
        urgent: job.priority < PRIORITY.THUMBNAIL, // the image shown, its neighbours
        answer: job.answer,
      });
    }).catch(function (err) {
      stored(id, undefined, false);
      if (err.status === 401 && !job.ctl.signal.aborted) return viaPage(job); // renew
      throw err;
    });
  }

  /* The request of a started job as the browser's own image load (img.src):
   * fetched and decoded off the main thread, answered by the HTTP cache when
   * asked before (private, immutable), not stored in IndexedDB. Its slot is
   * held until the load or error event; a failed one is asked again by
   * fetch (which sees the status: backoff, Retry-After, renewal). */
  function viaImage(job) {
    var img = job.img;
    return new Promise(function (resolve, reject) {
      function end(event) {
        img.removeEventListener("load", end);
        img.removeEventListener("error", end);
        if (event.type === "load") {
          keepLater(job.url);
          return resolve({ src: job.url, cached: false });
        }
        job.img = null;
        reject(Object.assign(new Error("image failed"), { status: 0 }));
      }
      if (img.getAttribute("src") === job.url && img.complete) {
        return end({ type: img.naturalWidth > 0 ? "load" : "error" });
      }
      img.addEventListener("load", end);
      img.addEventListener("error", end);
      if (img.getAttribute("src") !== job.url) img.src = job.url;
    });
  }

  /* An image the browser loaded itself (viaImage) copied into IndexedDB
   * from the browser's HTTP cache once the page is idle: no request
   * (only-if-cached), and no read while Dash's bundles hold the main thread. */
  function keepLater(url) {
    var idle = window.requestIdleCallback
      ? function (fn) {
          window.requestIdleCallback(fn, { timeout: 5000 });
        }
      : function (fn) {
          setTimeout(fn, 1000); // no idle callbacks: a second later
        };
    idle(function () {
      cache()
        .then(function (c) {
          if (!c || c.has(url) || c.signingOut()) return;
          return fetch(url, { cache: "only-if-cached", mode: "same-origin", credentials: "same-origin" }).then(function (r) {
            if (!r.ok) return;
            return r.arrayBuffer().then(function (buffer) {
              return c.put(url, buffer, pick(r.headers));
            });
          });
        })
        .catch(function () {}); // not in the HTTP cache any more: a later view asks
    });
  }

  function urgency(job) {
    return URGENCY[Math.min(URGENCY.length - 1, Math.floor(job.priority))];
  }

  /* The request of a started job on the main thread; its answer is stored
   * (once the cache is claimed: a job of viaImage retried by fetch did not
   * wait for that). A batch's images are stored before it answers. */
  function viaPage(job) {
    var get = window.apiFetch || fetch;
    var headers = { Accept: job.accept, Priority: urgency(job) };
    return get(job.url, { signal: job.ctl.signal, headers: headers }).then(function (r) {
      if (!r.ok) {
        var e = new Error("HTTP " + r.status);
        e.status = r.status;
        var after = Number(r.headers.get("Retry-After"));
        e.retryAfter = isFinite(after) && after > 0 ? after : 0;
        throw e;
      }
      return r.arrayBuffer().then(function (buffer) {
        if (job.answer) {
          var parts = window.imageCache.splitBatch(buffer, r.headers.get("content-type")).map(function (p) {
            return { url: p.key, buffer: p.buffer, headers: p.headers };
          });
          cache().then(function (c) {
            if (c) parts.forEach(function (p) {
              c.put(p.url, p.buffer, p.headers).catch(function () {});
            });
          });
          return { parts: parts };
        }
        if (job.batch) {
          return cache().then(function (c) {
            if (!c) throw new Error("no cache to keep a batch in");
            return c.putBatch(buffer, r.headers.get("content-type")).then(function (parts) {
              return { parts: parts };
            });
          });
        }
        var result = { buffer: buffer, headers: pick(r.headers), cached: false };
        cache().then(function (c) {
          if (c) return c.put(job.url, result.buffer, result.headers);
        }).catch(function () {});
        return result;
      });
    });
  }

  var claimed = null;
  function cache() {
    var c = window.imageCache;
    if (!c) return Promise.resolve(null);
    if (!claimed) {
      // the cache belongs to the signed-in user: another user's images go first
      var meta = document.querySelector("meta[name='app-user']");
      claimed = c.claim(meta ? meta.content : "").catch(function () {});
    }
    return claimed.then(function () {
      return c;
    });
  }

  function abortError() {
    var e = new Error("aborted");
    e.name = "AbortError";
    return e;
  }

  function insert(job) {
    var i = waiting.length;
    while (i > 0 && before(job, waiting[i - 1])) i--;
    waiting.splice(i, 0, job);
  }
  function before(a, b) {
    return a.priority < b.priority || (a.priority === b.priority && a.seq < b.seq);
  }

  function pump() {
    var now = performance.now();
    if (now < holdUntil) {
      if (!holdTimer) {
        holdTimer = setTimeout(function () {
          holdTimer = null;
          pump();
        }, holdUntil - now);
      }
      return;
    }
    while (waiting.length) {
      var next = waiting[0];
      if (next.notBefore > now) {
        // the best job waits out its backoff; others may go meanwhile
        var ready = waiting.findIndex(function (j) {
          return j.notBefore <= now;
        });
        if (ready < 0) {
          setTimeout(pump, next.notBefore - now);
          return;
        }
        next = waiting[ready];
      }
      if (running.size >= MAX_IN_FLIGHT && !preempt(next)) return;
      waiting.splice(waiting.indexOf(next), 1);
      start(next);
    }
  }

  /* A current or neighbouring image takes the slot of the least urgent job. */
  function preempt(job) {
    if (job.priority >= PRIORITY.THUMBNAIL) return false;
    var worst = null;
    running.forEach(function (j) {
      if (j.img) return; // the browser's own load: not to be cut short
      if (j.priority > job.priority && (!worst || before(worst, j))) worst = j;
    });
    if (!worst) return false;
    figures.preempted++;
    worst.yielded = true;
    worst.ctl.abort();
    return true;
  }

  function start(job) {
    running.add(job);
    figures.requests++;
    figures.peak = Math.max(figures.peak, running.size);
    job.ctl = new AbortController();
    var c = window.imageCache || null; // (a worker job: claimed, request() waited for it)
    (job.img ? viaImage : worker && job.worker ? viaWorker : viaPage)(job, c)
      .then(
        function (result) {
          finish(job);
          job.resolve(result);
        },
        function (err) {
          finish(job);
          if (job.cancelled) return job.reject(abortError());
          if (job.yielded) {
            job.yielded = false; // its slot went to a more urgent image
            insert(job);
            return pump();
          }
          retry(job, err);
        }
      );
  }

  function finish(job) {
    running.delete(job);
    setTimeout(pump, 0);
  }

  function retry(job, err) {
    var status = err.status || 0;
    var final = status >= 400 && status < 500 && status !== 408 && status !== 429;
    job.tries++;
    if (final || job.tries >= (job.batch ? 2 : MAX_TRIES)) {
      figures.failures++;
      return job.reject(err);
    }
    figures.retries++;
    var wait = 500 * Math.pow(2, job.tries - 1) * (0.5 + Math.random());
    if (err.retryAfter) {
      wait = err.retryAfter * 1000;
      holdUntil = Math.max(holdUntil, performance.now() + wait);
    }
    job.notBefore = performance.now() + wait;
    insert(job);
    pump();
  }

  function pick(headers) {
    var out = {};
    headers.forEach(function (value, name) {
      if (name.indexOf("x-") === 0 || name === "content-type") out[name] = value;
    });
    return out;
  }

  /* url: the image; options: {priority, signal, accept, worker, img, batch,
   * answer}.
   * img: an <img> the browser loads url into itself (src), with no read of
   * the browser's cache first and no bytes for the caller: the result is
   * {src} (see viaImage). */
  function request(url, options) {
    options = options || {};
    var signal = options.signal;
    var job = {
      url: url,
      priority: options.priority === undefined ? PRIORITY.BACKGROUND : options.priority,
      accept: options.batch ? "multipart/related" : options.accept || "application/octet-stream",
      worker: !!options.worker || !!options.batch,
      batch: !!options.batch,
      answer: !!options.batch && !!options.answer,
      img: options.img || null,
      seq: ++serial,
      tries: 0,
      notBefore: 0,
    };
    return new Promise(function (resolve, reject) {
      job.resolve = resolve;
      job.reject = reject;
      if (signal) {
        if (signal.aborted) return reject(abortError());
        signal.addEventListener("abort", function () {
          job.cancelled = true;
          var at = waiting.indexOf(job);
          if (at >= 0) {
            waiting.splice(at, 1);
            reject(abortError());
          } else if (job.ctl) job.ctl.abort(); // running: its catch rejects
          else reject(abortError()); // still asking the cache
        });
      }
      var early = expected.get(url);
      expected.delete(url);
      if (job.img) {
        // no cache read (see show); one the HTML asked for is in flight already
        if (job.img.getAttribute("src") === url) return start(job);
        insert(job);
        return pump();
      }
      if (job.batch) {
        // no cache read (its caller asks for what is missing), but the cache
        // claimed first: a claim that empties it must not follow the writes
        return cache().then(function () {
          if (job.cancelled) return;
          insert(job);
          pump();
        });
      }
      (early || readCache(url))
        .then(function (hit) {
          if (job.cancelled) return;
          if (hit) {
            figures.hits++;
            return resolve({ buffer: hit.buffer, headers: hit.headers, cached: true });
          }
          insert(job);
          pump();
        });
    });
  }

  /* url read from the browser's cache (the signed-in user's): a promise of
   * {buffer, headers} or null. */
  function readCache(url) {
    return cache().then(function (c) {
      return c ? c.get(url).catch(function () {}) : null;
    });
  }

  /* A hint: `url` will be asked for in a moment (a click that opens the
   * viewer): its read from the browser's cache starts now, and the next
   * fetch(url) within a few seconds takes that read instead of its own.
   * Returns the read: a promise of {buffer, headers} or null (not cached). */
  var expected = new Map(); // url -> Promise of a cache hit or null
  function expect(url) {
    if (expected.has(url)) return expected.get(url);
    var read = readCache(url);
    expected.set(url, read);
    setTimeout(function () {
      if (expected.get(url) === read) expected.delete(url);
    }, 5000);
    return read;
  }

  // -- thumbnails ----------------------------------------------------------------

  var thumbs = new Map(); // url -> Promise of a blob URL (or the url itself)

  /* url: a thumbnail; img: the <img> to load it into itself (see show). */
  function thumbnail(url, img) {
    if (!thumbs.has(url)) {
      var p = request(url, { priority: PRIORITY.THUMBNAIL, accept: "image/jpeg", img: img }).then(function (r) {
        if (r.src) return r.src;
        var type = r.headers["content-type"] || "image/jpeg";
        return URL.createObjectURL(new Blob([r.buffer], { type: type }));
      });
      p.catch(function () {
        thumbs.delete(url); // asked again next time
      });
      thumbs.set(url, p);
    }
    return thumbs.get(url);
  }

  function show(img, delay) {
    var url = img.getAttribute("data-src");
    if (!url || img.dataset.asked === url) return;
    img.dataset.asked = url;
    // the first-paint copy's: loaded by the browser itself (see the header)
    thumbnail(url, img.closest("#first-paint") ? img : null).then(
      function (src) {
        if (img.getAttribute("data-src") !== url) return;
        if (img.getAttribute("src") !== src) img.src = src;
        if (img.parentElement) img.parentElement.classList.remove("failed");
      },
      function () {
        if (img.parentElement) img.parentElement.classList.add("failed");
        delete img.dataset.asked;
        var next = Math.min((delay || 5000) * 2, 60000);
        setTimeout(function () {
          if (document.contains(img)) show(img, next);
        }, delay || 5000);
      }
    );
  }

  function scan(root) {
    if (root.matches && root.matches("img.thumb-img[data-src]")) show(root);
    if (root.querySelectorAll) root.querySelectorAll("img.thumb-img[data-src]").forEach(function (img) {
      show(img);
    });
  }

  new MutationObserver(function (records) {
    records.forEach(function (r) {
      if (r.type === "attributes") show(r.target);
      else r.addedNodes.forEach(scan);
    });
  }).observe(document.documentElement, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ["data-src"],
  });

  // Signing out: the worker stops at once (no write after the cache is emptied).
  document.addEventListener(
    "click",
    function (event) {
      var link = event.target.closest && event.target.closest("a[href='/logout']");
      if (!link || !worker) return;
      worker.terminate();
      worker = null;
      asked.forEach(function (p) {
        p.reject(Object.assign(new Error("signing out"), { status: 0 }));
      });
      asked.clear();
    },
    true
  );

  window.imageQueue = {
    PRIORITY: PRIORITY,
    MAX_IN_FLIGHT: MAX_IN_FLIGHT,
    fetch: request,
    expect: expect,
    read: readCache,
    thumbnail: thumbnail,
    /* Resource timing of the page and of the worker: {name, startTime,
     * requestStart, responseEnd} in the page's clock (tests, benchmarks). */
    entries: function () {
      return performance
        .getEntriesByType("resource")
        .map(function (e) {
          return { name: e.name, startTime: e.startTime, requestStart: e.requestStart, responseEnd: e.responseEnd };
        })
        .concat(workerTiming.slice());
    },
    stats: function () {
      return Object.assign({ inFlight: running.size, waiting: waiting.length, worker: !!worker }, figures);
    },
  };
})();
