"""The image a reader waits for goes first: urgent pixel requests hold back
background ones in the same server process.

A client says how urgent a request is with the ``Priority`` request header of
RFC 9218 (``u=0`` most urgent .. ``u=7`` least, 3 when absent). The viewer
sends ``u=0`` for the image shown (and a jump's batch of it and its
neighbours), ``u=1`` for its near neighbours, ``u=2`` for thumbnails and
``u=5`` for preloading and the study page's bulk fill (assets/imagequeue.js).

While a request of urgency 0 or 1 is being answered, a request of urgency 4 or
more waits before it decodes (and before each image of a batch), at most
``MAX_WAIT`` seconds in all, so it is delayed, never starved. The server's
CPU (two cores here, the decoding holding the GIL) then goes to what the
reader looks at: a background request already decoding finishes its image, the
ones behind it wait. Requests without the header (other API clients) neither
wait nor hold others back. Per process: with several gunicorn workers, a
request waits only for the urgent ones of its own worker (those it shares a
GIL with).
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import g, request

URGENT_MAX = 1  # u=0, u=1: the image shown and its neighbours
BACKGROUND_MIN = 4  # u=4..7: preloading, bulk fills
MAX_WAIT = 0.25  # seconds a background request waits in all
_U = re.compile(r"(?:^|[,;\s])u=([0-7])(?:$|[,;\s])")


def urgency(header: str | None) -> int:
    """The ``u`` parameter of a Priority header (RFC 9218), 3 by default."""
    match = _U.search(header or "")
    return int(match.group(1)) if match else 3


class Turns:
    """How many urgent requests are in flight; background ones wait for none."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._urgent = 0
        self.waited = 0  # background waits that found an urgent request

    def begin_urgent(self) -> None:
        with self._cond:
            self._urgent += 1

    def end_urgent(self) -> None:
        with self._cond:
            self._urgent -= 1
            if not self._urgent:
                self._cond.notify_all()

    def wait(self, until: float) -> None:
        """Until no urgent request is in flight, or the monotonic ``until``."""
        with self._cond:
            if not self._urgent:
                return
            self.waited += 1
            self._cond.wait_for(
                lambda: not self._urgent, timeout=max(0.0, until - time.monotonic())
            )


TURNS = Turns()


def yield_to_urgent() -> None:
    """In a view under :func:`by_urgency`: a background request waits here
    for the urgent ones (called before each image it decodes)."""
    until = g.get("turn_until")
    if until is not None:
        TURNS.wait(until)


def by_urgency(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``view`` as its request's Priority header says (module docstring)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        u = urgency(request.headers.get("Priority"))
        if u <= URGENT_MAX:
            TURNS.begin_urgent()
            try:
                return view(*args, **kwargs)
            finally:
                TURNS.end_urgent()
        if u >= BACKGROUND_MIN:
            g.turn_until = time.monotonic() + TURNS.max_wait
        return view(*args, **kwargs)

    return wrapper
