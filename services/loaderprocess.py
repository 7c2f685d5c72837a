"""The bulk loader in child processes, off the web process's GIL.

A fetch costs ~1.1 ms of Python (HTTP, the file written, SQLite), so the
loader's threads are GIL-bound; in the web process they queue behind the
pages, thumbnails and API answers it serves, and those behind them
(bench/RESULTS.md), and one process's loader cannot go faster than one
core. Here the loader runs as it would in Celery workers, without Redis:
requests (prefetch, focus, retry) are written to the shared state by the web
process as always, and its ``kick`` wakes the children, two by default, each
loading its share of the images. Each child opens the same services
(:func:`services.stack.open_stack`: the same cache directory, state, cap on
Orthanc requests and "fetch once" locks, all of which already work across
processes).

```python
from services.stack import open_stack

stack = open_stack(cache_dir="var/cache", dicom_dir="var/dicom", loader_processes=2)
stack.loader.prefetch(study_uid)  # loaded by the children; progress as always
stack.loader.stop()               # ends them
```

The children start at the first kick, and a child that died starts again at
the next kick (a progress poll kicks at most every 2 s while work is queued:
the web process holds no lease); the new child loads its share once the dead
one's lease lapsed (10 s). They end with their parent. Several web processes
of one machine (gunicorn workers) each start theirs; each share's lease has
one of them load it at a time.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from typing import Any

log = logging.getLogger(__name__)
NICE = 10  # the children's CPU priority below the web process (os.nice)


def _context() -> Any:
    """forkserver where there is one (children forked from a clean process
    that has the services imported: ~6 ms to start, not a second; never a
    fork of a process with threads), else spawn."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["services.stack"])
        return ctx
    return mp.get_context("spawn")


class LoaderProcesses:
    """Starts, wakes and ends the children that run the bulk loader: ``count``
    of them, each loading its share of the images (by instance, see
    :class:`~services.loader.BulkLoader`'s ``shard``) with its share of the
    ``loader_workers`` threads.

    Calling the object is the loader's ``kick``: a byte down each child's
    pipe (a ``multiprocessing.Event`` hangs its setter for good once a
    process waiting on it was killed)."""

    def __init__(self, stack_kwargs: dict[str, Any], count: int = 2) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        workers = stack_kwargs.get("loader_workers", 4)
        self._kwargs = dict(
            stack_kwargs,
            loader_processes=0,
            loader_workers=max(1, -(-workers // count)),  # rounded up
        )
        self.count = count
        self._ctx = _context()
        if self._ctx.get_start_method() == "forkserver":  # ready by the first kick
            from multiprocessing import forkserver

            threading.Thread(
                target=forkserver.ensure_running, name="forkserver-start", daemon=True
            ).start()
        self._lock = threading.Lock()
        # per share: (process, the write end of its pipe) or None
        self._children: list[tuple[Any, Any] | None] = [None] * count

    @property
    def pids(self) -> list[int]:
        """The children alive now."""
        return [c[0].pid for c in self._children if c and c[0].is_alive()]

    def __call__(self) -> None:
        with self._lock:
            for shard, child in enumerate(self._children):
                if child is None or not child[0].is_alive():
                    child = self._children[shard] = self._start(shard, child)
                try:
                    child[1].send_bytes(b"!")
                except (BlockingIOError, BrokenPipeError, OSError):
                    pass  # wakes unread (it will look), or dead (started next time)

    def _start(self, shard: int, old: tuple[Any, Any] | None) -> tuple[Any, Any]:
        if old is not None:
            log.warning(
                "loader process %d ended (exit code %s): started again",
                shard,
                old[0].exitcode,
            )
            old[1].close()
        reader, writer = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_main,
            args=(dict(self._kwargs, loader_shard=(shard, self.count)), reader),
            name=f"bulk-loader-{shard}",
            daemon=True,
        )
        proc.start()
        reader.close()  # the child's end
        os.set_blocking(writer.fileno(), False)  # a kick never waits
        return proc, writer

    def close(self, timeout: float = 10.0) -> None:
        """End the children (they finish the images in flight and write their
        progress): their pipes closed is their signal."""
        with self._lock:
            children, self._children = self._children, [None] * self.count
            for child in filter(None, children):
                child[1].close()
            for proc, _ in filter(None, children):
                proc.join(timeout)
                if proc.is_alive():
                    log.warning("%s did not end in %s s: killed", proc.name, timeout)
                    proc.kill()
                    proc.join(5)


def _main(stack_kwargs: dict[str, Any], wakes: Any) -> None:
    """A child: the loader's scheduler thread, woken by the parent's kicks,
    until its pipe closes or the parent is gone."""
    from .coordination import flush_counters
    from .stack import open_stack

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s [loader] %(message)s"
    )
    if hasattr(os, "nice"):  # background work: the pages first when CPU is short
        os.nice(NICE)
    loader = open_stack(**stack_kwargs).loader
    loader.start()
    parent = mp.parent_process()
    try:
        while parent is None or parent.is_alive():
            if not wakes.poll(1.0):
                continue
            try:
                while wakes.poll():  # every kick so far: one look
                    wakes.recv_bytes()
            except (EOFError, OSError):
                break  # closed: stop
            loader.wake()
    finally:
        loader.stop()
        flush_counters()
