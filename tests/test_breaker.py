"""Unit tests of the circuit breaker with a controlled clock."""

import pytest

from services.breaker import CircuitBreaker
from services.models import PacsUnavailable


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_brk001_opens_after_threshold_and_half_opens_after_timeout():
    clock = Clock()
    breaker = CircuitBreaker("pacs", failure_threshold=3, reset_timeout=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure("HTTP 503")
    assert breaker.state == "closed"
    breaker.record_failure("HTTP 503")
    assert breaker.state == "open"
    with pytest.raises(PacsUnavailable, match="HTTP 503.*next try in 10 s"):
        breaker.before_call()
    clock.now = 10
    assert breaker.state == "half-open"
    breaker.before_call()  # the one probe
    with pytest.raises(PacsUnavailable):
        breaker.before_call()  # others wait for the probe
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_brk002_failed_probe_reopens():
    clock = Clock()
    breaker = CircuitBreaker("pacs", failure_threshold=1, reset_timeout=5, clock=clock)
    breaker.record_failure("down")
    clock.now = 5
    breaker.before_call()
    breaker.record_failure("still down")
    assert breaker.state == "open"
    clock.now = 9
    with pytest.raises(PacsUnavailable, match="still down"):
        breaker.before_call()
    clock.now = 10
    breaker.before_call()


def test_brk003_success_resets_the_count():
    breaker = CircuitBreaker("pacs", failure_threshold=2)
    breaker.record_failure("x")
    breaker.record_success()
    breaker.record_failure("x")
    assert breaker.state == "closed"
