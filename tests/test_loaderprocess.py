"""The bulk loader in child processes (``LOADER_PROCESSES``, the default) on
a real Orthanc behind the counting proxy: the shares add up to the study,
each image is fetched once under the cap of 5 by children at a lower CPU
priority, a child that dies is started again and the study still completes,
and stopping the loader ends them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from services.loaderprocess import NICE
from services.stack import open_stack
from tests.proxy import CountingProxy

pytestmark = pytest.mark.orthanc


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stack_on(proxy, orthanc_server, tmp_path, **kwargs):
    return open_stack(
        cache_dir=tmp_path / "cache",
        orthanc_url=proxy.url,
        orthanc_username=orthanc_server.auth[0],
        orthanc_password=orthanc_server.auth[1],
        **kwargs,
    )


def complete(loader, study_uid) -> bool:
    return all(p.state == "complete" for p in loader.progress(study_uid))


def test_proc001_shares_are_disjoint_and_cover_the_study(
    orthanc_server, corpus, tmp_path
):
    """Each share's queue is the one-process queue's images of that share, in
    the same order; together they are every image, each once."""
    study = corpus.demo.study_uid
    with CountingProxy(orthanc_server.url) as proxy:
        whole = stack_on(proxy, orthanc_server, tmp_path)
        whole.loader.prefetch(study)
        version = whole.state.get("loader:version")
        everything = [t.key for t in whole.loader._candidates(version)]
        shares = [
            [
                t.key
                for t in stack_on(
                    proxy, orthanc_server, tmp_path, loader_shard=(i, 3)
                ).loader._candidates(version)
            ]
            for i in range(3)
        ]
    assert len(everything) == sum(s.image_count for s in corpus.demo.series)
    assert sorted(k for s in shares for k in s) == sorted(everything)
    assert all(shares), "a share with nothing: the split is not spread"
    for share in shares:  # the priority order is kept inside a share
        assert share == [k for k in everything if k in set(share)]


def test_proc002_children_load_each_image_once_under_the_cap(
    orthanc_server, corpus, tmp_path
):
    study = corpus.demo.study_uid
    with CountingProxy(orthanc_server.url, delay=0.01) as proxy:
        # 4 threads a child: 8 that want to fetch, the cap lets 5
        stack = stack_on(
            proxy, orthanc_server, tmp_path, loader_processes=2, loader_workers=8
        )
        loader = stack.loader
        try:
            loader.prefetch(study)
            kick = loader.kick
            assert len(kick.pids) == 2 and os.getpid() not in kick.pids
            assert kick.pids[0] != kick.pids[1]
            niced = min(os.getpriority(os.PRIO_PROCESS, 0) + NICE, 19)
            wait_for(  # below the web process (background work), once started
                lambda: all(
                    os.getpriority(os.PRIO_PROCESS, pid) == niced for pid in kick.pids
                ),
                what="the children's lower priority",
            )
            wait_for(lambda: complete(loader, study), what="the children's load")
        finally:
            loader.stop()
        assert kick.pids == []  # stopping the loader ended them
        files = proxy.files(served=False)
        assert proxy.max_in_flight <= 5
    images = stack.pacs.series_images(study)
    assert set(files.values()) == {1}, "an instance file fetched twice"
    assert set(files) == {i.instance_id for v in images.values() for i in v}
    # the live panel's figures come from the children's counts, written as
    # they ended (their flushing thread is a daemon)
    assert stack.pacs.stats.get("fetched") == len(files)
    assert stack.loader.stats.get("images") == sum(map(len, images.values()))
    assert stack.slots.counters.get("in_flight_max") <= 5
    assert all(
        stack.pacs.has_frame(i.instance_id, i.frame_index)
        for v in images.values()
        for i in v
    )


def test_proc003_a_child_that_dies_is_started_again_and_the_study_completes(
    orthanc_server, corpus, tmp_path
):
    """SIGKILL one child mid-load: its share waits, a progress poll kicks
    (work queued), the kick starts a new child, which loads the rest once the
    dead child's lease lapsed."""
    study = corpus.demo.study_uid
    with CountingProxy(orthanc_server.url, delay=0.05) as proxy:
        stack = stack_on(proxy, orthanc_server, tmp_path, loader_processes=2)
        loader = stack.loader
        try:
            loader.prefetch(study)
            kick = loader.kick
            wait_for(lambda: len(proxy.files()) >= 3, what="loading under way")
            victim = kick.pids[0]
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: victim not in kick.pids, what="the child to die")
            wait_for(
                lambda: complete(loader, study),
                timeout=90,
                what="the study to complete",
            )
            assert len(kick.pids) == 2 and victim not in kick.pids
        finally:
            loader.stop()
