"""The shared state store on Redis, for several processes on several machines.

:class:`RedisState` answers the same small interface as the diskcache store of
:mod:`services.coordination` (``get``, ``set``, ``add``, ``delete``, ``incr``,
``in``, ``transact()``, ``clear()``, ``delete_if``), so the slots, locks,
leases, counters, the loader's progress and the metadata memos run unchanged
on either. ``open_state(..., redis_url=...)`` picks it.

```python
from services.coordination import SharedSlots, open_state

state = open_state("", redis_url="redis://localhost:6379/0")
slots = SharedSlots(state, "orthanc", limit=5)  # 5 across every machine
```

# Developer notes
- Keys carry a prefix (``ctmr:``) so ``clear()`` removes ours only (the
  Celery broker and the rate limiter may share the database).
- Values: integers as Redis integers (``incr`` works on them), anything else
  pickled (pickle's first byte, 0x80, never starts a decimal number). Pickle
  means whoever can write to this Redis can run code in the app: the Redis
  must be as private as the app's own disk (password, private network).
- ``transact()`` is one Redis lock (``SET NX PX``, a lease) for the whole
  store, re-entrant in a thread: diskcache's transactions serialise every
  writer the same way. Single commands (``add``, ``incr``, ``delete_if``)
  are atomic without it, which is what the hot paths (slots, locks) use.
- Every Redis connection error becomes :class:`StateUnavailable` at once:
  the callers wait and try again (the loader), or answer 503 (the API). The
  client does not retry commands itself: with redis-py's retries (8.1), a
  kill and restart of Redis every few seconds under 15 threads in 3 processes
  let ``add`` (``SET NX``) report a slot taken that another process held, 1
  to 5 times a minute (two holders: 6 requests in flight to Orthanc); without
  them, none in 5 such minutes. A connection broken by a restart is replaced
  when the pool hands it out, so nothing fails once Redis is back.
- Maintenance notifications (a Redis Enterprise feature, "auto" by default)
  are off: with them on, the pool skips its check that a connection it hands
  out has no unread answer left on it.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from .coordination import StateUnavailable, _token

PREFIX = "ctmr:"
LOCK_LEASE_MS = 10_000  # a process that dies inside a transaction frees it then
LOCK_WAIT = 30.0  # seconds to wait for the transaction lock before giving up
DOWN = (redis.ConnectionError, redis.TimeoutError)

_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str) -> redis.Redis:
    """A client that never retries a command itself (see the module notes)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=15,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def encode(value: Any) -> bytes:
    if type(value) is int:
        return str(value).encode()
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode(raw: bytes | None, default: Any = None) -> Any:
    if raw is None:
        return default
    if raw[:1] == b"\x80":
        return pickle.loads(raw)
    return int(raw)


@contextmanager
def answering(what: str) -> Iterator[None]:
    """Map Redis connection errors to :class:`StateUnavailable`."""
    try:
        yield
    except DOWN as exc:
        raise StateUnavailable(f"Redis does not answer ({what})") from exc


def _ms(expire: float | None) -> int | None:
    return None if expire is None else max(1, int(expire * 1000))


class RedisState:
    """The shared state store on Redis (see the module docstring).

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
    prefix
        Put before every key.
    """

    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self.url, self.prefix = url, prefix
        self.client = connect(url)
        self._delete_if = self.client.register_script(_DELETE_IF)
        self._lock_key = f"{prefix}__transaction__"
        self._local = threading.Lock()  # threads of this process queue here first
        self._depth = threading.local()

    def _k(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str, default: Any = None) -> Any:
        with answering("get"):
            return decode(self.client.get(self._k(key)), default)

    def set(self, key: str, value: Any, expire: float | None = None) -> bool:
        with answering("set"):
            self.client.set(self._k(key), encode(value), px=_ms(expire))
        return True

    def add(self, key: str, value: Any, expire: float | None = None) -> bool:
        """Set ``key`` only if absent; True when this call set it."""
        with answering("add"):
            return bool(
                self.client.set(self._k(key), encode(value), px=_ms(expire), nx=True)
            )

    def delete(self, key: str) -> bool:
        with answering("delete"):
            return bool(self.client.delete(self._k(key)))

    def delete_if(self, key: str, value: Any) -> bool:
        with answering("delete_if"):
            return bool(self._delete_if(keys=[self._k(key)], args=[encode(value)]))

    def incr(self, key: str, delta: int = 1, default: int = 0) -> int:
        with answering("incr"):
            if default:  # diskcache starts a missing key at ``default``
                self.client.set(self._k(key), default, nx=True)
            return int(self.client.incrby(self._k(key), delta))

    def __contains__(self, key: str) -> bool:
        with answering("exists"):
            return bool(self.client.exists(self._k(key)))

    @contextmanager
    def transact(self) -> Iterator[None]:
        """Hold the store's transaction lock (re-entrant in a thread)."""
        if getattr(self._depth, "n", 0):
            self._depth.n += 1
            try:
                yield
            finally:
                self._depth.n -= 1
            return
        with self._local:
            token, delay = _token(), 0.0005
            deadline = time.monotonic() + LOCK_WAIT
            with answering("transaction lock"):
                while not self.client.set(
                    self._lock_key, token, nx=True, px=LOCK_LEASE_MS
                ):
                    if time.monotonic() > deadline:
                        raise StateUnavailable("the transaction lock stays taken")
                    time.sleep(delay)
                    delay = min(delay * 2, 0.01)
            self._depth.n = 1
            try:
                yield
            finally:
                self._depth.n = 0
                try:
                    with answering("transaction unlock"):
                        self._delete_if(keys=[self._lock_key], args=[token])
                except StateUnavailable:
                    pass  # its lease frees it

    def clear(self) -> int:
        """Delete every key of this store (the prefix's)."""
        with answering("clear"):
            keys = list(self.client.scan_iter(match=self.prefix + "*", count=500))
            for start in range(0, len(keys), 500):
                self.client.delete(*keys[start : start + 500])
        return len(keys)

    def close(self) -> None:
        self.client.close()
