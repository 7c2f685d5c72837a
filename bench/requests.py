"""Orthanc requests for opening and re-opening a 20-series study: the app vs a
naive loader ("the current implementation" of the PRD).

What it measures, per repetition, at the counting proxy in front of Orthanc
(``tests.proxy.CountingProxy``; requests forwarded, how many were for pixels,
and the peak in flight):

- ``app open``: server caches emptied, then what the study page's data path
  does through the real app's API (``app.create_server``): ``POST
  /api/pacs/studies/{uid}/prefetch/``, ``GET .../series/``, the first image of
  every series as the page's thumbnail (``firstImageUrl`` +
  ``/rendered?size=256&format=jpeg&quality=85``, 6 at a time like a browser),
  then ``GET .../progress/`` every 100 ms until ``complete``.
- ``app re-open``: the same again, caches kept (within the 30 s metadata TTL).
- ``naive open``: no app and no cache: look the study up, list every series'
  instances, then fire one request per image (``/instances/{id}/frames/{k}/numpy``
  by default, ``--naive-endpoint``) all at once on a big thread pool
  (``--naive-workers``, default 64).
- ``naive re-open``: the same again (nothing is kept).

Targets: re-open = 0 Orthanc pixel requests; peak in flight <= 5; app requests
< 50 % of naive (PRD "server request count").

Run from the project root (as a module, so that ``requests`` is the library)::

    .venv/bin/python -m bench.requests            # --runs 3
    .venv/bin/python -m bench.requests --runs 5 --naive-endpoint preview
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.requests")

import argparse
import datetime
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench._common import (
    ADMIN,
    Proxy,
    Served,
    app_settings,
    clear_server,
    close_all,
    image_count,
    machine_note,
    make_study,
    median,
    start_orthanc,
    table,
    wait_for,
)

THUMB_QUERY = (
    "/rendered?size=256&format=jpeg&quality=85"  # as components/series_card.py
)
NAIVE_PATHS = {
    "numpy": "/instances/{id}/frames/{k}/numpy?rescale=0",
    "preview": "/instances/{id}/frames/{k}/preview",
    "rendered": "/instances/{id}/frames/{k}/rendered",
}


class Pool:
    """Thread-local requests sessions (keep-alive), one per worker thread."""

    def __init__(self, headers: dict | None = None, auth=None) -> None:
        self.headers, self.auth = headers or {}, auth
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def session(self) -> requests.Session:
        s = getattr(self._local, "s", None)
        if s is None:
            s = self._local.s = requests.Session()
            s.trust_env = False
            s.headers.update(self.headers)
            s.auth = self.auth
            with self._lock:
                self._all.append(s)
        return s

    def get(self, url: str) -> requests.Response:
        r = self.session().get(url, timeout=120)
        r.raise_for_status()
        _ = r.content
        return r

    def close(self) -> None:
        for s in self._all:
            s.close()


def app_open(base: str, token: str, study_uid: str, timeout: float) -> dict:
    """The study page's data path through the API; times in seconds."""
    pool = Pool({"Authorization": f"Bearer {token}"})
    api = f"{base}/api/pacs/studies/{study_uid}"
    t0 = time.perf_counter()
    try:
        s = pool.session()
        s.post(f"{api}/prefetch/", timeout=60).raise_for_status()
        series = s.get(f"{api}/series/", timeout=60).json()["series"]
        thumbs = [base + x["firstImageUrl"] + THUMB_QUERY for x in series]
        with ThreadPoolExecutor(6) as ex:  # a browser's connections per host
            list(ex.map(pool.get, thumbs))
        t_thumbs = time.perf_counter() - t0

        def complete():
            return s.get(f"{api}/progress/", timeout=60).json()["complete"]

        wait_for(complete, timeout, poll=0.1, what="the prefetch")
        return dict(series=len(series), thumbs_s=t_thumbs, s=time.perf_counter() - t0)
    finally:
        pool.close()


def naive_open(
    orthanc_url: str, auth, study_uid: str, endpoint: str, workers: int
) -> dict:
    """Every image of every series at once, no cache (through the proxy)."""
    pool = Pool(auth=auth)
    t0 = time.perf_counter()
    try:
        s = pool.session()
        found = s.post(f"{orthanc_url}/tools/lookup", data=study_uid, timeout=60).json()
        study_id = next(a["ID"] for a in found if a["Type"] == "Study")
        series = s.get(f"{orthanc_url}/studies/{study_id}/series", timeout=60).json()
        with ThreadPoolExecutor(min(workers, len(series))) as ex:
            listings = list(
                ex.map(
                    lambda x: pool.get(
                        f"{orthanc_url}/series/{x['ID']}/instances"
                    ).json(),
                    series,
                )
            )
        jobs, firsts = [], set()
        for instances in listings:

            def number(i):
                return int(i["MainDicomTags"].get("InstanceNumber") or 0)

            first = min(instances, key=number)["ID"]
            for inst in instances:
                frames = int(inst["MainDicomTags"].get("NumberOfFrames") or 1)
                for k in range(frames):
                    url = orthanc_url + NAIVE_PATHS[endpoint].format(id=inst["ID"], k=k)
                    jobs.append(url)
                    if inst["ID"] == first and k == 0:
                        firsts.add(url)
        first_done: list[float] = []
        lock = threading.Lock()

        def fetch(url: str) -> None:
            pool.get(url)
            if url in firsts:
                with lock:
                    first_done.append(time.perf_counter() - t0)

        with ThreadPoolExecutor(workers) as ex:  # all fired at once
            list(ex.map(fetch, jobs))
        return dict(
            series=len(series),
            thumbs_s=max(first_done),
            s=time.perf_counter() - t0,
            images=len(jobs),
        )
    finally:
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.requests")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--naive-endpoint", choices=sorted(NAIVE_PATHS), default="numpy"
    )
    parser.add_argument("--naive-workers", type=int, default=64)
    parser.add_argument("--inproc-proxy", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0, help="per open, s")
    args = parser.parse_args(argv)
    machine = machine_note()  # before the bench loads the machine
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50")
    if not 1 <= args.naive_workers <= 256:
        parser.error("--naive-workers must be 1..256")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    orthanc = proxy = served = server = None
    try:
        study = make_study(tmp / "dicom", "twenty")
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        from app import create_server

        server = create_server(app_settings(proxy.url, orthanc, tmp / "app"))
        served = Served(server)
        token = requests.post(
            f"{served.url}/api/token/",
            json={"username": ADMIN[0], "password": ADMIN[1]},
            timeout=10,
        ).json()["access"]
        uid = study.study_uid

        scenarios = ["app open", "app re-open", "naive open", "naive re-open"]
        results: dict[str, list[dict]] = {k: [] for k in scenarios}
        for rep in range(args.runs):
            clear_server(server, proxy)
            for name in scenarios:
                proxy.reset()
                if name.startswith("app"):
                    r = app_open(served.url, token, uid, args.timeout)
                else:
                    r = naive_open(
                        proxy.url,
                        orthanc.auth,
                        uid,
                        args.naive_endpoint,
                        args.naive_workers,
                    )
                    assert r["images"] == image_count(study)
                st = proxy.stats()
                r.update(
                    requests=st["forwarded"],
                    pixel=st["pixel"],
                    metadata=st["metadata"],
                    peak=st["max_in_flight"],
                )
                results[name].append(r)
                print(
                    f"  run {rep + 1} {name:14} {r['requests']:4} requests "
                    f"({r['pixel']} pixel), peak {r['peak']:3}, "
                    f"first images {r['thumbs_s']:.2f} s, all {r['s']:.2f} s",
                    flush=True,
                )

        def med(name: str, key: str) -> float:
            return median(r[key] for r in results[name])

        rows = []
        for name in scenarios:
            rows.append(
                [
                    name,
                    f"{med(name, 'requests'):.0f}",
                    f"{med(name, 'pixel'):.0f}",
                    f"{med(name, 'metadata'):.0f}",
                    f"{max(r['peak'] for r in results[name])}",
                    f"{med(name, 'thumbs_s'):.2f}",
                    f"{med(name, 's'):.2f}",
                ]
            )
        totals = {}
        for who in ("app", "naive"):
            per_rep = [
                a["requests"] + b["requests"]
                for a, b in zip(
                    results[f"{who} open"], results[f"{who} re-open"], strict=True
                )
            ]
            px = [
                a["pixel"] + b["pixel"]
                for a, b in zip(
                    results[f"{who} open"], results[f"{who} re-open"], strict=True
                )
            ]
            totals[who] = (median(per_rep), median(px))
            peak = max(
                r["peak"] for n in scenarios if n.startswith(who) for r in results[n]
            )
            rows.append(
                [
                    f"**{who} open + re-open**",
                    f"{median(per_rep):.0f}",
                    f"{median(px):.0f}",
                    f"{median(per_rep) - median(px):.0f}",
                    peak,
                    "",
                    "",
                ]
            )
        ratio = totals["app"][0] / totals["naive"][0]
        ratio_px = totals["app"][1] / totals["naive"][1]
        print()
        print(
            f"# bench.requests  {datetime.datetime.now().isoformat(timespec='seconds')}"
        )
        print(f"machine: {machine}")
        print(
            f"study: 20 series, {image_count(study)} images in "
            f"{sum(len(s.files) for s in study.series)} instances; runs: {args.runs}; "
            f"naive: /{args.naive_endpoint} per image, {args.naive_workers} threads; "
            f"proxy: {'in-process' if args.inproc_proxy else 'child process'}"
        )
        print()
        print(
            table(
                [
                    "scenario",
                    "Orthanc requests",
                    "pixel",
                    "metadata",
                    "peak in flight",
                    "first image of every series, s",
                    "until complete, s",
                ],
                rows,
            )
        )
        print()
        print(
            f"app / naive, open + re-open: requests {ratio:.2f} "
            f"({100 * ratio:.0f} %), pixel requests {ratio_px:.2f}"
        )
        print("(medians over the runs; peak = highest over the runs)")
        print(f"total wall time {time.perf_counter() - started:.1f} s")
        return 0
    finally:
        close_all(server=server, served=served, proxy=proxy, orthanc=orthanc, tmp=tmp)


if __name__ == "__main__":
    raise SystemExit(main())
