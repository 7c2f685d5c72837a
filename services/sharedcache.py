"""The image cache for several machines: files on shared storage, index in Redis.

With Redis, the server image cache (:class:`~services.imagecache.CachingPacs`'s
``images``) is a :class:`SharedImageCache`: each value is one file under
``CACHE_DIR/images-shared`` (a folder every web and Celery worker mounts, e.g.
NFS or a shared volume), and the index (each entry's size and last use, the
total) lives in Redis, which evicts the least recently used entries past the
size bound. It answers the subset of diskcache's interface the image cache
uses: ``in``, ``get``, ``set``, ``delete``, ``volume()`` and ``clear()``.

# Developer notes
- Why not diskcache on the shared folder: it is SQLite, whose locking is not
  to be trusted on network file systems. Why not the pixels in Redis: a Redis
  restart (or eviction) would lose them and every image would be fetched from
  the PACS again; files survive it. Redis holds no pixels, only the index.
- A value is written to a temporary file and renamed into place, then
  indexed: an indexed entry's file is complete, and a reader on another
  machine opening it after the rename sees all of it (close-to-open).
- "Is it cached" asks the index first (a just-written file may not be visible
  yet through another machine's directory cache) and then the folder, so an
  index lost with a Redis restart costs nothing: files found on disk are
  indexed again when next read. Files never read again after such a restart
  are not counted against the bound until then.
- Redis down: reads and writes of files still work; the index catches up.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from .coordination import StateUnavailable
from .redisstate import RedisState, answering

# KEYS: sizes (hash), lru (zset), volume; ARGV: key, size, now
_INDEX = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(old or '0'))
"""
# KEYS: sizes, lru, volume; ARGV: bound, most entries to drop -> dropped keys
_CULL = """
local volume = tonumber(redis.call('GET', KEYS[3]) or '0')
local out = {}
while volume > tonumber(ARGV[1]) and #out < tonumber(ARGV[2]) do
  local popped = redis.call('ZPOPMIN', KEYS[2])
  if #popped == 0 then break end
  local size = redis.call('HGET', KEYS[1], popped[1])
  redis.call('HDEL', KEYS[1], popped[1])
  volume = redis.call('DECRBY', KEYS[3], tonumber(size or '0'))
  out[#out + 1] = popped[1]
end
return out
"""
# KEYS: sizes, lru, volume; ARGV: key -> 1 when it was indexed
_FORGET = """
local size = redis.call('HGET', KEYS[1], ARGV[1])
if not size then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DECRBY', KEYS[3], tonumber(size))
return 1
"""


def _encode(value: Any) -> bytes:
    if isinstance(value, bytes):  # instance files, rendered images: as they are
        return b"B" + value
    return b"P" + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _decode(data: bytes) -> Any:
    return data[1:] if data[:1] == b"B" else pickle.loads(data[1:])


class SharedImageCache:
    """A size-bounded LRU cache of files in ``directory``, indexed in Redis.

    Parameters
    ----------
    directory
        A folder on storage every process mounts (created if missing).
    size_limit
        Bytes; the least recently used entries go past it.
    state
        The Redis state store (its client and key prefix).
    """

    def __init__(self, directory: str | Path, size_limit: int, state: RedisState):
        self.directory = Path(directory)
        self.size_limit = size_limit
        self.client = state.client
        keys = [f"{state.prefix}images:{n}" for n in ("sizes", "lru", "volume")]
        self._keys = keys
        self._index = self.client.register_script(_INDEX)
        self._cull = self.client.register_script(_CULL)
        self._forget = self.client.register_script(_FORGET)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.directory / digest[:2] / digest[2:4] / digest

    def _note(self, key: str, size: int) -> None:
        """Index (or re-index) ``key`` as used now; evict past the bound."""
        with answering("image index"):
            volume = self._index(
                keys=self._keys,
                args=[key, size, f"{time.time():.3f}"],  # wall clock: machines agree
            )
            if int(volume) > self.size_limit:
                for dropped in self._cull(keys=self._keys, args=[self.size_limit, 100]):
                    self._path(dropped.decode()).unlink(missing_ok=True)

    def __contains__(self, key: str) -> bool:
        try:
            with answering("image index"):
                if self.client.hexists(self._keys[0], key):
                    return True
        except StateUnavailable:
            pass
        return self._path(key).exists()

    def get(self, key: str, default: Any = None) -> Any:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            try:  # evicted by another process meanwhile, or never here
                with answering("image index"):
                    self._forget(keys=self._keys, args=[key])
            except StateUnavailable:
                pass
            return default
        try:
            self._note(key, len(data))
        except StateUnavailable:
            pass
        return _decode(data)

    def set(self, key: str, value: Any, **_ignored: Any) -> bool:
        data = _encode(value)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(
            f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        )
        temporary.write_bytes(data)
        os.replace(temporary, path)
        try:
            self._note(key, len(data))
        except StateUnavailable:
            pass  # indexed again when next read
        return True

    def delete(self, key: str) -> bool:
        try:
            with answering("image index"):
                self._forget(keys=self._keys, args=[key])
        except StateUnavailable:
            pass
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def volume(self) -> int:
        """Bytes in the cache, as the index counts them."""
        try:
            with answering("image index"):
                return int(self.client.get(self._keys[2]) or 0)
        except StateUnavailable:
            return 0

    def clear(self) -> None:
        with answering("image index"):
            self.client.delete(*self._keys)
        for child in self.directory.iterdir():
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
