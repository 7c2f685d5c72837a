"""The server's side of a study page's first paint: the 20 first-image
thumbnails of a 20-series study asked for 5 at a time, as the page's queue
asks for them, cold (every server cache emptied) and warm, without a browser.

Setup as ``bench.thumbnails`` (a private Orthanc with the generated 20-series
study, the full app served by werkzeug on 127.0.0.1, a client signed in
through ``POST /api/token/``), without the counting proxy. Modes:

- ``cold``: every server cache emptied, the bulk loader started for the
  study at the same moment (``POST .../prefetch/``, as the page does), so the
  thumbnails compete with it for the process and for Orthanc's 5 slots;
- ``cold, no loader``: the same without the prefetch;
- ``warm``: the same thumbnails again (each answered from the cache).

Figures per mode, median and p95 over ``--runs``: the first answer, the
last (all 20), and one thumbnail's answer time. Run from the project root::

    .venv/bin/python -m bench.thumbserver --runs 10
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench._common import (
    Served,
    api_session,
    app_env,
    clear_server,
    close_all,
    load_note,
    machine_note,
    make_study,
    median,
    p95,
    start_orthanc,
    table,
    wait_loaded,
)

IN_FLIGHT = 5  # the page's queue


def one_round(session, base: str, urls: list[str]) -> dict:
    """Ask for ``urls`` with at most 5 in flight; ms from the start."""
    start = time.perf_counter()

    def get(url: str) -> tuple[float, float]:
        sent = time.perf_counter()
        answer = session.get(base + url, timeout=30)
        answer.raise_for_status()
        done = time.perf_counter()
        return (done - start) * 1000, (done - sent) * 1000

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        results = list(pool.map(get, urls))
    ends = [r[0] for r in results]
    return {"first": min(ends), "last": max(ends), "each": [r[1] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    machine = machine_note()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-thumbserver-"))
    orthanc = served = server = None
    try:
        study = make_study(tmp / "dicom", "twenty")
        orthanc = start_orthanc(tmp / "orthanc", [study])
        os.environ.update(app_env(orthanc.url, orthanc, tmp / "app"))
        import app as app_module
        from components.series_card import thumbnail_url

        server = app_module.create_dash_app().server
        served = Served(server)
        session = api_session(served.url, pool=IN_FLIGHT)
        pacs = server.extensions["pacs"]
        images = pacs.series_images(study.study_uid)
        urls = [
            thumbnail_url(images[s.series_uid][0])
            for s in pacs.list_series(study.study_uid)
            if images.get(s.series_uid)
        ]
        prefetch = f"{served.url}/api/pacs/studies/{study.study_uid}/prefetch/"
        modes = ["cold", "cold, no loader", "warm"]
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for rep in range(args.runs + 1):  # the first round is a warm-up
            for mode in modes:
                if mode.startswith("cold"):
                    clear_server(server)
                    if mode == "cold":
                        session.post(prefetch, timeout=30).raise_for_status()
                r = one_round(session, served.url, urls)
                if rep:
                    results[mode].append(r)
                print(
                    f"  {'warm-up' if rep == 0 else f'run {rep}':7} {mode:16}: "
                    f"first {r['first']:.0f} ms, all {r['last']:.0f} ms",
                    flush=True,
                )
                if mode == "cold":
                    wait_loaded(server, study.study_uid, 120)
        rows = []
        for mode in modes:
            rs = results[mode]
            each = [v for r in rs for v in r["each"]]
            for label, values in (
                ("first thumbnail answered", [r["first"] for r in rs]),
                (f"all {len(urls)} answered", [r["last"] for r in rs]),
                ("one thumbnail, request to answer", each),
            ):
                rows.append(
                    [label, mode, f"{median(values):.0f}", f"{p95(values):.0f}"]
                )
        print(f"\n# bench.thumbserver  {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        print(f"machine: {machine}; at the end {load_note()}")
        print(f"study: {len(urls)} series; runs: {args.runs} (+1 warm-up)\n")
        print(table(["figure, ms", "caches", "median", "p95"], rows))
    finally:
        close_all(server=server, served=served, orthanc=orthanc, tmp=tmp)


if __name__ == "__main__":
    main()
