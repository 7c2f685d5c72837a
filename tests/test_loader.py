"""The server-side cache and bulk loader against a real Orthanc behind the
counting proxy: the machine-wide cap, one fetch per image, priorities,
failures and Retry."""

from __future__ import annotations

import multiprocessing
import os
import struct
import threading
import time

import numpy as np
import pytest

from services.coordination import Counters, SharedSlots, open_state
from services.filelocks import FileKeyLock, FileSlots
from services.imagecache import CachingPacs, open_image_cache
from services.loader import BulkLoader, Task
from services.models import NotFound
from services.orthanc import OrthancClient
from tests.proxy import CountingProxy


def wait_for(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def make_slots(kind, state, folder):
    """The machine-wide cap: leased slots in the state store (as on Redis) or
    kernel file locks (one machine, as ``open_stack`` without Redis)."""
    if kind == "leased":
        return SharedSlots(state, limit=5)
    return FileSlots(folder / "locks" / "orthanc.slots", 5, Counters(state, "orthanc"))


def build(proxy_url, auth, tmp_path, **loader_kwargs):
    """The stack as ``open_stack`` wires it on one machine (file locks)."""
    state = open_state(tmp_path / "state")
    client = OrthancClient(
        proxy_url,
        username=auth[0],
        password=auth[1],
        slot=make_slots("file", state, tmp_path),
    )
    pacs = CachingPacs(
        client,
        open_image_cache(tmp_path / "images", 512),
        state,
        locks=FileKeyLock(tmp_path / "locks" / "keys.locks"),
    )
    return pacs, BulkLoader(pacs, state, **loader_kwargs)


def _hammer(proxy_url, auth, folder, instance_ids, queue, kind):
    """One process: 5 threads fetching instance files through the shared cap."""
    state = open_state(folder / "state")
    client = OrthancClient(
        proxy_url,
        username=auth[0],
        password=auth[1],
        slot=make_slots(kind, state, folder),
    )

    def run(ids):
        for i in ids:
            client.get_instance_file(i)

    threads = [
        threading.Thread(target=run, args=(instance_ids[k::5],)) for k in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(client.requests_sent)


@pytest.mark.parametrize("kind", ["file", "leased"])
def test_load001_cap_holds_across_processes(
    orthanc_server, orthanc_pacs, corpus, tmp_path, kind
):
    series = max(corpus.demo.series, key=lambda s: s.image_count)
    ids = [
        i.instance_id
        for i in orthanc_pacs.list_images(corpus.demo.study_uid, series.series_uid)
    ][:40]
    with CountingProxy(orthanc_server.url, delay=0.01) as proxy:
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [
            ctx.Process(
                target=_hammer,
                args=(proxy.url, orthanc_server.auth, tmp_path, ids, queue, kind),
            )
            for _ in range(3)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        sent = sum(queue.get(timeout=5) for _ in procs)
        assert sent == 3 * len(ids) == proxy.forwarded
        assert proxy.max_in_flight == 5  # 15 threads in 3 processes, never more than 5


def test_load002_each_instance_fetched_once_by_concurrent_askers(
    orthanc_server, corpus, tmp_path
):
    with CountingProxy(orthanc_server.url) as proxy:
        pacs, _ = build(proxy.url, orthanc_server.auth, tmp_path)
        series = next(
            s for s in corpus.demo.series if s.image_count == 16
        )  # multi-frame
        images = pacs.list_images(corpus.demo.study_uid, series.series_uid)
        results = {}

        def ask(image):
            results[image.frame_index] = pacs.get_frame(
                image.instance_id, image.frame_index
            )

        threads = [
            threading.Thread(target=ask, args=(i,)) for i in images for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert proxy.files(served=False) == {
            images[0].instance_id: 1
        }  # 16 frames, one fetch
        expected = pacs.inner.get_frame(images[5].instance_id, 5)
        assert np.array_equal(results[5], expected)
        with pytest.raises(NotFound):
            pacs.get_frame(images[0].instance_id, 16)
        assert proxy.files(served=False) == {
            images[0].instance_id: 1
        }  # not asked again


def test_load003_loader_fetches_every_image_once_then_nothing(
    orthanc_server, corpus, tmp_path
):
    with CountingProxy(orthanc_server.url, delay=0.005) as proxy:
        pacs, loader = build(proxy.url, orthanc_server.auth, tmp_path)
        try:
            study = corpus.demo.study_uid
            before = loader.prefetch(study)  # queued; nothing runs before start()
            assert all(p.loaded == 0 and p.state == "queued" for p in before)
            loader.start()
            wait_for(
                lambda: all(p.state == "complete" for p in loader.progress(study)),
                what="load",
            )
            progress = loader.progress(study)
            assert [p.total for p in progress] == [
                s.image_count for s in corpus.demo.series
            ]
            assert [p.loaded for p in progress] == [p.total for p in progress]
            fetched = proxy.files(served=False)
            instances = sum(len(s.instance_uids) for s in corpus.demo.series)
            assert len(fetched) == instances and set(fetched.values()) == {1}
            assert proxy.max_in_flight <= 5
            sent = proxy.forwarded
            again = loader.prefetch(study)  # re-open: all served by the cache
            assert all(p.state == "complete" for p in again)
            assert proxy.forwarded - sent <= 2  # metadata only, no pixels
            assert proxy.files(served=False) == fetched
        finally:
            loader.stop()


def test_load003b_prefetch_while_loading_counts_every_image_once(
    orthanc_server, corpus, tmp_path
):
    """Re-opening a study recounts its progress from the image cache while the
    workers are storing images: no image may be lost from the count (the
    loader would then sit idle with a series one short of complete)."""
    with CountingProxy(orthanc_server.url, delay=0.002) as proxy:
        pacs, loader = build(proxy.url, orthanc_server.auth, tmp_path)
        study = corpus.demo.study_uid
        loader.prefetch(study)
        loader.start()
        stop = threading.Event()

        def reopen():  # what every API client's prefetch does
            while not stop.is_set():
                loader.prefetch(study)

        clients = [threading.Thread(target=reopen) for _ in range(2)]
        try:
            for t in clients:
                t.start()
            wait_for(
                lambda: all(p.state == "complete" for p in loader.progress(study)),
                what="every series complete",
            )
            stop.set()
            for t in clients:
                t.join()
            loader.stop()
            progress = loader.progress(study)
            assert [p.loaded for p in progress] == [p.total for p in progress]
            assert set(proxy.files(served=False).values()) == {1}
        finally:
            stop.set()
            loader.stop()


def test_load004_focused_series_loads_first(orthanc_server, corpus, tmp_path):
    with CountingProxy(orthanc_server.url) as proxy:
        pacs, loader = build(proxy.url, orthanc_server.auth, tmp_path, workers=1)
        study = corpus.demo.study_uid
        target = corpus.demo.series[3]  # not the first series
        loader.prefetch(study)
        loader.focus(study, target.series_uid, image_index=10)
        loader.start()
        try:
            wait_for(
                lambda: any(
                    p.series_uid == target.series_uid and p.state == "complete"
                    for p in loader.progress(study)
                ),
                what="the focused series",
            )
            order = list(proxy.files(served=False))
            images = pacs.list_images(study, target.series_uid)
            focused_ids = {i.instance_id for i in images}
            assert set(order[: len(focused_ids)]) == focused_ids  # before any other
            assert order[0] == images[10].instance_id  # from the current image out
            others = [
                p for p in loader.progress(study) if p.series_uid != target.series_uid
            ]
            assert not all(p.state == "complete" for p in others)
        finally:
            loader.stop()


def test_load005_failed_images_are_listed_and_retry_recovers(
    orthanc_server, corpus, tmp_path
):
    with CountingProxy(orthanc_server.url) as proxy:
        pacs, loader = build(
            proxy.url, orthanc_server.auth, tmp_path, max_attempts=2, backoff=0.01
        )
        study = corpus.demo.study_uid
        series = corpus.demo.series[1]
        images = pacs.list_images(study, series.series_uid)
        broken = images[2].instance_id
        proxy.fail_paths[f"/instances/{broken}/file"] = 400  # refused every time
        loader.prefetch(study)
        loader.focus(study, series.series_uid)
        loader.start()
        try:

            def settled():
                p = next(
                    p
                    for p in loader.progress(study)
                    if p.series_uid == series.series_uid
                )
                return p.loaded + len(p.failed) == p.total

            wait_for(settled, what="the series to settle")
            p = next(
                p for p in loader.progress(study) if p.series_uid == series.series_uid
            )
            assert p.failed == [3] and p.state == "error" and p.error
            assert p.loaded == p.total - 1
            del proxy.fail_paths[f"/instances/{broken}/file"]
            loader.retry(study, series.series_uid)
            wait_for(
                lambda: (
                    next(
                        p
                        for p in loader.progress(study)
                        if p.series_uid == series.series_uid
                    ).state
                    == "complete"
                ),
                what="retry",
            )
        finally:
            loader.stop()


def test_load005b_retry_racing_the_schedulers_drop_is_kept(
    orthanc_server, corpus, tmp_path
):
    """A Retry that lands between the scheduler seeing a study finished and
    dropping it from the queue must stay queued (it was once lost: the
    series never left "error")."""
    pacs, loader = build(orthanc_server.url, orthanc_server.auth, tmp_path)
    study = corpus.demo.study_uid
    loader.prefetch(study)
    series = loader._image_series(study)
    for series_uid, images in series.items():  # every image failed: finished
        for image in images:
            loader._fail(Task(study, series_uid, image), "refused")
    retried = corpus.demo.series[1].series_uid
    real = loader._set_jobs

    def racing(add=(), drop=(), seen=-1):
        if drop:  # the Retry lands now, after the look, before the drop
            loader.retry(study, retried)
        real(add=add, drop=drop, seen=seen)

    loader._set_jobs = racing
    assert loader._candidates(loader.state.get("loader:version", 0)) == []
    assert study in loader.state.get("jobs", {})
    loader._set_jobs = real
    tasks = loader._candidates(loader.state.get("loader:version", 0))
    assert {t.series_uid for t in tasks} == {retried}
    assert len(tasks) == len(series[retried])
    # with nothing requested since its look, a finished study is dropped
    loader._set_jobs(drop=[study], seen=loader.state.get("loader:version", 0))
    assert study not in loader.state.get("jobs", {})


def test_load006_orthanc_down_pauses_and_loading_resumes_by_itself(tmp_path, corpus):
    from scripts.orthanc_local import LocalOrthanc
    from services.breaker import CircuitBreaker

    first = LocalOrthanc(workdir=tmp_path / "orthanc").start()
    port, auth = first.port, first.auth
    second = None
    try:
        series = corpus.demo.series[2]  # 120 images
        first.upload(series.files)
        with CountingProxy(first.url, delay=0.02) as proxy:
            state = open_state(tmp_path / "state")
            client = OrthancClient(
                proxy.url,
                username=auth[0],
                password=auth[1],
                retries=0,
                breaker=CircuitBreaker("test", failure_threshold=2, reset_timeout=0.3),
                slot=make_slots("file", state, tmp_path),
            )
            pacs = CachingPacs(
                client,
                open_image_cache(tmp_path / "images", 256),
                state,
                locks=FileKeyLock(tmp_path / "locks" / "keys.locks"),
            )
            loader = BulkLoader(pacs, state, backoff=0.05)
            study = corpus.demo.study_uid
            loader.prefetch(study)
            loader.start()
            try:
                progress = lambda: loader.progress(study)[0]  # noqa: E731
                wait_for(lambda: progress().loaded >= 20, what="loading to start")
                first.stop()
                wait_for(
                    lambda: progress().state == "waiting", what="the waiting state"
                )
                assert progress().error and progress().failed == []
                stalled = progress().loaded
                second = LocalOrthanc(
                    workdir=tmp_path / "orthanc", port=port, password=auth[1]
                ).start()
                wait_for(
                    lambda: progress().state == "complete", what="loading to resume"
                )
                assert progress().loaded == series.image_count > stalled
                served = proxy.files()
                assert set(served.values()) == {1}  # none fetched twice
                assert len(served) == series.image_count
            finally:
                loader.stop()
    finally:
        first.stop()
        if second:
            second.stop()


def test_load007_loader_stores_files_frames_decoded_on_first_request(
    orthanc_server, corpus, tmp_path
):
    """The loader keeps each instance file as it came; a frame is decoded from
    it when first asked for (that frame only), never fetched again, and kept
    when the file is compressed (a plain file's frame is read from it again)."""
    with CountingProxy(orthanc_server.url) as proxy:
        pacs, loader = build(proxy.url, orthanc_server.auth, tmp_path)
        study = corpus.demo.study_uid
        loader.prefetch(study)
        loader.start()
        try:
            wait_for(
                lambda: all(p.state == "complete" for p in loader.progress(study)),
                what="load",
            )
        finally:
            loader.stop()
        multi = next(s for s in corpus.demo.series if s.image_count == 16)
        images = pacs.list_images(study, multi.series_uid)
        single = pacs.list_images(study, corpus.demo.series[2].series_uid)[7]
        fetched = proxy.files(served=False)
        for image in (images[5], single):
            key = pacs.frame_key(image.instance_id, image.frame_index)
            assert key not in pacs.images and pacs.has_frame(
                image.instance_id, image.frame_index
            )
            frame = pacs.get_frame(image.instance_id, image.frame_index)
            assert key not in pacs.images  # plain: read from the file again
            assert np.array_equal(
                frame, pacs.inner.get_frame(image.instance_id, image.frame_index)
            )
        assert pacs.frame_key(images[6].instance_id, 6) not in pacs.images
        meta = pacs.get_instance_meta(single.instance_id)
        assert meta.rows > 0 and meta.number_of_frames == 1
        data = pacs.get_instance_file(single.instance_id)
        assert data == pacs.inner.get_instance_file(single.instance_id)
        assert proxy.files(served=False) == {
            k: v + (k == single.instance_id) for k, v in fetched.items()
        }  # the one more fetch is the comparison's, straight from Orthanc
        j2k = next(
            s
            for s in pacs.list_series(corpus.codecs_study_uid)
            if s.series_description == "JPEG 2000 lossless"
        )
        image = pacs.list_images(corpus.codecs_study_uid, j2k.series_uid)[0]
        frame = pacs.get_frame(image.instance_id, 0)
        assert pacs.frame_key(image.instance_id, 0) in pacs.images
        assert np.array_equal(pacs.get_frame(image.instance_id, 0), frame)


def test_load008_files_no_installed_decoder_reads_are_told_from_the_header(corpus):
    import io
    import warnings

    import pydicom
    from pydicom.encaps import encapsulate

    from services.imagecache import undecodable

    path = corpus.demo.series[2].files[0]
    assert undecodable(path.read_bytes()) == ""
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2
    ds.PixelData = encapsulate([ds.PixelData])
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert "no installed decoder" in undecodable(out.getvalue())
    with warnings.catch_warnings():  # pydicom warns while it guesses
        warnings.simplefilter("ignore")
        assert undecodable(b"not DICOM at all")


def test_load008b_transfer_syntax_read_by_hand_is_pydicoms(corpus):
    """The loader reads (0002,0010) itself (pydicom's parse cost more per
    image); it agrees with pydicom on every file of the corpus."""
    import pydicom

    from services.imagecache import _transfer_syntax

    files = [f for s in corpus.demo.series for f in s.files]
    seen = set()
    for path in files:
        data = path.read_bytes()
        expected = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        assert _transfer_syntax(data) == expected.TransferSyntaxUID
        seen.add(_transfer_syntax(data))
    assert len(files) > 100 and seen
    assert _transfer_syntax(b"\0" * 132) is None
    assert _transfer_syntax(files[0].read_bytes()[:140]) is None  # cut short


def test_load009_shared_primitives_write_less_and_lose_nothing(tmp_path):
    """Counters buffer in the process (a read flushes, and a timer);
    a renewed lease is not renewed again at once yet stays exclusive; large
    values with many newlines go to disk whole; writes from many threads of
    one process all land."""
    from services.coordination import Counters, Lease
    from services.imagecache import open_image_cache

    state = open_state(tmp_path / "state")
    mine, other = Counters(state, "t", flush_every=3600), Counters(state, "t")
    for _ in range(3):
        mine.tick("n")
    assert other.get("n") == 0  # still buffered in "this process"
    assert mine.get("n") == 3 and other.get("n") == 3  # a read flushed it
    quick = Counters(state, "q", flush_every=0.01)
    quick.add("n", 5)
    wait_for(lambda: other.cache.get("count:q:n", 0) == 5, what="the timer flush")

    a, b = Lease(state, "x"), Lease(state, "x")
    assert a.held() and a.held() and not b.held()
    a.give_up()
    assert b.held() and not a.held()

    images = open_image_cache(tmp_path / "images", 16)
    value = b"\n\x00ab\n" * 50_000
    images.set("big", value)
    assert images.get("big") == value

    def bump():
        for _ in range(50):
            state.incr("hits", default=0)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.get("hits") == 300


def test_load009b_a_folder_culled_while_made_is_made_again(tmp_path, monkeypatch):
    """Another writer's delete removes empty folders (diskcache culls them):
    if it takes a parent away while this write makes its folder, os.makedirs
    fails and the write makes the folder again instead of failing (seen as a
    FileNotFoundError under concurrent frame requests)."""
    from services import imagecache

    images = open_image_cache(tmp_path / "images", 16)
    real, calls = os.makedirs, []

    def culled_once(name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise FileNotFoundError(2, "No such file or directory", name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(imagecache.os, "makedirs", culled_once)
    value = b"\x01" * 100_000  # large enough to go to a file
    images.set("frame", value)
    assert len(calls) >= 2 and calls[0] == calls[1]  # asked again (and its parents)
    assert images.get("frame") == value


def test_load010_cache_lookups_in_bulk_and_memos_in_the_process(tmp_path):
    """``cached_frames`` (one query) says what ``has_frame`` says, a frame only
    or a file only counting; ``load_frame`` fetches once and never what is
    cached; files go to 256 folders that stay when emptied; a memo's copy in
    the process goes with the shared state (a cleared state asks again)."""
    import diskcache

    from services.models import ImageRef

    class Files:
        name = "fake"

        def __init__(self) -> None:
            self.fetched: list[str] = []
            self.listed = 0

        def get_instance_file(self, instance_id: str) -> bytes:
            self.fetched.append(instance_id)
            syntax = b"1.2.840.10008.1.2.1\0"  # explicit VR little endian
            meta = struct.pack("<HH2sH", 2, 0x10, b"UI", len(syntax)) + syntax
            return b"\0" * 128 + b"DICM" + meta + b"x" * 40_000

        def series_images(self, study_uid: str) -> dict:
            self.listed += 1
            return {"s": [ImageRef(1, "i1", "1.2", 0)]}

    images = [ImageRef(n + 1, f"i{n}", f"1.{n}", 0) for n in range(4)]
    state = open_state(tmp_path / "state")
    for cache in (
        open_image_cache(tmp_path / "images", 16),
        diskcache.Cache(str(tmp_path / "plain")),  # no ``present``: one by one
    ):
        inner = Files()
        pacs = CachingPacs(inner, cache, state, locks=FileKeyLock(tmp_path / "k"))
        cache.set(pacs.file_key("i1"), b"file")
        cache.set(pacs.frame_key("i2", 0), b"frame")
        cache.set(pacs.frame_key("i3", 1), b"another frame")
        expected = {
            (i.instance_id, i.frame_index)
            for i in images
            if pacs.has_frame(i.instance_id, i.frame_index)
        }
        assert pacs.cached_frames(images) == expected == {("i1", 0), ("i2", 0)}
        assert [pacs.load_frame(i.instance_id, 0) for i in images] == [
            True,
            False,
            False,
            True,
        ]
        assert inner.fetched == ["i0", "i3"]
        assert not pacs.load_frame("i0", 0) and inner.fetched == ["i0", "i3"]

    folder = tmp_path / "images"
    names = [p.relative_to(folder) for p in folder.rglob("*.val")]
    assert names and all(len(p.parts) == 2 and len(p.parts[0]) == 2 for p in names)
    images_cache = open_image_cache(folder, 16)
    images_cache.clear()
    assert not list(folder.rglob("*.val")) and list(folder.glob("??"))  # kept

    inner = Files()
    pacs = CachingPacs(inner, images_cache, state)
    first = pacs.series_images("st")
    first["s"].append("mutated by a caller")
    assert pacs.series_images("st") == {"s": [ImageRef(1, "i1", "1.2", 0)]}
    assert inner.listed == 1
    state.clear()
    pacs.series_images("st")
    assert inner.listed == 2


def test_load011_first_render_parses_the_file_once(
    orthanc_server, corpus, tmp_path, monkeypatch
):
    """A card's thumbnail of an image not viewed yet (the file cached, no
    frame, no metadata) parses the file once for its metadata and pixels,
    keeps the metadata and the rendering but not the full frame, and draws
    what the frame decoded on its own draws; a frame past the end of a
    multi-frame instance is still not found."""
    import io

    import pydicom
    from PIL import Image

    from services import imaging

    pacs, _ = build(orthanc_server.url, orthanc_server.auth, tmp_path)
    study = corpus.demo.study_uid
    multi = next(s for s in corpus.demo.series if s.image_count == 16)
    ct = next(s for s in corpus.demo.series if s.modality == "CT")
    images = [
        pacs.list_images(study, ct.series_uid)[0],
        pacs.list_images(study, multi.series_uid)[3],
    ]
    for image in images:
        pacs.load_frame(image.instance_id, image.frame_index)  # as the loader does
    parses = []
    real = pydicom.dcmread
    monkeypatch.setattr(
        pydicom, "dcmread", lambda *a, **k: parses.append(1) or real(*a, **k)
    )
    for image in images:
        parses.clear()
        body = pacs.render_frame(
            image.instance_id, image.frame_index, size=64, fmt="png"
        )
        assert len(parses) == 1
        assert f"meta:{image.instance_id}" in pacs.images
        assert pacs.frame_key(image.instance_id, image.frame_index) not in pacs.images
        meta = pacs.get_instance_meta(image.instance_id)
        frame = pacs.get_frame(image.instance_id, image.frame_index)
        alone = imaging.render(frame, meta, None, None, "png", 64)
        assert np.array_equal(
            np.asarray(Image.open(io.BytesIO(body))),
            np.asarray(Image.open(io.BytesIO(alone))),
        )
    with pytest.raises(NotFound):
        pacs.render_frame(images[1].instance_id, 16)


def test_load012_a_stale_listing_is_answered_at_once_and_refreshed_behind(tmp_path):
    """Past ``metadata_ttl`` a study's listing is answered from the last one
    at once while one background call asks the PACS again (no request waits
    for the PACS's listing); a study the PACS then says is gone is gone."""
    from services.models import ImageRef

    class Listing:
        name = "fake"

        def __init__(self) -> None:
            self.version, self.calls, self.gone = 1, 0, False
            self.entered, self.gate = threading.Event(), threading.Event()
            self.gate.set()

        def series_images(self, study_uid: str) -> dict:
            self.calls += 1
            self.entered.set()
            assert self.gate.wait(30)
            if self.gone:
                raise NotFound(f"study {study_uid}")
            return {"s": [ImageRef(1, f"i{self.version}", "1.2", 0)]}

    def ids() -> list[str]:
        return [i.instance_id for i in pacs.list_images("st", "s")]

    inner = Listing()
    state = open_state(tmp_path / "state")
    pacs = CachingPacs(inner, open_image_cache(tmp_path / "images", 16), state)
    pacs.metadata_ttl = 0.0  # every answer stale at once
    assert ids() == ["i1"] and inner.calls == 1  # nothing yet: the caller waits

    inner.version, inner.entered = 2, threading.Event()
    inner.gate.clear()  # the PACS slow to answer
    assert ids() == ["i1"]  # at once, while the refresh waits for the PACS
    assert inner.entered.wait(10)
    assert ids() == ["i1"] and inner.calls == 2  # one refresh at a time
    inner.gate.set()
    wait_for(lambda: ids() == ["i2"], 10, "the refreshed listing")

    wait_for(lambda: not pacs._refreshing, 10, "the refreshes to end")
    inner.gone = True
    assert ids() == ["i2"]  # the last answer, once more
    wait_for(lambda: not pacs._refreshing, 10, "the refresh to end")
    with pytest.raises(NotFound):
        ids()
