"""Machine-wide slots and per-key locks on the kernel's byte-range locks.

Every process of one machine that opens the same lock files shares these:

- :class:`FileSlots`: at most ``limit`` holders at once across all processes
  (the cap on requests in flight to Orthanc), byte ``i`` of a lock file being
  slot ``i``.
- :class:`FileKeyLock`: one holder per key across all processes ("fetch this
  image once"), a key's hash bucket being one byte of another lock file.

The kernel drops a process's locks the moment it exits, however it exits
(``kill -9`` included), so nothing here needs a lease or an expiry, and taking
or giving back a slot is a system call, not an SQLite write transaction (four
of those per image were the bulk loader's largest cost after the network,
bench/RESULTS.md). With ``REDIS_URL`` (several machines) the leased slots and
locks of :mod:`services.coordination` are used instead: these locks do not
reach past one machine (nor, reliably, across NFS).

```python
slots = FileSlots("var/cache/locks/orthanc.slots", limit=5)
with slots():
    ...  # at most 5 of these at once on this machine

locks = FileKeyLock("var/cache/locks/keys.locks")
with locks("instance:abc"):
    ...  # one holder of "instance:abc" at a time
```

# Developer notes
- POSIX record locks (``fcntl.lockf``, i.e. ``F_SETLK``) belong to the
  process: a second thread locking a byte its process holds succeeds, and
  unlocking drops the process's lock whoever still counts on it. So threads
  of one process claim a slot or bucket in this process first (a set of held
  bytes under a thread lock; a thread lock per bucket) and only then the
  kernel's; they wait for each other on thread primitives, which hand over
  at once. Only waiting for another process polls (non-blocking tries with a
  short backoff): ``F_SETLKW`` cannot wait for "any of N bytes", and its
  deadlock detection sees processes, not threads, so it would report false
  deadlocks between two multi-threaded processes.
- Closing any descriptor of a file drops all the process's locks on it, so
  each lock file is opened once per process (:func:`_lock_file`) and never
  closed.
- A forked child holds none of its parent's locks: the in-process bookkeeping
  is per process id, so a child starts afresh (gunicorn forks its workers).
  Objects of one process on the same file share it.
- A process that hangs while holding a slot keeps it: the HTTP timeouts bound
  how long a request to Orthanc can hold one.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class _LockFile:
    """This process's descriptor of one lock file and its threads' bookkeeping."""

    def __init__(self, path: str, slots: int) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.guard = threading.Lock()
        self.held: set[int] = set()  # bytes this process holds (slots)
        self.local = threading.BoundedSemaphore(slots)  # slots' threads queue here
        self.buckets: dict[int, threading.Lock] = {}  # key locks' threads


_files: dict[tuple[int, str], _LockFile] = {}  # (pid, path) -> its state
_files_guard = threading.Lock()


def _after_fork_in_child() -> None:
    global _files_guard
    _files_guard = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def _lock_file(path: str | Path, slots: int = 1) -> _LockFile:
    """This process's one :class:`_LockFile` for ``path`` (created if absent),
    shared by every object using that path, so that they account together."""
    key = (os.getpid(), str(path))
    with _files_guard:
        entry = _files.get(key)
        if entry is None:
            entry = _files[key] = _LockFile(path, slots)
        return entry


def _try_lock(fd: int, byte: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
        return True
    except OSError:  # EACCES or EAGAIN: another process holds it
        return False


def _unlock(fd: int, byte: int) -> None:
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)


class FileSlots:
    """A machine-wide counting semaphore of ``limit`` slots on a lock file.

    Parameters
    ----------
    path
        The lock file; every process sharing the cap opens the same one (with
        the same ``limit``).
    limit
        Slots (bytes ``0 .. limit - 1`` of the file).
    counters
        Where to count requests and the most in flight seen (a
        :class:`~services.coordination.Counters`), for the live panel.
    poll
        First wait, in seconds, between tries while other processes hold
        every slot (it grows to 10 ms).
    """

    def __init__(
        self,
        path: str | Path,
        limit: int = 5,
        counters: Any = None,
        poll: float = 0.0005,
    ) -> None:
        self.path = os.path.abspath(path)
        self.limit, self.counters, self.poll = limit, counters, poll

    @property
    def _file(self) -> _LockFile:
        return _lock_file(self.path, self.limit)  # per process: forks get their own

    def acquire(self, timeout: float | None = None) -> int:
        """Take a slot (waiting up to ``timeout`` seconds; ``TimeoutError``
        past that); returns it for :meth:`release`."""
        file = self._file
        deadline = None if timeout is None else time.monotonic() + timeout
        if not file.local.acquire(timeout=timeout):
            raise TimeoutError(f"no free slot of {self.path} within {timeout} s")
        delay = self.poll
        try:
            while True:
                with file.guard:
                    # at most ``limit`` threads get here: one byte is left to try
                    free = [i for i in range(self.limit) if i not in file.held]
                    random.shuffle(free)
                    byte = next((i for i in free if _try_lock(file.fd, i)), -1)
                    if byte >= 0:
                        file.held.add(byte)
                if byte >= 0:
                    if self.counters is not None:
                        self.counters.tick("requests")
                        self.counters.note_max("in_flight_max", self.in_use())
                    return byte
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no free slot of {self.path} within {timeout} s"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.01)
        except BaseException:
            file.local.release()
            raise

    def release(self, byte: int) -> None:
        file = self._file
        with file.guard:
            if byte in file.held:
                _unlock(file.fd, byte)
                file.held.discard(byte)
        file.local.release()

    def in_use(self) -> int:
        """Slots held now by every process (the others' found by probing)."""
        file = self._file
        with file.guard:
            others = 0
            for byte in range(self.limit):
                if byte in file.held:
                    continue
                if _try_lock(file.fd, byte):
                    _unlock(file.fd, byte)
                else:
                    others += 1
            return len(file.held) + others

    @contextmanager
    def __call__(self) -> Iterator[None]:
        held = self.acquire()
        try:
            yield
        finally:
            self.release(held)


class FileKeyLock:
    """Per-key locks across processes: ``with locks("instance:abc"):``.

    Keys hash to one of ``buckets`` bytes of the lock file: two keys of one
    bucket wait for each other (rarely, and never for long), never both hold.
    """

    def __init__(
        self, path: str | Path, buckets: int = 4096, poll: float = 0.001
    ) -> None:
        self.path = os.path.abspath(path)
        self.buckets, self.poll = buckets, poll

    def bucket(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.buckets

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        file, byte = _lock_file(self.path), self.bucket(key)
        with file.guard:
            local = file.buckets.setdefault(byte, threading.Lock())
        with local:  # this process's threads: one at a time per bucket
            delay = self.poll
            while not _try_lock(file.fd, byte):  # another process holds it
                time.sleep(delay)
                delay = min(delay * 1.5, 0.02)
            try:
                yield
            finally:
                _unlock(file.fd, byte)
