/* The browser's image cache: IndexedDB, shared by every page of the app.
 *
 * window.imageCache.get(key) -> Promise of {buffer, headers} or null
 * window.imageCache.has(key) -> false once the page knows key is not stored
 * window.imageCache.put(key, buffer, headers) -> Promise
 * window.imageCache.putBatch(buffer, contentType) -> Promise of [{url, bytes}]
 * window.imageCache.splitBatch(buffer, contentType) -> [{key, buffer, headers}]
 * window.imageCache.clear(), .stats(), .settings(), .configure({...})
 *
 * Entries are image responses keyed by URL (instance, frame and rendering
 * parameters are all in it). Each carries a CRC-32 of its bytes checked on
 * read: a mismatch drops the entry and the caller fetches again. Entries older
 * than the expiry (24 h by default) are dropped on read; past the byte budget
 * (300 MB by default) the least recently used go first. Both are set in the
 * viewer's cache panel and kept in localStorage. CACHE_VERSION names the
 * database: a new version deletes the old one on first use. The cache belongs
 * to one user: another user's first use, and signing out, empty it.
 *
 * Two stores: "images" holds the bytes, "entries" the small records (size,
 * created, last used) that expiry and eviction walk without loading bytes.
 *
 * The same file runs in the page's image worker (assets/imageworker.js,
 * importScripts): there it stores what the worker fetched, with the page's
 * settings handed over (a worker has no localStorage), and the page learns of
 * each write through noteWrite().
 */
(function () {
  "use strict";
  var root = typeof window !== "undefined" ? window : self; // page or worker
  var CACHE_VERSION = 1;
  var NAME = "ctmr-images-v" + CACHE_VERSION;
  var DEFAULTS = { expiryHours: 24, budgetMB: 300 };
  var SETTINGS_KEY = "imageCache.settings";

  var clock = function () {
    return Date.now();
  };
  var counts = { hits: 0, misses: 0, corrupt: 0, expired: 0, evicted: 0 };
  var dbPromise = null;
  var evicting = null;
  var signingOut = false; // no more writes: the session is ending
  // keys stored, read once at open: a miss answers at once, without queueing
  // behind the writes of images arriving meanwhile
  var known = null;
  var given = null; // in a worker: the page's settings (no localStorage there)

  // -- CRC-32 (IEEE), a table-driven loop: ~1 ms for a 512 x 512 int16 frame
  var TABLE = (function () {
    var t = new Uint32Array(256);
    for (var n = 0; n < 256; n++) {
      var c = n;
      for (var k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();
  function crc32(buffer) {
    var bytes = new Uint8Array(buffer),
      crc = 0xffffffff;
    for (var i = 0; i < bytes.length; i++) crc = TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
    return (crc ^ 0xffffffff) >>> 0;
  }

  function settings() {
    if (given) return Object.assign({}, given);
    try {
      var saved = JSON.parse(root.localStorage.getItem(SETTINGS_KEY) || "{}");
      return {
        expiryHours: saved.expiryHours > 0 ? saved.expiryHours : DEFAULTS.expiryHours,
        budgetMB: saved.budgetMB > 0 ? saved.budgetMB : DEFAULTS.budgetMB,
      };
    } catch (e) {
      return Object.assign({}, DEFAULTS);
    }
  }

  function request(req) {
    return new Promise(function (resolve, reject) {
      req.onsuccess = function () {
        resolve(req.result);
      };
      req.onerror = function () {
        reject(req.error);
      };
    });
  }

  function done(tx) {
    return new Promise(function (resolve, reject) {
      tx.oncomplete = resolve;
      tx.onerror = tx.onabort = function () {
        reject(tx.error);
      };
    });
  }

  /* Open (creating) this version's database; delete older versions. */
  function open() {
    if (dbPromise) return dbPromise;
    if (!root.indexedDB) return (dbPromise = Promise.resolve(null));
    dbPromise = new Promise(function (resolve) {
      var req = root.indexedDB.open(NAME, 1);
      req.onupgradeneeded = function () {
        var db = req.result;
        db.createObjectStore("images");
        db.createObjectStore("entries", { keyPath: "key" }).createIndex("used", "used");
        db.createObjectStore("meta");
        for (var v = 0; v < CACHE_VERSION; v++) root.indexedDB.deleteDatabase("ctmr-images-v" + v);
      };
      req.onsuccess = function () {
        var db = req.result;
        request(db.transaction("entries").objectStore("entries").getAllKeys()).then(
          function (keys) {
            known = new Set(keys);
            resolve(db);
          },
          function () {
            resolve(db);
          }
        );
      };
      req.onerror = req.onblocked = function () {
        resolve(null); // no cache (private mode, quota): everything still works
      };
    });
    return dbPromise;
  }

  function forgetKeys(keys) {
    if (known) keys.forEach(function (k) { known.delete(k); });
  }

  function drop(db, key) {
    forgetKeys([key]);
    var tx = db.transaction(["images", "entries"], "readwrite");
    tx.objectStore("images").delete(key);
    tx.objectStore("entries").delete(key);
    return done(tx);
  }

  function get(key) {
    return open().then(function (db) {
      if (!db) return null;
      if (known && !known.has(key)) {
        counts.misses++;
        return null;
      }
      var tx = db.transaction(["images", "entries"], "readonly");
      return Promise.all([
        request(tx.objectStore("entries").get(key)),
        request(tx.objectStore("images").get(key)),
      ]).then(function (found) {
        var entry = found[0],
          value = found[1];
        if (!entry || !value) {
          counts.misses++;
          return null;
        }
        if (clock() - entry.created > settings().expiryHours * 3600e3) {
          counts.expired++;
          counts.misses++;
          return drop(db, key).then(function () {
            return null;
          });
        }
        if (crc32(value.buffer) !== entry.crc) {
          counts.corrupt++;
          counts.misses++;
          return drop(db, key).then(function () {
            return null;
          });
        }
        counts.hits++;
        entry.used = clock();
        db.transaction("entries", "readwrite").objectStore("entries").put(entry);
        return { buffer: value.buffer, headers: value.headers };
      });
    });
  }

  var writing = new Set(); // puts not finished yet

  function put(key, buffer, headers) {
    return putMany([{ key: key, buffer: buffer, headers: headers }]);
  }

  /* items: [{key, buffer, headers}], stored in one transaction. */
  function putMany(items) {
    var work = open().then(function (db) {
      if (!db || signingOut) return;
      var now = clock();
      var tx = db.transaction(["images", "entries"], "readwrite");
      items.forEach(function (item) {
        if (known) known.add(item.key);
        tx.objectStore("images").put({ buffer: item.buffer, headers: item.headers }, item.key);
        tx.objectStore("entries").put({
          key: item.key,
          size: item.buffer.byteLength,
          crc: crc32(item.buffer),
          created: now,
          used: now,
        });
      });
      return done(tx).then(evictSoon, function () {
        return evictSoon(); // quota: make room for the next one
      });
    });
    writing.add(work);
    var settle = function () {
      writing.delete(work);
    };
    work.then(settle, settle);
    return work;
  }

  /* A batch answer (multipart/related, each part with Content-Location and
   * Content-Length: api/pacs.py bulk_frames) split into the single answers
   * it holds: [{key, buffer, headers}], headers as a single answer's (x-*,
   * content-type). Throws on anything else (the caller asks singly). */
  function splitBatch(buffer, contentType) {
    var m = /boundary="?([^";]+)"?/.exec(contentType || "");
    if (!m) throw new Error("no multipart boundary");
    var bytes = new Uint8Array(buffer),
      delimiter = "--" + m[1],
      parts = [],
      at = 0;
    function text(from, to) {
      return String.fromCharCode.apply(null, bytes.subarray(from, Math.min(to, from + 8192)));
    }
    for (;;) {
      if (text(at, at + delimiter.length + 2) === delimiter + "--") return parts;
      var end = at; // the part's head ends at an empty line
      while (end + 3 < bytes.length && !(bytes[end] === 13 && bytes[end + 1] === 10 && bytes[end + 2] === 13 && bytes[end + 3] === 10)) end++;
      var lines = text(at, end).split("\r\n");
      if (lines[0] !== delimiter || end + 3 >= bytes.length) throw new Error("not a batch answer");
      var headers = {};
      lines.slice(1).forEach(function (line) {
        var colon = line.indexOf(":");
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      });
      var length = Number(headers["content-length"]),
        start = end + 4;
      if (!headers["content-location"] || !(length >= 0) || start + length > bytes.length) throw new Error("bad part");
      var kept = {};
      Object.keys(headers).forEach(function (name) {
        if (name.indexOf("x-") === 0 || name === "content-type") kept[name] = headers[name];
      });
      parts.push({ key: headers["content-location"], buffer: buffer.slice(start, start + length), headers: kept });
      at = start + length + 2; // the part's closing CRLF
    }
  }

  /* Store a batch answer's images, each under its own URL: a promise of
   * [{url, bytes}]. */
  function putBatch(buffer, contentType) {
    var parts = splitBatch(buffer, contentType);
    return putMany(parts).then(function () {
      return parts.map(function (p) {
        return { url: p.key, bytes: p.buffer.byteLength };
      });
    });
  }

  /* Every put so far stored and the budget enforced. */
  function idle() {
    var all = Array.from(writing).map(function (p) {
      return p.catch(function () {});
    });
    return Promise.all(all).then(function () {
      return writing.size ? idle() : evictSoon();
    });
  }

  /* Least recently used out until the cache is within its budget (one walk
   * at a time, after the puts that made it grow). */
  function evictSoon() {
    if (!evicting) {
      evicting = evict().then(
        function () {
          evicting = null;
        },
        function () {
          evicting = null;
        }
      );
    }
    return evicting;
  }

  function evict() {
    return open().then(function (db) {
      if (!db) return;
      var budget = settings().budgetMB * 1024 * 1024;
      return request(db.transaction("entries").objectStore("entries").index("used").getAll()).then(
        function (entries) {
          var total = entries.reduce(function (sum, e) {
            return sum + e.size;
          }, 0);
          var doomed = [];
          for (var i = 0; i < entries.length && total > budget; i++) {
            doomed.push(entries[i].key); // oldest "used" first
            total -= entries[i].size;
          }
          if (!doomed.length) return;
          counts.evicted += doomed.length;
          forgetKeys(doomed);
          var tx = db.transaction(["images", "entries"], "readwrite");
          doomed.forEach(function (key) {
            tx.objectStore("images").delete(key);
            tx.objectStore("entries").delete(key);
          });
          return done(tx);
        }
      );
    });
  }

  function clear() {
    return open().then(function (db) {
      if (!db) return;
      if (known) known.clear();
      var tx = db.transaction(["images", "entries", "meta"], "readwrite");
      ["images", "entries", "meta"].forEach(function (name) {
        tx.objectStore(name).clear();
      });
      return done(tx);
    });
  }

  /* The cache belongs to one user: another user's first use empties it. */
  function claim(user) {
    return open().then(function (db) {
      if (!db || !user) return;
      return request(db.transaction("meta").objectStore("meta").get("user")).then(function (owner) {
        if (owner === user) return;
        return clear().then(function () {
          var tx = db.transaction("meta", "readwrite");
          tx.objectStore("meta").put(user, "user");
          return done(tx);
        });
      });
    });
  }

  function summary() {
    return open().then(function (db) {
      if (!db) return { entries: 0, bytes: 0 };
      return request(db.transaction("entries").objectStore("entries").getAll()).then(function (all) {
        return {
          entries: all.length,
          bytes: all.reduce(function (sum, e) {
            return sum + e.size;
          }, 0),
          keys: all.map(function (e) {
            return e.key;
          }),
        };
      });
    });
  }

  /* The page: a write the image worker makes (done: a promise of it; when
   * none will come, the page's queue calls forget(key)). */
  function noteWrite(key, done) {
    if (known) known.add(key);
    var work = done.then(null, function () {}); // (the worker evicted after it)
    writing.add(work);
    work.then(function () {
      writing.delete(work);
    });
  }

  root.imageCache = {
    version: CACHE_VERSION,
    get: get,
    /* Whether key is stored, as far as this page knows (true before the
     * database is open: get() will tell). */
    has: function (key) {
      return known ? known.has(key) : true;
    },
    put: put,
    putBatch: putBatch,
    /* A batch answer's parts: [{key, buffer, headers}] (nothing stored). */
    splitBatch: splitBatch,
    clear: clear,
    claim: claim,
    summary: summary,
    evict: evictSoon,
    idle: idle,
    noteWrite: noteWrite,
    /* The page: key is not stored after all (a write noted and not made). */
    forget: function (key) {
      forgetKeys([key]);
    },
    signingOut: function () {
      return signingOut;
    },
    settings: settings,
    /* The worker: use these settings, not localStorage. */
    useSettings: function (values) {
      given = values;
    },
    configure: function (values) {
      var next = Object.assign(settings(), values || {});
      window.localStorage.setItem(SETTINGS_KEY, JSON.stringify(next));
      return evictSoon();
    },
    stats: function () {
      var looked = counts.hits + counts.misses;
      return Object.assign({ hitRate: looked ? counts.hits / looked : null }, counts);
    },
    /* Tests: a controlled clock (ms since the epoch). */
    setClock: function (fn) {
      clock = fn || Date.now;
    },
  };

  // Signing out empties the cache before the server forgets the session.
  if (typeof document === "undefined") return; // in the worker
  document.addEventListener(
    "click",
    function (event) {
      var link = event.target.closest && event.target.closest("a[href='/logout']");
      if (!link) return;
      event.preventDefault();
      signingOut = true; // images still arriving are not stored
      var leave = function () {
        window.location.assign("/logout");
      };
      clear().then(leave, leave);
      setTimeout(leave, 2000); // never keep a user from signing out
    },
    true
  );
})();
