"""The services one process runs, wired the same way in a web worker, a Celery
worker or a notebook: the shared state, the cap on PACS requests, the caching
PACS and the bulk loader.

```python
from services.stack import open_stack

stack = open_stack(cache_dir="var/cache", dicom_dir="var/dicom")
stack.loader.prefetch(study_uid)
```

Without ``redis_url`` everything shared lives in ``cache_dir`` (diskcache and,
for the cap on PACS requests and the "fetch once" locks, kernel file locks in
``cache_dir/locks``: the processes of one machine). With it, the state, the cap and the image
cache's index live in Redis, the image files in ``cache_dir/images-shared``
(storage every machine mounts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .coordination import Counters, KeyLock, SharedSlots, open_state
from .filelocks import FileKeyLock, FileSlots
from .imagecache import CachingPacs, open_image_cache
from .loader import BulkLoader
from .pacs import open_pacs


@dataclass
class Stack:
    state: Any  # diskcache or RedisState, see services.coordination
    slots: SharedSlots | FileSlots | None  # only in front of a real PACS (Orthanc)
    pacs: CachingPacs
    loader: BulkLoader


def open_stack(
    *,
    cache_dir: str | Path,
    cache_size_mb: int = 2048,
    loader_workers: int = 4,
    loader_processes: int = 0,
    loader_shard: tuple[int, int] = (0, 1),
    redis_url: str = "",
    kick: Callable[[], None] | None = None,
    **pacs_kwargs: Any,
) -> Stack:
    """Open the services; ``pacs_kwargs`` go to :func:`services.pacs.open_pacs`
    (``orthanc_url``, ``max_in_flight``, ``dicom_dir`` ...); ``kick`` and
    ``loader_shard`` to the loader (see :class:`~services.loader.BulkLoader`).
    With ``loader_processes`` (and no Redis, whose Celery workers load) the
    loader runs in that many child processes
    (:class:`~services.loaderprocess.LoaderProcesses`)."""
    if loader_processes and not redis_url and kick is None:
        from .loaderprocess import LoaderProcesses

        kick = LoaderProcesses(
            dict(
                pacs_kwargs,
                cache_dir=cache_dir,
                cache_size_mb=cache_size_mb,
                loader_workers=loader_workers,
            ),
            loader_processes,
        )
    cache_dir = Path(cache_dir)
    state = open_state(cache_dir / "state", redis_url)
    remote = bool(pacs_kwargs.get("orthanc_url"))
    limit = pacs_kwargs.get("max_in_flight", 5)
    slots: SharedSlots | FileSlots | None = None
    locks: Any
    if redis_url:  # several machines: leased slots and locks in Redis
        slots = SharedSlots(state, "orthanc", limit) if remote else None
        locks = KeyLock(state)
    else:  # one machine: kernel locks, freed when their process dies
        folder = cache_dir / "locks"
        if remote:
            counters = Counters(state, "orthanc")
            slots = FileSlots(folder / "orthanc.slots", limit, counters=counters)
        locks = FileKeyLock(folder / "keys.locks")
    if redis_url:
        from .sharedcache import SharedImageCache

        images: Any = SharedImageCache(
            cache_dir / "images-shared", cache_size_mb * 2**20, state
        )
    else:
        images = open_image_cache(cache_dir / "images", cache_size_mb)
    # Orthanc's HTTP cache is SQLite (WAL), which must stay off shared
    # storage; with Redis the metadata memos there do its work.
    http_cache = "" if redis_url and remote else cache_dir
    pacs = CachingPacs(
        open_pacs(**pacs_kwargs, cache_dir=http_cache, slot=slots),
        images,
        state,
        locks=locks,
    )
    loader = BulkLoader(
        pacs, state, workers=loader_workers, shard=loader_shard, kick=kick
    )
    return Stack(state, slots, pacs, loader)
