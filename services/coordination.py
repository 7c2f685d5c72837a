"""Coordination between processes, on a shared state store.

The store is a diskcache in a folder (every process of one machine that opens
it shares it; SQLite underneath) or, for several machines, Redis
(:class:`services.redisstate.RedisState`, the same small interface):
:func:`open_state` picks one. Every gunicorn worker, Celery worker and notebook
that opens the same store shares these primitives:

- :class:`SharedSlots`: at most ``limit`` holders at once, machine-wide: the
  global cap on requests in flight to Orthanc.
- :class:`KeyLock`: one holder per key: "fetch this image once" (single flight).
- :class:`Lease`: one leader among processes (the bulk loader's scheduler).
- :class:`Counters`: shared counters and per-second rates for the live panel.

Everything held is a *lease* with an expiry, so a process that dies holding a
slot or a lock frees it after ``lease`` seconds instead of blocking for ever.

On one machine (no Redis) the cap and the "fetch once" locks are the kernel's
file locks instead (:mod:`services.filelocks`, wired by
:func:`services.stack.open_stack`): a system call rather than an SQLite write
transaction each way, and freed the moment their process dies.

The store's interface is diskcache's, as far as used here: ``get``, ``set``,
``add``, ``delete``, ``incr``, ``in``, ``transact()`` and ``clear()``, plus
``delete_if(key, value)`` (compare and delete, atomically). A store that does
not answer raises :class:`StateUnavailable`; callers wait and try again.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache


class StateUnavailable(Exception):
    """The shared state store (Redis) does not answer right now."""


class SerialWriteCache(diskcache.Cache):
    """A ``diskcache.Cache`` whose write transactions queue on a lock of this
    process before SQLite's.

    Threads of one process that meet in SQLite's busy handler wait 1, 2, 5 ...
    100 ms between tries, however soon the lock frees; half the bulk loader's
    time went there. A thread lock hands over at once. Processes still meet in
    SQLite. (Every write of diskcache 5.6, pinned, goes through ``_transact``.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._write_lock = threading.RLock()  # transactions nest in one thread
        super().__init__(*args, **kwargs)

    @contextmanager
    def _transact(self, retry: bool = False, filename: str | None = None):  # type: ignore[no-untyped-def,override]
        with self._write_lock:
            with super()._transact(retry, filename) as value:
                yield value

    def delete_if(self, key: str, value: Any) -> bool:
        """Delete ``key`` if it holds ``value`` (a lock's or slot's owner)."""
        with self.transact():
            return self.get(key) == value and self.delete(key)

    def present(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` (strings) in the cache and not expired: one query
        per 500 instead of one ``in`` each (a study's recount at prefetch)."""
        found: set[str] = set()
        now = time.time()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._sql(
                f"SELECT key FROM Cache WHERE key IN ({marks}) AND raw = 1"
                " AND (expire_time IS NULL OR expire_time > ?)",
                (*chunk, now),
            ).fetchall()
            found.update(row[0] for row in rows)
        return found


def open_state(directory: str | Path, redis_url: str = "") -> Any:
    """The shared state store (small values; no eviction): Redis at
    ``redis_url`` when given, else a diskcache in ``directory``."""
    if redis_url:
        from .redisstate import RedisState

        return RedisState(redis_url)
    return SerialWriteCache(str(directory), timeout=60, eviction_policy="none")


def _token() -> str:
    return f"{os.getpid()}-{threading.get_ident()}-{random.random():.12f}"


class SharedSlots:
    """A machine-wide counting semaphore of ``limit`` leased slots."""

    def __init__(
        self,
        cache: diskcache.Cache,
        name: str = "orthanc",
        limit: int = 5,
        lease: float = 120.0,
        poll: float = 0.002,
    ) -> None:
        self.cache, self.name, self.limit = cache, name, limit
        self.lease, self.poll = lease, poll
        self.counters = Counters(cache, name)
        # Threads of this process queue here first, so that at most ``limit``
        # of them poll the shared slots (polling writes to SQLite).
        self._local = threading.BoundedSemaphore(limit)

    def _key(self, i: int) -> str:
        return f"slot:{self.name}:{i}"

    def acquire(self, timeout: float | None = None) -> tuple[str, str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._local.acquire(timeout=timeout):
            raise TimeoutError(f"no free {self.name} slot within {timeout} s")
        token = _token()
        delay = self.poll
        try:
            while True:
                for i in random.sample(range(self.limit), self.limit):
                    key = self._key(i)
                    # a read first: only a slot that looks free costs a write
                    if key not in self.cache and self.cache.add(
                        key, token, expire=self.lease
                    ):
                        self.counters.tick("requests")
                        self.counters.note_max("in_flight_max", self.in_use())
                        return key, token
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"no free {self.name} slot within {timeout} s")
                time.sleep(delay)
                delay = min(delay * 1.5, 0.02)
        except BaseException:
            self._local.release()
            raise

    def release(self, held: tuple[str, str]) -> None:
        key, token = held
        try:
            self.cache.delete_if(key, token)
        except StateUnavailable:
            pass  # the store forgot or will: the slot's lease frees it
        finally:
            self._local.release()

    def in_use(self) -> int:
        return sum(1 for i in range(self.limit) if self._key(i) in self.cache)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        held = self.acquire()
        try:
            yield
        finally:
            self.release(held)


class KeyLock:
    """Leased per-key locks: ``with locks("frame:abc"):``."""

    def __init__(
        self, cache: diskcache.Cache, lease: float = 120.0, poll: float = 0.002
    ) -> None:
        self.cache, self.lease, self.poll = cache, lease, poll
        # Threads of this process wait on a local lock per key first, so only
        # one of them polls the shared one (each poll is an SQLite write).
        self._local: dict[str, list] = {}  # key -> [lock, holders and waiters]
        self._guard = threading.Lock()

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._local.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                with self._shared(key):
                    yield
        finally:
            with self._guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._local[key]

    @contextmanager
    def _shared(self, key: str) -> Iterator[None]:
        token, name, delay = _token(), f"lock:{key}", self.poll
        while not self.cache.add(name, token, expire=self.lease):
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        try:
            yield
        finally:
            try:
                self.cache.delete_if(name, token)
            except StateUnavailable:
                pass  # the lock's lease frees it


class Lease:
    """Leader election: ``held()`` is True for one process at a time."""

    def __init__(self, cache: diskcache.Cache, name: str, ttl: float = 10.0) -> None:
        self.cache, self.key, self.ttl = cache, f"lease:{name}", ttl
        self.token = _token()
        self._renewed = -float("inf")  # monotonic time of our last renewal

    def held(self) -> bool:
        """Take or renew the lease; True when this process holds it.

        A lease renewed less than a quarter of its time ago is not renewed
        again: the scheduler asks before every fetch, and each renewal is a
        write transaction."""
        if time.monotonic() - self._renewed < self.ttl / 4:
            return True
        with self.cache.transact():
            owner = self.cache.get(self.key)
            if owner in (None, self.token):
                self.cache.set(self.key, self.token, expire=self.ttl)
                self._renewed = time.monotonic()
                return True
            self._renewed = -float("inf")
            return False

    def give_up(self) -> None:
        self._renewed = -float("inf")
        self.cache.delete_if(self.key, self.token)


class _Flusher:
    """One thread per process that flushes :class:`Counters` when they are due
    (a ``threading.Timer`` per flush started a thread four times a second per
    counter set, which showed in the loader's stack samples)."""

    def __init__(self) -> None:
        self._due: dict[Counters, float] = {}  # -> monotonic time to flush
        self._cv = threading.Condition()
        self._pid = -1  # the process whose thread runs

    def schedule(self, counters: Counters, delay: float) -> None:
        with self._cv:
            if self._pid != os.getpid():  # first use, or a forked child
                self._pid, self._due = os.getpid(), {}
                threading.Thread(
                    target=self._run, name="counters-flush", daemon=True
                ).start()
            if counters not in self._due:
                self._due[counters] = time.monotonic() + delay
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                now = time.monotonic()
                ready = [c for c, t in self._due.items() if t <= now]
                for c in ready:
                    del self._due[c]
                if not ready:
                    first = min(self._due.values(), default=now + 60)
                    self._cv.wait(first - now)
                    continue
            for counters in ready:
                try:
                    counters._flush_quietly()
                except Exception:  # keep flushing the others, and later ones
                    logging.getLogger(__name__).exception("counters flush failed")


_flusher = _Flusher()


def flush_counters() -> None:
    """Write every buffered count of this process now (a process about to end:
    its flushing thread is a daemon)."""
    with _flusher._cv:
        due, _flusher._due = list(_flusher._due), {}
    for counters in due:
        counters._flush_quietly()


def _after_fork_in_child() -> None:
    _flusher._cv = threading.Condition()  # another thread may have held it


os.register_at_fork(after_in_child=_after_fork_in_child)


class Counters:
    """Shared counters, maxima and per-second rates under one prefix.

    Counts are buffered in the process and written in one transaction at most
    every ``flush_every`` seconds (one thread of the process flushes the last
    ones; reads in this process flush first): a write transaction per event
    was a large part of the bulk loader's time, the threads queueing for
    SQLite's lock.
    """

    def __init__(
        self, cache: diskcache.Cache, prefix: str, flush_every: float = 0.25
    ) -> None:
        self.cache, self.prefix, self.flush_every = cache, prefix, flush_every
        self._pending: dict[str, int] = {}  # full key -> delta not yet written
        self._lock = threading.Lock()
        self._scheduled = False  # a flush is due (see _Flusher)
        self._maxima: dict[str, tuple[int, float]] = {}  # see note_max

    def add(self, name: str, delta: int = 1) -> None:
        self._buffer({f"count:{self.prefix}:{name}": delta})

    def tick(self, name: str, delta: int = 1) -> None:
        """Count an event in the current second (kept two minutes) and in total."""
        second = f"rate:{self.prefix}:{name}:{int(time.time())}"
        self._buffer({second: delta, f"count:{self.prefix}:{name}": delta})

    def _buffer(self, deltas: dict[str, int]) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._pending[key] = self._pending.get(key, 0) + delta
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            _flusher.schedule(self, self.flush_every)

    def flush(self) -> None:
        """Write the buffered counts (one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        if not pending:
            return
        try:
            with self.cache.transact():
                for key, delta in pending.items():
                    if key.startswith("rate:"):  # incr keeps the expiry set here
                        self.cache.add(key, 0, expire=120)
                    self.cache.incr(key, delta, default=0)
        except StateUnavailable:
            self._buffer(pending)  # kept for the next flush
            raise

    def _flush_quietly(self) -> None:
        """The timer's flush: a store that does not answer is tried again later."""
        try:
            self.flush()
        except StateUnavailable:
            pass

    def note_max(self, name: str, value: int) -> None:
        """Keep the largest value seen. A value not above the one this process
        read less than ``flush_every`` ago costs no read (one SQLite read per
        request to Orthanc otherwise); a cleared store is seen within that."""
        key = f"count:{self.prefix}:{name}"
        now = time.monotonic()
        known = self._maxima.get(key)  # (largest known, monotonic time read)
        if (
            known is not None
            and value <= known[0]
            and now - known[1] < self.flush_every
        ):
            return
        current = self.cache.get(key, 0)
        self._maxima[key] = (max(current, value), now)
        if value <= current:
            return
        with self.cache.transact():
            if value > self.cache.get(key, 0):
                self.cache.set(key, value)

    def get(self, name: str) -> int:
        self.flush()
        return int(self.cache.get(f"count:{self.prefix}:{name}", 0))

    def rate(self, name: str, seconds: int = 5) -> float:
        """Events per second over the last ``seconds`` full seconds."""
        self.flush()
        now = int(time.time())
        total = sum(
            self.cache.get(f"rate:{self.prefix}:{name}:{s}", 0)
            for s in range(now - seconds, now)
        )
        return total / seconds
