"""A circuit breaker: stop calling a PACS that keeps failing, probe it again later.

Closed: calls go through; ``failure_threshold`` failures in a row open it.
Open: calls fail at once with :class:`PacsUnavailable` for ``reset_timeout``
seconds. Half-open: one probe call goes through; success closes the breaker,
failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .models import PacsUnavailable


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise :class:`PacsUnavailable` unless a call may go through now."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return
            if state == "half-open" and not self._probing:
                self._probing = True  # this caller is the probe
                return
            wait = max(0.0, self.reset_timeout - (self._clock() - self._opened_at))  # type: ignore[operator]
            raise PacsUnavailable(
                f"{self.name} is unavailable ({self.last_error}); "
                f"circuit open, next try in {wait:.0f} s"
            )

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def record_failure(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            self._failures += 1
            if self._probing or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._probing = False
