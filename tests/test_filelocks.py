"""The kernel-lock slots and key locks (services/filelocks.py): across
processes, across threads of one process, and a killed holder."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from services.coordination import Counters, open_state
from services.filelocks import FileKeyLock, FileSlots

ctx = multiprocessing.get_context("fork")


def _take_and_wait(path, count, ready, done):
    """A process holding ``count`` slots until ``done`` is set (or killed)."""
    slots = FileSlots(path, limit=5)
    held = [slots.acquire() for _ in range(count)]
    ready.set()
    done.wait(30)
    for h in held:
        slots.release(h)


def _try_one(path, queue):
    slots = FileSlots(path, limit=5)
    try:
        held = slots.acquire(timeout=0.3)
    except TimeoutError:
        queue.put(("timeout", slots.in_use()))
        return
    queue.put(("got", slots.in_use()))
    slots.release(held)


def test_flock001_second_process_sees_slots_taken(tmp_path):
    path = tmp_path / "orthanc.slots"
    slots = FileSlots(path, limit=5)
    held = [slots.acquire() for _ in range(5)]
    assert sorted(held) == [0, 1, 2, 3, 4] and slots.in_use() == 5
    with pytest.raises(TimeoutError):  # this process's threads count too
        slots.acquire(timeout=0.05)
    queue = ctx.Queue()
    child = ctx.Process(target=_try_one, args=(path, queue))
    child.start()
    assert queue.get(timeout=10) == ("timeout", 5)
    child.join(10)
    slots.release(held.pop())
    child = ctx.Process(target=_try_one, args=(path, queue))
    child.start()
    assert queue.get(timeout=10) == ("got", 5)  # the freed one, then all 5 held
    child.join(10)
    for h in held:
        slots.release(h)
    assert slots.in_use() == 0


def test_flock002_killed_process_frees_its_slots_at_once(tmp_path):
    path = tmp_path / "orthanc.slots"
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_take_and_wait, args=(path, 5, ready, done))
    child.start()
    assert ready.wait(10)
    slots = FileSlots(path, limit=5)
    assert slots.in_use() == 5
    with pytest.raises(TimeoutError):
        slots.acquire(timeout=0.1)
    os.kill(child.pid, signal.SIGKILL)  # no release, no cleanup
    child.join(10)
    held = [slots.acquire(timeout=5) for _ in range(5)]  # no lease to wait out
    assert slots.in_use() == 5
    for h in held:
        slots.release(h)


def _hammer(path, threads, rounds, in_flight, peak, lock):
    """Threads taking slots in a loop, counting holders machine-wide."""
    slots = FileSlots(path, limit=5)

    def run():
        for _ in range(rounds):
            with slots():
                with lock:
                    in_flight.value += 1
                    peak.value = max(peak.value, in_flight.value)
                time.sleep(0.001)
                with lock:
                    in_flight.value -= 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()


def test_flock003_threads_of_several_processes_never_exceed_the_limit(tmp_path):
    """fcntl locks belong to the process: its threads account on top."""
    path = tmp_path / "orthanc.slots"
    lock = ctx.Lock()
    in_flight, peak = ctx.Value("i", 0, lock=False), ctx.Value("i", 0, lock=False)
    procs = [
        ctx.Process(target=_hammer, args=(path, 6, 40, in_flight, peak, lock))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    _hammer(path, 6, 40, in_flight, peak, lock)  # and this process too
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert 2 <= peak.value <= 5
    assert in_flight.value == 0 and FileSlots(path, limit=5).in_use() == 0


def test_flock004_slots_count_requests_and_the_peak(tmp_path):
    state = open_state(tmp_path / "state")
    slots = FileSlots(tmp_path / "s", limit=3, counters=Counters(state, "o"))
    a, b = slots.acquire(), slots.acquire()
    slots.release(a)
    slots.release(b)
    with slots():
        pass
    assert slots.counters.get("requests") == 3
    assert slots.counters.get("in_flight_max") == 2
    # a second object on the same file in this process shares the accounting
    other = FileSlots(tmp_path / "s", limit=3)
    held = [slots.acquire(), other.acquire(), other.acquire()]
    with pytest.raises(TimeoutError):
        slots.acquire(timeout=0.05)
    for h in held[:1]:
        slots.release(h)
    for h in held[1:]:
        other.release(h)


def _hold_key(path, key, ready, done, buckets=4096):
    locks = FileKeyLock(path, buckets=buckets)
    with locks(key):
        ready.set()
        done.wait(30)


def test_flock005_key_lock_excludes_other_processes_and_a_kill_frees_it(tmp_path):
    path = tmp_path / "keys.locks"
    ready, done = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_key, args=(path, "instance:a", ready, done))
    child.start()
    assert ready.wait(10)
    locks = FileKeyLock(path)
    got = threading.Event()

    def wait_for_it():
        with locks("instance:a"):
            got.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    other_bucket = next(
        k for k in (f"instance:{i}" for i in range(99)) if locks.bucket(k) != 0
    )
    if locks.bucket(other_bucket) != locks.bucket("instance:a"):
        with locks(other_bucket):  # another key is not held up
            pass
    assert not got.wait(0.2)  # the child holds it
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert got.wait(5)
    waiter.join(5)


def test_flock006_key_lock_one_thread_at_a_time_in_a_process(tmp_path):
    locks = FileKeyLock(tmp_path / "keys.locks", buckets=4)
    inside, peak, guard = [0], [0], threading.Lock()

    def run(key):
        for _ in range(30):
            with locks(key):
                with guard:
                    inside[0] += 1
                    peak[0] = max(peak[0], inside[0])
                time.sleep(0.0005)
                with guard:
                    inside[0] -= 1

    # keys of one bucket: threads must still take turns (the process's lock
    # on the byte is one, whichever thread took it)
    key = "instance:x"
    same = [
        k for k in (f"k{i}" for i in range(200)) if locks.bucket(k) == locks.bucket(key)
    ]
    threads = [threading.Thread(target=run, args=(k,)) for k in [key, *same[:5]]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1

    # and another process waits for this one's holder
    ready, done = ctx.Event(), ctx.Event()
    with locks(key):
        child = ctx.Process(target=_hold_key, args=(locks.path, key, ready, done, 4))
        child.start()
        assert not ready.wait(0.3)
    assert ready.wait(10)
    done.set()
    child.join(10)
    assert child.exitcode == 0
