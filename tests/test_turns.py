"""Urgent image requests first (api/turns.py): the Priority header's
urgency, and a background request held back while an urgent one is in flight,
on the real batch route."""

from __future__ import annotations

import threading
import time

import pytest

from api.turns import TURNS, Turns, urgency
from tests.test_api import THORAX_1MM, demo_series
from tests.test_api_batch import frames_url, parts


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 3),  # RFC 9218's default
        ("", 3),
        ("u=0", 0),
        ("u=5, i", 5),
        ("i, u=1", 1),
        ("u=2;", 2),
        ("u=9", 3),  # out of range: the default
        ("xu=2", 3),  # another parameter's name
    ],
)
def test_turn001_urgency_of_the_priority_header(header, expected):
    assert urgency(header) == expected


def waiter(turns: Turns, seconds: float) -> threading.Thread:
    t = threading.Thread(target=turns.wait, args=(time.monotonic() + seconds,))
    t.start()
    return t


def test_turn002_background_waits_for_urgent_and_never_past_its_limit():
    turns = Turns()
    free = waiter(turns, 30)  # nothing urgent: does not wait at all
    free.join(5)
    assert not free.is_alive() and turns.waited == 0

    turns.begin_urgent()
    turns.begin_urgent()
    held = waiter(turns, 30)
    held.join(0.2)
    assert held.is_alive()  # (would be gone by now without the wait)
    turns.end_urgent()
    held.join(0.2)
    assert held.is_alive()  # one urgent request is still in flight
    turns.end_urgent()
    held.join(5)
    assert not held.is_alive() and turns.waited == 1

    turns.begin_urgent()  # never ended: the limit lets it go
    t0 = time.monotonic()
    turns.wait(time.monotonic() + 0.05)
    assert time.monotonic() - t0 < 5
    turns.end_urgent()


def test_turn003_a_background_batch_waits_for_an_urgent_request(
    client, headers, corpus
):
    """The real batch route: with an urgent request in flight (begun here, as
    the route begins one), a u=5 batch does not answer until it ends; u=0 and
    header-less requests do not wait."""
    g = demo_series(corpus, THORAX_1MM)
    url = frames_url(corpus.demo.study_uid, g.series_uid, "start=3&count=2")
    answers = {}

    def ask(name, priority):
        extra = {"Priority": priority} if priority else {}
        answers[name] = client.get(url, headers={**headers, **extra})

    TURNS.begin_urgent()
    try:
        waits = TURNS.waited
        background = threading.Thread(target=ask, args=("background", "u=5"))
        background.start()
        deadline = time.monotonic() + 10
        while TURNS.waited == waits and time.monotonic() < deadline:
            time.sleep(0.01)  # until the background request is at its turn
        assert TURNS.waited == waits + 1
        for name, priority in (("urgent", "u=0"), ("plain", None)):
            ask(name, priority)  # in this thread: they do not wait
            assert len(parts(answers[name])) == 2
        assert background.is_alive() and "background" not in answers
    finally:
        TURNS.end_urgent()
    background.join(10)
    assert not background.is_alive()
    assert [p.get_payload(decode=True) for p in parts(answers["background"])] == [
        p.get_payload(decode=True) for p in parts(answers["urgent"])
    ]
