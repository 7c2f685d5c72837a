"""The Celery worker of a multi-worker deployment: it runs the bulk loader.

With ``REDIS_URL`` set, web processes do not load studies themselves: each
request to the loader (prefetch, focus, retry) queues a ``loader.drain`` task
on Redis, and a worker started with

    celery -A worker:celery_app worker --concurrency 2

runs :meth:`services.loader.BulkLoader.drain` on the same services, built from
the same settings (``services.stack``): it loads until nothing is left. One
drain runs at a time across every worker (the loader's lease); other drain
tasks return at once. Every request to Orthanc still takes one of the 5
slots kept in Redis, whichever process sends it.

# Developer notes
- Tasks are acknowledged when a worker takes them, not late: kombu 5.7's
  Redis transport crashes the worker ("Unrecoverable error: AttributeError
  ... 'hostname'") when the broker connection drops while it holds
  unacknowledged messages (it tries to restore them on a closed connection;
  kombu#970 and kin), and a long drain would hold one for its whole run. A
  drain whose worker dies is not lost anyway: the progress poll kicks a new
  one when work is queued and no one holds the loader's lease.
- A kick that cannot reach Redis is logged and dropped: the next request or
  poll kicks again.
- Dash background callbacks would also run here (``CeleryManager``); the app
  has none: the loader is a service shared by every tab and API client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from services.stack import Stack, open_stack
from settings import Settings

log = logging.getLogger(__name__)
DRAIN = "loader.drain"
QUEUE = "ctmr-loader"


def make_celery(redis_url: str) -> Celery:
    """A Celery app on Redis with the loader's task registered."""
    celery = Celery("ctmr", broker=redis_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=QUEUE,
        # acknowledged when a worker takes it (see the module's notes)
        task_acks_late=False,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # a drain may run for long (no time limit): the lease keeps it single
    )
    celery.task(name=DRAIN, ignore_result=True)(_drain)
    return celery


_stack: Stack | None = None


def _drain() -> None:
    """The task: load what is queued (built on first use in each worker child)."""
    global _stack
    if _stack is None:
        _stack = open_stack(**Settings.from_env().stack_kwargs())
    _stack.loader.drain()


def drain_kicker(redis_url: str) -> Callable[[], None]:
    """What web processes call after each loader request: queue a drain."""
    celery = make_celery(redis_url)
    policy = {"max_retries": 1, "interval_start": 0.1, "interval_step": 0.2}

    def kick() -> None:
        try:
            celery.send_task(DRAIN, retry=True, retry_policy=policy)
        except Exception as exc:  # Redis down: the next request kicks again
            log.warning("could not queue the bulk loader: %s", type(exc).__name__)

    return kick


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``worker.celery_app`` (what ``celery -A`` imports), built on first use
    from the environment."""
    global _app
    if name != "celery_app":
        raise AttributeError(name)
    if _app is None:
        _app = make_celery(Settings.from_env().redis_url)
    return _app
