"""Reliability (issue #7): the app on a real Orthanc that stops and starts
again, behind a proxy injecting faults, and on a PACS holding broken files.

- rel001-rel003: Orthanc stopped in the middle of a bulk load and started
  again on the same port and storage: the progress API and the study page's
  card data say "waiting", loading resumes by itself, no image is lost or
  fetched twice, the final counts are Orthanc's.
- rel010: a full bulk load through seeded random faults (HTTP 500, 429 with
  Retry-After, slow answers, dropped connections): every image arrives, the
  cap of 5 in flight holds, and a client reading frames through the app at the
  same time sees fewer than 2 % failures.

Everything runs on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from werkzeug.serving import make_server

from services.imagecache import compact
from tests.conftest import API_ADMIN
from tests.proxy import Chaos, CountingProxy


def wait_for(predicate, timeout=60.0, what="condition", poll=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


class Served:
    """A Flask server on 127.0.0.1:<free port> in a thread."""

    def __init__(self, wsgi_app) -> None:
        self._server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def api_client(base: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    answer = session.post(
        f"{base}/api/token/",
        json={"username": API_ADMIN[0], "password": API_ADMIN[1]},
        timeout=10,
    )
    answer.raise_for_status()
    session.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    return session


def file_fetches(proxy: CountingProxy) -> Counter:
    """Instance files the upstream Orthanc answered 200, per instance."""
    with proxy.lock:
        return Counter(
            path.split("/")[2]
            for path, status in proxy.answered
            if path.endswith("/file") and status == 200
        )


# -- faults injected between the app and Orthanc ------------------------------------


def test_rel010_bulk_load_through_faults_every_image_once_under_2_percent(
    orthanc_server, embedded_pacs, corpus, api_settings
):
    from app import create_server

    study = corpus.demo
    chaos = Chaos(seed=10)
    with CountingProxy(orthanc_server.url, chaos=chaos) as proxy:
        server = create_server(
            api_settings(
                orthanc_url=proxy.url,
                orthanc_username=orthanc_server.auth[0],
                orthanc_password=orthanc_server.auth[1],
            )
        )
        served = Served(server)
        statuses: Counter = Counter()  # (kind, status) seen by the API client
        lock = threading.Lock()
        session = api_client(served.url)

        def get(kind: str, url: str, method: str = "GET") -> requests.Response:
            answer = session.request(method, served.url + url, timeout=60)
            with lock:
                statuses[(kind, answer.status_code)] += 1
            return answer

        def until_ok(kind: str, url: str, method: str = "GET"):
            """A client that honours 503 + Retry-After (bounded)."""
            for _ in range(20):
                answer = get(kind, url, method)
                if answer.status_code < 500:
                    return answer
                time.sleep(min(float(answer.headers.get("Retry-After", 1)), 1.0))
            return answer

        try:
            uid = study.study_uid
            assert until_ok("prefetch", f"/api/pacs/studies/{uid}/prefetch/", "POST").ok
            listing = until_ok("listing", f"/api/pacs/studies/{uid}/series/").json()
            frames = []
            for series in listing["series"]:
                bulk = until_ok(
                    "listing",
                    f"/api/pacs/studies/{uid}/series/{series['seriesUid']}"
                    f"/images/bulk?count=500",
                ).json()
                frames += [(i["orthancId"], i["frameNumber"]) for i in bulk["images"]]
            assert len(frames) == sum(s.image_count for s in study.series)

            # a viewer reading every frame while the loader works (one try each)
            def read(frame):
                instance, number = frame
                answer = get("frame", f"/api/pacs/instances/{instance}/frames/{number}")
                if answer.status_code != 200:
                    return None
                return hashlib.sha1(answer.content).hexdigest()

            with ThreadPoolExecutor(4) as pool:
                digests = list(pool.map(read, frames))

            def complete():
                answer = get("progress", f"/api/pacs/studies/{uid}/progress/")
                return answer.ok and answer.json()["complete"]

            wait_for(complete, 120, "the bulk load through faults", poll=0.5)
        finally:
            server.extensions["loader"].stop()
            served.close()

        # the faults happened, of every kind
        assert {"500", "429", "drop", "slow"} <= set(chaos.injected), chaos.injected
        # every image arrived, each instance file left Orthanc once
        fetched = file_fetches(proxy)
        instances = sum(len(s.instance_uids) for s in study.series)
        assert len(fetched) == instances and set(fetched.values()) == {1}, fetched
        assert proxy.max_in_flight <= 5
        # what the client read is the image (the embedded store decodes the same files)
        expected = {}
        for series in embedded_pacs.list_series(study.study_uid):
            for image in embedded_pacs.list_images(study.study_uid, series.series_uid):
                pixels = compact(
                    embedded_pacs.get_frame(image.instance_id, image.frame_index)
                )
                expected[(image.instance_id, image.frame_index + 1)] = hashlib.sha1(
                    np.ascontiguousarray(pixels).tobytes()
                ).hexdigest()
        wrong = [
            f for f, d in zip(frames, digests, strict=True) if d and d != expected[f]
        ]
        assert wrong == []
        frame_total = sum(n for (kind, _), n in statuses.items() if kind == "frame")
        frame_failed = sum(
            n for (kind, code), n in statuses.items() if kind == "frame" and code != 200
        )
        assert frame_total == len(frames)
        assert frame_failed / frame_total < 0.02, statuses
        server_errors = {k: n for k, n in statuses.items() if k[1] >= 500}
        total = sum(statuses.values())
        assert sum(server_errors.values()) / total < 0.02, statuses
