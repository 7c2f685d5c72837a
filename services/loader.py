"""The bulk loader: fetches every image of the requested studies into the
server-side cache in the background, the series being viewed first.

Any process may ask (:meth:`BulkLoader.prefetch`, :meth:`focus`, :meth:`retry`)
and read progress (:meth:`progress`); requests and progress live in the shared
state cache. One process at a time (the holder of a lease, see
:class:`~services.coordination.Lease`) schedules and runs the fetches on a few
worker threads; if it dies another takes over within the lease's time.

Where the fetching runs: by default a thread of every web process
(:meth:`start`), the lease letting one of them work. With ``kick`` (several
machines: Redis and Celery), the web processes only ask: each request calls
``kick()``, which queues a Celery task that runs :meth:`drain` in a worker
until nothing is left; a progress poll kicks again when work is queued and
nobody loads, and queues a study again whose requests the state store forgot
(a Redis restarted without persistence; also the first poll of a study never
opened queues it).

Priority, re-evaluated before every fetch: the focused series (the one a
viewer shows), nearest images to the current one first; then the other series
of the studies whose pages are open, in series order; then every other
requested study, oldest request first.

Loading an image means having its instance file in the image cache
(:meth:`~services.imagecache.CachingPacs.load_frame`); frames are decoded
when first asked for.

Failures: a PACS that does not answer (circuit breaker open, connection
refused) pauses loading with backoff and resumes when it answers, costing the
images nothing; other errors are retried with exponential backoff and jitter
up to ``max_attempts``; an image whose transfer syntax no installed decoder
reads fails at once. Failed images are listed per series and :meth:`retry`
puts them back in the queue.

# Developer notes
- A series' progress entry holds the set of its loaded image numbers (not a
  count), updated in short transactions, so two workers (or processes)
  finishing the same image count it once, and :meth:`prefetch` re-checks the
  set against the image cache (an image evicted since is loaded again and not
  counted meanwhile) without losing an image a worker adds during the check.
  Loading starts before that re-check (the listing is all it needs): a task
  whose image turns out cached costs a cache lookup; evicted images make
  :meth:`prefetch` ask the scheduler once more.
- Workers hand loaded images to the scheduler, which writes them at most
  every ``FLUSH_EVERY`` seconds (and at once when no fetch is running), every
  series in one transaction: one write per image was most of the loader's
  SQLite traffic. An image is in the cache before it is counted, so a
  re-check in between counts it from the cache; the scheduler writes before
  it recomputes what is left, so a loaded image is never queued again. The
  loading process's own :meth:`progress` counts the images not written yet
  (they stay in the batch until written), so a poll that reaches it sees a
  study complete at once rather than up to ``FLUSH_EVERY`` later.
- The scheduler keeps one task waiting for each worker (so a worker done goes
  on at once rather than after this thread gets the GIL: under load that
  wait was a good part of the workers' time), and looks at the shared request
  version at most every ``VERSION_EVERY`` seconds, at once after a request in
  this process (one read per image was most of the scheduler's time). A
  change of priority therefore reaches the workers a task each later, and a
  request in another process within ``VERSION_EVERY``. A task that waited
  through a pause of the PACS goes back in the queue unrun.
- The global cap of 5 requests in flight is not the loader's business: it is
  enforced under every PACS request (:class:`~services.coordination.SharedSlots`).
- A state store that does not answer (``StateUnavailable``: Redis down)
  pauses the scheduler like a PACS that does not answer; images loaded
  meanwhile stay pending until it answers again.
- :meth:`drain` gives up the lease when idle, then looks at the request
  version once more: a request that came while another drain was finishing
  (its own task found the lease taken and returned) is not lost.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import diskcache

from .coordination import Counters, Lease, SharedSlots, StateUnavailable
from .imagecache import CachingPacs
from .models import DecodeError, ImageRef, NotFound, PacsError, PacsUnavailable

log = logging.getLogger(__name__)

VISIBLE_FOR = 15.0  # seconds a study page counts as open after its last poll
FLUSH_EVERY = 0.05  # seconds between progress writes while images keep coming
VERSION_EVERY = 0.05  # seconds between looks at other processes' requests
FOCUS_FOR = 120.0  # seconds a focused series keeps top priority


@dataclass
class SeriesProgress:
    series_uid: str
    loaded: int
    total: int
    failed: list[int] = field(default_factory=list)  # image numbers
    state: str = "queued"  # queued | loading | complete | error | waiting
    error: str = ""

    def as_json(self) -> dict:
        d = asdict(self)
        return {
            "seriesUid": d["series_uid"],
            "loaded": d["loaded"],
            "total": d["total"],
            "failed": len(d["failed"]),
            "failedImages": d["failed"],
            "state": d["state"],
            "error": d["error"],
        }


@dataclass(frozen=True)
class Task:
    study_uid: str
    series_uid: str
    image: ImageRef

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.study_uid, self.series_uid, self.image.image_number)


class BulkLoader:
    """Requests and progress in ``state``; fetches through ``pacs``.

    Parameters
    ----------
    pacs
        The caching PACS: a loaded image is one in its cache.
    state
        The shared coordination cache.
    workers
        Fetching threads in the leading process (the PACS cap still applies).
    max_attempts
        Tries per image for errors other than "PACS unavailable".
    backoff
        First retry delay in seconds; doubles per attempt, with jitter.
    shard
        ``(i, n)``: load only the images whose instance falls in share ``i``
        of ``n`` (the processes of :class:`~services.loaderprocess.LoaderProcesses`),
        under a lease of that share.
    kick
        When given, fetching runs elsewhere (a Celery worker's :meth:`drain`,
        or :class:`~services.loaderprocess.LoaderProcesses`): called after every
        request to have it run. :meth:`stop` calls its ``close`` if it has one.
    """

    def __init__(
        self,
        pacs: CachingPacs,
        state: diskcache.Cache,
        *,
        workers: int = 4,
        max_attempts: int = 4,
        backoff: float = 0.5,
        shard: tuple[int, int] = (0, 1),
        kick: Callable[[], None] | None = None,
    ) -> None:
        self.pacs, self.state = pacs, state
        self.shard = shard
        self.kick = kick
        self.workers = workers
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.stats = Counters(state, "loader")
        self.lease = Lease(
            state,
            "bulk-loader" if shard[1] == 1 else f"bulk-loader:{shard[0]}/{shard[1]}",
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._asked = threading.Event()  # a request in this process: look now
        self._start_lock = threading.Lock()
        # image -> (attempts, next try): only the leading process fetches
        self._attempts: dict[tuple[str, str, int], tuple[int, float]] = {}
        self._started: set[tuple[str, str]] = set()
        # progress key -> image numbers loaded, not yet in the shared progress
        self._pending: dict[str, set[int]] = {}
        self._pending_lock = threading.Lock()
        self._flushed = 0.0  # monotonic time of the last progress write
        self._paused_until = 0.0  # monotonic: the PACS did not answer, wait

    # -- requests (any process) ---------------------------------------------------

    def prefetch(self, study_uid: str) -> list[SeriesProgress]:
        """Queue every image of the study (idempotent) and return its progress."""
        series = self._image_series(study_uid)  # NotFound for unknown studies
        self._set_jobs(add=[study_uid])
        self._bump()  # loading starts now; the recount below runs alongside
        if self._revalidate(study_uid, series):
            self._bump()  # images evicted since: to load again
        return self.progress(study_uid, recover=False)

    def touch(self, study_uid: str) -> None:
        """The study's page is open (called by its progress poll)."""
        self.state.set(f"seen:{study_uid}", time.time(), expire=VISIBLE_FOR * 4)

    def focus(self, study_uid: str, series_uid: str, image_index: int = 0) -> None:
        """Load this series first, outward from ``image_index`` (0-based)."""
        self.state.set("focus", (study_uid, series_uid, image_index, time.time()))
        self._bump()

    def retry(self, study_uid: str, series_uid: str) -> None:
        """Put the series' failed images back in the queue."""
        key = f"progress:{study_uid}:{series_uid}"
        with self.state.transact():
            entry = self.state.get(key)
            if entry:
                entry.update(failed=[], error="")
                self.state.set(key, entry)
        self._set_jobs(add=[study_uid])  # a finished study left the queue
        self._bump()

    def progress(self, study_uid: str, recover: bool = True) -> list[SeriesProgress]:
        """Per image series, in the study's series order. In the process that
        loads, images loaded and not yet written count too."""
        out = []
        with self._pending_lock:
            pending = {key: set(numbers) for key, numbers in self._pending.items()}
        for series_uid, images in self._image_series(study_uid).items():
            key = f"progress:{study_uid}:{series_uid}"
            entry = self.state.get(key) or {}
            done = entry.get("done", ())
            loaded = len(set(done) | pending[key]) if key in pending else len(done)
            failed = entry.get("failed", [])
            if loaded == len(images):
                state = "complete"
            elif failed and loaded + len(failed) >= len(images):
                state = "error"
            elif entry.get("waiting"):
                state = "waiting"
            elif loaded or entry.get("started"):
                state = "loading"
            else:
                state = "queued"
            out.append(
                SeriesProgress(
                    series_uid,
                    loaded,
                    len(images),
                    list(failed),
                    state,
                    entry.get("error", ""),
                )
            )
        if self.kick is not None and recover:
            return self._recover(study_uid, out)
        return out

    def _recover(
        self, study_uid: str, progress: list[SeriesProgress]
    ) -> list[SeriesProgress]:
        """Loading elsewhere (Celery): a study with images neither loaded nor
        failed that is not queued was forgotten (Redis restarted without
        persistence): queue it again. Work queued while no one holds the
        lease (a worker died): kick. Each at most every few seconds."""
        jobs = self.state.get("jobs", {})
        unsettled = any(p.loaded + len(p.failed) < p.total for p in progress)
        if (
            unsettled
            and study_uid not in jobs
            and self.state.add(f"requeued:{study_uid}", 1, expire=5.0)
        ):
            log.info("study %s was not queued any more: queued again", study_uid)
            return self.prefetch(study_uid)
        if (
            jobs
            and self.lease.key not in self.state
            and self.state.add("kicked", 1, expire=2.0)
        ):
            self.kick()  # type: ignore[misc]
        return progress

    def queue_length(self) -> int:
        total = 0
        for study_uid in self.state.get("jobs", {}):
            try:
                total += sum(
                    p.total - p.loaded - len(p.failed) for p in self.progress(study_uid)
                )
            except PacsError:
                continue
        return total

    def _set_jobs(
        self, add: Sequence[str] = (), drop: Sequence[str] = (), seen: int = -1
    ) -> None:
        """Add studies to the queue (keeping their first request time) or drop
        the finished ones. An add is a new request version; a drop decided at
        version ``seen`` is skipped when a request came since (a Retry landing
        between the scheduler's look and its drop would be lost)."""
        with self.state.transact():
            if drop and self.state.get("loader:version", 0) != seen:
                drop = ()
            jobs = self.state.get("jobs", {})
            for uid in add:
                jobs.setdefault(uid, time.time())
            for uid in drop:
                jobs.pop(uid, None)
            self.state.set("jobs", jobs)
            if add:
                self.state.incr("loader:version", default=0)

    def _image_series(self, study_uid: str) -> dict[str, list[ImageRef]]:
        return {k: v for k, v in self.pacs.series_images(study_uid).items() if v}

    def _bump(self) -> None:
        self.state.incr("loader:version", default=0)
        self.wake()
        if self.kick is not None:
            self.kick()

    def _revalidate(self, study_uid: str, series: dict[str, list[ImageRef]]) -> bool:
        """Recount from what is really in the image cache (it may have evicted
        some), every series in one transaction; an image a worker adds while
        we look stays counted. True when an image counted before is gone."""
        keys = {uid: f"progress:{study_uid}:{uid}" for uid in series}
        before = {
            uid: set((self.state.get(key) or {}).get("done", ()))
            for uid, key in keys.items()
        }
        have = self.pacs.cached_frames([i for v in series.values() for i in v])
        cached = {
            uid: {
                i.image_number for i in images if (i.instance_id, i.frame_index) in have
            }
            for uid, images in series.items()
        }
        evicted = False
        with self.state.transact():
            for uid, key in keys.items():
                entry = self.state.get(key) or {"failed": [], "error": ""}
                now = set(entry.get("done", ()))
                evicted = evicted or bool(before[uid] - cached[uid])
                entry["done"] = cached[uid] | (now - before[uid])
                self.state.set(key, entry)
        return evicted

    # -- scheduling (the leading process) --------------------------------------------

    def start(self) -> None:
        """Run the scheduler thread in this process (it works while it leads);
        nothing with a ``kick``: loading runs elsewhere."""
        if self.kick is not None or (
            self._thread is not None and self._thread.is_alive()
        ):
            return
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="bulk-loader", daemon=True
            )
            self._thread.start()

    def drain(self) -> None:
        """Load in this thread until nothing is left, unless another process
        is loading (its lease): the Celery task's body. A store that does not
        answer ends it; the next request or progress poll kicks again."""
        try:
            while self.lease.held():
                seen = self._run(until_idle=True)
                self.lease.give_up()
                if seen < 0 or self.state.get("loader:version", 0) == seen:
                    return  # lost the lease, or no request came since idle
        except StateUnavailable as exc:
            log.warning("loader stops: %s", exc)

    def wake(self) -> None:
        """Look at the requests now (another process wrote one: see ``kick``)."""
        self._asked.set()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.lease.give_up()
        close = getattr(self.kick, "close", None)
        if close is not None:
            close()

    def _candidates(self, version: int) -> list[Task]:
        """Every image still to load, best first, as of request ``version``."""
        jobs: dict[str, float] = self.state.get("jobs", {})
        focus = self.state.get("focus")
        if focus and time.time() - focus[3] > FOCUS_FOR:
            focus = None
        now = time.time()

        def study_rank(uid: str) -> tuple:
            seen = self.state.get(f"seen:{uid}", 0)
            return (
                0 if focus and focus[0] == uid else 1,
                0 if now - seen < VISIBLE_FOR else 1,
                -seen,
                jobs[uid],
            )

        firsts: list[Task] = []  # each series' first image: what its card shows
        tasks: list[Task] = []
        finished = []  # every image loaded or failed (or the study is gone)
        for study_uid in sorted(jobs, key=study_rank):
            try:
                series = self._image_series(study_uid)
            except NotFound:
                finished.append(study_uid)
                continue
            except PacsError:  # not listed yet and the PACS is down: later
                continue
            before = len(tasks)
            order = list(series)
            if focus and focus[0] == study_uid and focus[1] in series:
                order.remove(focus[1])
                order.insert(0, focus[1])
            for series_uid in order:
                images = series[series_uid]
                if focus and focus[:2] == (study_uid, series_uid):
                    centre = focus[2]
                    images = sorted(
                        images, key=lambda i: abs(i.image_number - 1 - centre)
                    )
                entry = self.state.get(f"progress:{study_uid}:{series_uid}") or {}
                skip = set(entry.get("failed", ())) | set(entry.get("done", ()))
                tasks.extend(
                    Task(study_uid, series_uid, i)
                    for i in images
                    if i.image_number not in skip
                )
            if len(tasks) == before:
                finished.append(study_uid)
            firsts += [t for t in tasks[before:] if t.image.image_number == 1]
        if finished:
            self._set_jobs(drop=finished, seen=version)
        # the series on screen, then every card's first image, then the rest
        on_screen = focus[:2] if focus else None
        focused = [t for t in tasks if (t.study_uid, t.series_uid) == on_screen]
        ordered = focused + [t for t in firsts if t not in focused]
        taken = set(ordered)
        ordered += [t for t in tasks if t not in taken]
        share, shares = self.shard
        if shares == 1:
            return ordered
        return [
            t
            for t in ordered
            if zlib.crc32(t.image.instance_id.encode()) % shares == share
        ]

    def _run(self, until_idle: bool = False) -> int:
        """The scheduler. With ``until_idle`` it returns once nothing is left
        (the request version it saw then) or the lease is lost (-1)."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bulk-fetch")
        running: dict[tuple, tuple[Task, Future]] = {}  # or waiting for a worker
        self._paused_until = 0.0  # monotonic; tasks waiting for a worker see it
        pause = self.backoff
        version, queue = -1, []
        looked = -float("inf")  # monotonic time of the last version read
        down = self.backoff  # wait while the state store does not answer
        try:
            while not self._stop.is_set():
                try:
                    if not self.lease.held():
                        if until_idle:
                            return -1
                        self._wake.wait(2.0)
                        self._wake.clear()
                        continue
                    for key in [k for k, (_, f) in running.items() if f.done()]:
                        task, future = running.pop(key)
                        outcome = future.result()
                        if outcome in ("retry", "unavailable", "paused"):
                            queue.insert(0, task)  # next, once its wait is over
                        if outcome == "unavailable":
                            self._paused_until = time.monotonic() + pause * (
                                random.uniform(0.5, 1.0)
                            )
                            pause = min(pause * 2, 10.0)
                        elif outcome == "ok":
                            pause = self.backoff
                    if not running or time.monotonic() - self._flushed >= FLUSH_EVERY:
                        self._flush()
                    # one task waits for each worker: a worker done goes on at
                    # once instead of waiting for this thread to get the GIL
                    full = len(running) >= 2 * self.workers
                    if time.monotonic() < self._paused_until or full:
                        self._wake.wait(0.02)
                        self._wake.clear()
                        continue
                    if (
                        self._asked.is_set()
                        or (not queue and not running)
                        or time.monotonic() - looked >= VERSION_EVERY
                    ):
                        self._asked.clear()
                        looked = time.monotonic()
                        current = self.state.get("loader:version", 0)
                        if current != version or not queue:
                            self._flush()  # a loaded image must not look to load
                            version, queue = current, self._candidates(current)
                    task = self._next(queue, running)
                    if task is None:
                        if not running and not queue and until_idle:
                            return version  # nothing left to load
                        if not running:
                            self._wake.wait(1.0)  # idle until asked
                            self._wake.clear()
                            version = -1
                        else:
                            self._wake.wait(0.02)
                            self._wake.clear()
                        continue
                    future = pool.submit(self._load, task)
                    future.add_done_callback(
                        lambda _f: self._wake.set()
                    )  # refill at once
                    running[task.key] = (task, future)
                    down = self.backoff
                except StateUnavailable as exc:
                    log.warning("loader waits for the state store: %s", exc)
                    self._wake.wait(down * random.uniform(0.5, 1.0))
                    self._wake.clear()
                    down, version = min(down * 2, 5.0), -1
            return -1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                self._flush()
            except StateUnavailable:
                log.warning("loader stopped with progress not written (store down)")

    def _next(self, queue: list[Task], running: dict) -> Task | None:
        """The best task that is neither running nor backing off."""
        now = time.time()
        for index, task in enumerate(queue):
            if task.key in running:
                continue
            attempts = self._attempts.get(task.key)
            if attempts and attempts[1] > now:
                continue
            del queue[index]
            return task
        return None

    def _load(self, task: Task) -> str:
        """Fetch one image; record the outcome in the shared progress."""
        if time.monotonic() < self._paused_until:  # queued before the pause
            return "paused"
        try:
            return self._load_one(task)
        except StateUnavailable:  # locks, slots or progress: wait like a PACS
            return "unavailable"

    def _load_one(self, task: Task) -> str:
        study, series, number = task.study_uid, task.series_uid, task.image.image_number
        key = f"progress:{study}:{series}"
        if (study, series) not in self._started:  # one shared write per series
            self._started.add((study, series))
            self._update(key, started=True)
        try:  # the file only: its frames are decoded when asked for
            self.pacs.load_frame(task.image.instance_id, task.image.frame_index)
        except PacsUnavailable as exc:
            self._update(key, waiting=True, error=str(exc))
            return "unavailable"
        except (DecodeError, NotFound) as exc:
            self._fail(task, str(exc))
            return "failed"
        except StateUnavailable:
            raise  # not the image's fault: costs it no attempt
        except Exception as exc:  # PacsError or a bug: retry with backoff
            attempts = self._attempts.get(task.key, (0, 0.0))[0] + 1
            if attempts >= self.max_attempts:
                self._fail(task, str(exc))
                return "failed"
            delay = self.backoff * 2 ** (attempts - 1) * random.uniform(0.5, 1.5)
            self._attempts[task.key] = (attempts, time.time() + delay)
            log.info(
                "image %s of series %s: attempt %d failed (%s)",
                number,
                series,
                attempts,
                exc,
            )
            return "retry"
        self._attempts.pop(task.key, None)
        with self._pending_lock:  # written by the scheduler in a batch
            self._pending.setdefault(key, set()).add(number)
        return "ok"

    def _flush(self) -> None:
        """Write the loaded images of every series in one transaction (one
        per image was most of the loader's SQLite traffic); an image already
        in a series' set is counted once."""
        with self._pending_lock:  # kept (and counted by progress) until written
            pending = {key: set(numbers) for key, numbers in self._pending.items()}
        self._flushed = time.monotonic()
        if not pending:
            return
        added = 0
        with self.state.transact():  # StateUnavailable: kept for the next flush
            for key, numbers in pending.items():
                entry = self.state.get(key) or {"failed": [], "error": ""}
                done = set(entry.get("done", ()))
                added += len(numbers - done)
                entry["done"] = done | numbers
                if entry.get("waiting"):  # the PACS answers again
                    entry.update(waiting=False, error="")
                self.state.set(key, entry)
        with self._pending_lock:
            for key, numbers in pending.items():
                left = self._pending[key] - numbers
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]
        if added:
            self.stats.tick("images", added)

    def _update(self, key: str, **changes: object) -> None:
        with self.state.transact():
            entry = self.state.get(key) or {"failed": [], "error": ""}
            entry.update(changes)
            self.state.set(key, entry)

    def _fail(self, task: Task, error: str) -> None:
        self._attempts.pop(task.key, None)  # a retry starts afresh
        number = task.image.image_number
        key = f"progress:{task.study_uid}:{task.series_uid}"
        log.warning("image %s of series %s failed: %s", number, task.series_uid, error)
        with self.state.transact():
            entry = self.state.get(key) or {"failed": [], "error": ""}
            if number not in entry["failed"]:
                entry["failed"] = sorted([*entry["failed"], number])
            entry["error"] = error
            self.state.set(key, entry)


def loader_stats(
    pacs: CachingPacs, loader: BulkLoader, slots: SharedSlots | None
) -> dict:
    """Figures for the live panel: PACS requests, cache, queue."""
    hits, misses = pacs.stats.get("hits"), pacs.stats.get("misses")
    return {
        "requests_per_s": round(slots.counters.rate("requests"), 1) if slots else 0.0,
        "in_flight": slots.in_use() if slots else 0,
        "in_flight_max": slots.counters.get("in_flight_max") if slots else 0,
        "cap": slots.limit if slots else "none (no PACS)",
        "hit_rate": f"{100 * hits / (hits + misses):.0f} %" if hits + misses else "—",
        "fetched_mb": round(pacs.stats.get("bytes_fetched") / 2**20, 1),
        "cache_mb": round(pacs.images.volume() / 2**20, 1),
        "queue": loader.queue_length(),
        "images_per_s": round(loader.stats.rate("images"), 1),
    }
