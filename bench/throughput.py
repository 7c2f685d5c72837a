"""Bulk throughput (images/s) of the app's loader vs fetching straight from Orthanc.

What it measures, per study and repetition (server caches emptied before each
app run):

- ``app loader``: ``POST /api/pacs/studies/{uid}/prefetch/`` on the real app
  (``app.create_server``), then ``GET .../progress/`` until
  ``complete`` (every 50 ms, every 10 ms once 90 % are loaded, so that the
  poll's own lag adds ~5 ms, not ~25, to the figure; until 2026-12-01 every
  50 ms); images/s = the study's images (frames) / elapsed. The app talks
  to Orthanc through ``tests.proxy.CountingProxy`` (requests and peak in flight
  are reported).
- ``direct /file x5``: every instance's ``/instances/{id}/file`` straight from
  Orthanc, 5 concurrent connections (a ThreadPoolExecutor of 5, one requests
  session per thread), with requests' default ``Accept-Encoding: gzip``.
- ``direct /numpy x5``: every frame's ``/instances/{id}/frames/{k}/numpy``
  straight from Orthanc, 5 concurrent connections: a second baseline.
- ``direct /file x5 identity``: the same with ``Accept-Encoding: identity``,
  which is what the app asks for pixel data (Orthanc otherwise gzips every
  answer on the fly, HttpCompressionEnabled being on by default). **The
  baseline of the ratio** (target >= 0.9): the fetch the app itself would do,
  with nothing else. (Until 2026-11-25 03:30 the ratio was against the gzip
  row, which is 5-8x slower than what the app does.)
- ``proxy /file x5 identity`` (with ``--via-proxy``): the baseline through the
  proxy the app talks through, to see what the proxy itself costs.
- ``app loader, no proxy`` (with ``--app-no-proxy``): a second app server
  talking to Orthanc directly (peak in flight then from the app's own counter).
- ``app loader in the web process, no proxy`` (with ``--web-loader``): the
  same with ``LOADER_PROCESSES=0``, the loader's threads in the web process
  (the only way until 2026-12-06; the other app rows have the default, the
  loader in two child processes).
- ``..., to last stored``: the in-process app runs timed to the moment the loader
  stored the study's last image (the loader's ``_load`` wrapped in this
  process), not to the poll that saw it: on a study that loads in ~0.25 s
  the polls' 50 ms steps (10 ms past 90 %) weigh up to a fifth of the figure.

Studies: ``twenty`` (services.demo.many_series_specs(20): 193 images in 179
instances, mostly 256x256) and ``demo`` (services.demo.DEFAULT_DEMO: 277
images in 262 instances, ~100 MB, many 512x512). A private Orthanc is started
and fed for the run; nothing leaves 127.0.0.1. One untimed warm-up of every
method comes first. CPU seconds of this process (app + client; the proxy runs
in a child process unless ``--inproc-proxy``) and of Orthanc are reported.

``--what-if-identity`` repeats the app runs with the app's Orthanc session
sending ``Accept-Encoding: identity`` (set on the live session object for
those runs; the app's code is unchanged), to size the gzip cost.
``--sample`` adds one diagnostic app run per study (not in the figures) with
timers wrapped around the loader's calls and a stack sampler on its threads,
and prints where the time goes.

Run from the project root (as a module, so that ``requests`` is the library)::

    .venv/bin/python -m bench.throughput            # --runs 3
    .venv/bin/python -m bench.throughput --runs 5 --studies demo --sample
    .venv/bin/python -m bench.throughput --via-proxy --app-no-proxy --loader-workers 5
    .venv/bin/python -m bench.throughput --what-if-identity
    .venv/bin/python -m bench.throughput --runs 5 --app-no-proxy --web-loader --no-numpy --no-gzip
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit(
        "run from the project root as: .venv/bin/python -m bench.throughput"
    )

import argparse
import dataclasses
import datetime
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench._common import (
    CallTimer,
    Proxy,
    Served,
    StackSampler,
    api_session,
    app_settings,
    clear_server,
    close_all,
    image_count,
    machine_note,
    make_study,
    median,
    orthanc_cpu_seconds,
    orthanc_frames,
    p95,
    proc_cpu_seconds,
    start_orthanc,
    table,
)

BASELINE = "direct /file x5 identity"  # the ratio's denominator


def direct_fetch(
    base: str, auth, paths: list[str], workers: int = 5, headers: dict | None = None
) -> float:
    """Fetch every path with ``workers`` concurrent sessions; seconds elapsed."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def get(path: str) -> int:
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
            s.trust_env = False
            s.auth = auth
            s.headers.update(headers or {})
            with lock:
                sessions.append(s)
        r = s.get(base + path, timeout=60)
        r.raise_for_status()
        return len(r.content)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(get, paths))
    elapsed = time.perf_counter() - t0
    for s in sessions:
        s.close()
    assert total > 0
    return elapsed


def breakdown_targets(server) -> dict[str, tuple[object, str]]:
    """Calls to time in a diagnostic run (nested: a row includes the rows below it)."""
    import services.imagecache as imagecache

    ext = server.extensions
    loader, pacs = ext["loader"], ext["pacs"]
    return {
        "loader.prefetch (request thread)": (loader, "prefetch"),
        "loader._candidates (scheduler)": (loader, "_candidates"),
        "loader._load (one image, worker)": (loader, "_load"),
        "  pacs.has_frame": (pacs, "has_frame"),
        "  pacs.load_instance (lock + fetch + store)": (pacs, "load_instance"),
        "    pacs._fetch": (pacs, "_fetch"),
        "      SharedSlots.acquire": (ext["slots"], "acquire"),
        "      SharedSlots.release": (ext["slots"], "release"),
        "      HTTP OrthancClient._get_binary (urllib3)": (pacs.inner, "_get_binary"),
        "      imagecache.undecodable (header)": (imagecache, "undecodable"),
        "      images.set (diskcache)": (pacs.images, "set"),
        "  loader._update (progress)": (loader, "_update"),
        "loader._flush (progress, scheduler)": (loader, "_flush"),
        "shared state (SQLite): add": (ext["state"], "add"),
        "shared state (SQLite): set": (ext["state"], "set"),
        "shared state (SQLite): incr": (ext["state"], "incr"),
        "shared state (SQLite): delete": (ext["state"], "delete"),
        "shared state (SQLite): transact() (count only)": (ext["state"], "transact"),
    }


class AppUnderTest:
    """One ``app.create_server`` served on 127.0.0.1, signed in over the API."""

    def __init__(self, settings, proxy: Proxy | None) -> None:
        from app import create_server

        self.server = create_server(settings)
        self.proxy = proxy
        self.served = Served(self.server)
        # when the loader last stored an image (its own clock, this process):
        # the load is over then, whenever the bench's next poll comes
        loader = self.server.extensions["loader"]
        load_one, self.last_stored = loader._load, 0.0
        self.in_process = loader.kick is None  # else a child process loads

        def timed(task):
            outcome = load_one(task)
            if outcome == "ok":
                self.last_stored = time.perf_counter()
            return outcome

        loader._load = timed
        self.base = self.served.url
        self.client = api_session(self.base)

    def load(self, study_uid: str, timeout: float) -> dict:
        """Empty the server caches, prefetch the study, poll progress until complete."""
        clear_server(self.server, self.proxy)
        t0 = self.last_stored = time.perf_counter()
        r = self.client.post(
            f"{self.base}/api/pacs/studies/{study_uid}/prefetch/", timeout=60
        )
        r.raise_for_status()

        deadline, polls = time.monotonic() + timeout, 0
        while True:  # every 50 ms, every 10 ms once 90 % are loaded
            body = self.client.get(
                f"{self.base}/api/pacs/studies/{study_uid}/progress/", timeout=60
            ).json()
            polls += 1
            if any(s["state"] == "error" for s in body["series"]):
                raise RuntimeError(f"a series failed: {body}")
            if body["complete"]:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout} s waiting for the prefetch"
                )
            loaded = sum(s["loaded"] for s in body["series"])
            total = sum(s["total"] for s in body["series"])
            time.sleep(0.01 if loaded >= 0.9 * total else 0.05)
        elapsed = time.perf_counter() - t0
        out = dict(
            s=elapsed,
            stored_s=self.last_stored - t0 if self.in_process else None,
            images=sum(s["total"] for s in body["series"]),
            polls=polls,
        )
        if self.proxy is not None:
            stats = self.proxy.stats()
            out.update(
                requests=stats["forwarded"],
                pixel=stats["pixel"],
                peak=stats["max_in_flight"],
            )
        else:
            if not self.in_process:  # the children write their counts every 0.25 s
                time.sleep(0.3)
            slots = self.server.extensions["slots"]
            out.update(
                requests=slots.counters.get("requests"),
                pixel=None,
                peak=slots.counters.get("in_flight_max"),
            )
        return out

    def close(self) -> None:
        self.server.extensions["loader"].stop()
        self.served.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--studies", default="twenty,demo", help="comma list of: twenty, demo"
    )
    parser.add_argument(
        "--via-proxy", action="store_true", help="add proxy /file x5 identity"
    )
    parser.add_argument(
        "--app-no-proxy", action="store_true", help="add the app without the proxy"
    )
    parser.add_argument("--no-numpy", action="store_true", help="skip /numpy baseline")
    parser.add_argument(
        "--no-gzip", action="store_true", help="skip the gzip /file baseline (slow)"
    )
    parser.add_argument(
        "--loader-workers", type=int, default=4, help="LOADER_WORKERS (app default 4)"
    )
    parser.add_argument(
        "--web-loader",
        action="store_true",
        help="add the app with its loader in the web process (LOADER_PROCESS=0), no proxy",
    )
    parser.add_argument("--inproc-proxy", action="store_true")
    parser.add_argument("--sample", action="store_true", help="timed + sampled run")
    parser.add_argument(
        "--what-if-identity",
        action="store_true",
        help="also run the app with its Orthanc session asking Accept-Encoding: identity",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="per app run, s")
    args = parser.parse_args(argv)
    machine = machine_note()  # before the bench loads the machine
    if not 1 <= args.runs <= 50:
        parser.error("--runs must be 1..50")
    if not 1 <= args.loader_workers <= 16:
        parser.error("--loader-workers must be 1..16")
    names = [n.strip() for n in args.studies.split(",") if n.strip()]
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    orthanc = proxy = None
    apps: list[AppUnderTest] = []
    try:
        studies = {n: make_study(tmp / "dicom", n) for n in names}
        orthanc = start_orthanc(tmp / "orthanc", list(studies.values()))
        proxy = Proxy(orthanc.url, inproc=args.inproc_proxy)
        settings = dataclasses.replace(
            app_settings(proxy.url, orthanc, tmp / "app"),
            loader_workers=args.loader_workers,
        )
        app = AppUnderTest(settings, proxy)
        apps.append(app)
        if args.app_no_proxy:
            plain = AppUnderTest(
                dataclasses.replace(
                    app_settings(orthanc.url, orthanc, tmp / "app-plain"),
                    loader_workers=args.loader_workers,
                ),
                None,
            )
            apps.append(plain)
        if args.web_loader:
            web = AppUnderTest(
                dataclasses.replace(
                    app_settings(orthanc.url, orthanc, tmp / "app-web"),
                    loader_workers=args.loader_workers,
                    loader_processes=0,
                ),
                None,
            )
            apps.append(web)
        setup_s = time.perf_counter() - started

        frames = {n: orthanc_frames(orthanc, s.study_uid) for n, s in studies.items()}
        files = {
            n: sorted({f"/instances/{i}/file" for i, _ in frames[n]}) for n in names
        }
        identity = {"Accept-Encoding": "identity"}
        # method -> (base URL, paths of a study, extra headers) or an app
        direct: dict[str, tuple] = {
            "direct /file x5": (orthanc.url, files, None),
            "direct /file x5 identity": (orthanc.url, files, identity),
        }
        if args.no_gzip:
            del direct["direct /file x5"]
        if not args.no_numpy:
            numpy_paths = {
                n: [f"/instances/{i}/frames/{k}/numpy?rescale=0" for i, k in frames[n]]
                for n in names
            }
            direct["direct /numpy x5"] = (orthanc.url, numpy_paths, None)
        if args.via_proxy:
            direct["proxy /file x5 identity"] = (proxy.url, files, identity)
        app_methods = {"app loader": app}
        if args.app_no_proxy:
            app_methods["app loader, no proxy"] = plain
        if args.web_loader:
            app_methods["app loader in the web process, no proxy"] = web
        methods = [*direct, *app_methods]

        def loader_cpu() -> float:  # the apps' loader processes, alive now
            return sum(
                proc_cpu_seconds(pid)
                for a in apps
                for pid in getattr(a.server.extensions["loader"].kick, "pids", ())
            )

        def run(n: str, method: str) -> dict:
            cpu0, orth0 = time.process_time(), orthanc_cpu_seconds(orthanc)
            proxy0, loader0 = proxy.cpu_seconds(), loader_cpu()
            if method in direct:
                base, paths, headers = direct[method]
                elapsed = direct_fetch(base, orthanc.auth, paths[n], headers=headers)
                out = dict(s=elapsed, images=len(frames[n]), requests=len(paths[n]))
            else:
                out = app_methods[method].load(studies[n].study_uid, args.timeout)
                assert out["images"] == image_count(studies[n]) == len(frames[n])
            out.update(
                cpu=time.process_time() - cpu0,
                orthanc_cpu=orthanc_cpu_seconds(orthanc) - orth0,
                proxy_cpu=proxy.cpu_seconds() - proxy0,
                loader_cpu=loader_cpu() - loader0,
            )
            return out

        for n in names:  # warm-up (untimed): OS page cache, imports, decoders
            for method in methods:
                run(n, method)

        results: dict[tuple[str, str], list[dict]] = {}
        for rep in range(args.runs):
            for n in names:
                order = methods if rep % 2 == 0 else methods[::-1]  # against drift
                for method in order:
                    r = run(n, method)
                    results.setdefault((n, method), []).append(r)
                    print(
                        f"  run {rep + 1} {n:6} {method:26} {r['s']:.3f} s "
                        f"{r['images'] / r['s']:7.1f} images/s",
                        flush=True,
                    )

        stored = []  # the app rows again, to the last image stored
        for n in names:
            for method, app_run in app_methods.items():
                if not app_run.in_process:
                    continue
                name = f"{method}, to last stored"
                results[(n, name)] = [
                    {**r, "s": r["stored_s"]} for r in results[(n, method)]
                ]
                if name not in stored:
                    stored.append(name)
        rows = []
        for n in names:
            base_ips = median(r["images"] / r["s"] for r in results[(n, BASELINE)])
            for method in methods + stored:
                rs = results[(n, method)]
                ips = [r["images"] / r["s"] for r in rs]
                if method in direct:
                    reqs, peak = str(rs[0]["requests"]), "5 (client pool)"
                else:
                    pixel = [r["pixel"] for r in rs if r["pixel"] is not None]
                    reqs = f"{median(r['requests'] for r in rs):.0f}" + (
                        f" ({median(pixel):.0f} pixel)" if pixel else ""
                    )
                    peak = str(max(r["peak"] for r in rs))
                rows.append(
                    [
                        n,
                        method,
                        rs[0]["images"],
                        reqs,
                        f"{median(r['s'] for r in rs):.3f}",
                        f"{p95(r['s'] for r in rs):.3f}",
                        f"{median(ips):.1f}",
                        f"{median(ips) / base_ips:.2f}",
                        peak,
                        f"{median(r['cpu'] for r in rs):.2f}",
                        f"{median(r['loader_cpu'] for r in rs):.2f}",
                        f"{median(r['orthanc_cpu'] for r in rs):.2f}",
                        f"{median(r['proxy_cpu'] for r in rs):.2f}",
                    ]
                )
        print()
        print(
            f"# bench.throughput  {datetime.datetime.now().isoformat(timespec='seconds')}"
        )
        print(f"machine: {machine}")
        print(
            f"runs: {args.runs} (+1 warm-up), loader workers: {args.loader_workers}, "
            f"proxy: {'in-process' if args.inproc_proxy else 'child process'}, "
            f"setup {setup_s:.1f} s"
        )
        print()
        print(
            table(
                [
                    "study",
                    "method",
                    "images",
                    "Orthanc requests",
                    "median s",
                    "p95 s",
                    "median images/s",
                    "ratio vs direct /file x5 identity",
                    "peak in flight",
                    "CPU s this process",
                    "CPU s loader processes",
                    "CPU s Orthanc",
                    "CPU s proxy",
                ],
                rows,
            )
        )
        print(
            "\n(p95 is nearest-rank: with fewer than 20 runs it is the slowest run. "
            "CPU s this process = app + bench client threads; the proxy and the "
            "apps' loader processes run apart.)"
        )

        if args.what_if_identity:
            # Not a change to the app: the same objects, with the Orthanc client's
            # session asking for uncompressed answers for these runs only.
            headers = app.server.extensions["pacs"].inner.session.headers
            saved = headers.get("Accept-Encoding")
            headers["Accept-Encoding"] = "identity"
            try:
                print()
                what_rows = []
                for n in names:
                    rs = [
                        app.load(studies[n].study_uid, args.timeout)
                        for _ in range(args.runs)
                    ]
                    base_ips = median(
                        r["images"] / r["s"] for r in results[(n, BASELINE)]
                    )
                    ips = median(r["images"] / r["s"] for r in rs)
                    what_rows.append(
                        [
                            n,
                            "app loader, Accept-Encoding: identity",
                            f"{median(r['s'] for r in rs):.3f}",
                            f"{p95(r['s'] for r in rs):.3f}",
                            f"{ips:.1f}",
                            f"{ips / base_ips:.2f}",
                            max(r["peak"] for r in rs),
                        ]
                    )
                print(
                    "## what-if (not the app's default): the app's Orthanc session "
                    "sends Accept-Encoding: identity"
                )
                print(
                    table(
                        [
                            "study",
                            "method",
                            "median s",
                            "p95 s",
                            "median images/s",
                            "ratio vs direct /file x5 identity",
                            "peak in flight",
                        ],
                        what_rows,
                    )
                )
            finally:
                if saved is None:
                    del headers["Accept-Encoding"]
                else:
                    headers["Accept-Encoding"] = saved

        if args.sample:
            print()
            for other in apps[1:]:  # only the measured app's loader threads exist
                other.server.extensions["loader"].stop()
            headers = app.server.extensions["pacs"].inner.session.headers
            saved = headers.get("Accept-Encoding")
            encodings = [None, "identity"] if args.what_if_identity else [None]
            for encoding in encodings:
                for n in names:
                    if encoding:
                        headers["Accept-Encoding"] = encoding
                    try:
                        with (
                            CallTimer(breakdown_targets(app.server)) as timer,
                            StackSampler(("bulk-fetch", "bulk-loader")) as sampler,
                        ):
                            r = app.load(studies[n].study_uid, args.timeout)
                    finally:
                        if saved is None:
                            headers.pop("Accept-Encoding", None)
                        else:
                            headers["Accept-Encoding"] = saved
                    worker_s = args.loader_workers * r["s"]
                    what = (
                        "what-if Accept-Encoding: identity" if encoding else "default"
                    )
                    print(
                        f"## diagnostic run ({what}; not in the figures above): {n}, "
                        f"{r['images']} images in {r['s']:.2f} s with timers and a "
                        f"5 ms stack sampler; worker-thread time available "
                        f"{args.loader_workers} x {r['s']:.2f} s = {worker_s:.2f} s"
                    )
                    rows = timer.rows()
                    for row in rows:
                        row.append(f"{100 * float(row[2]) / worker_s:.0f} %")
                    print(
                        table(
                            ["call", "calls", "total s", "mean ms", "of worker time"],
                            rows,
                        )
                    )
                    print(sampler.report())
                    print()
        print(f"total wall time {time.perf_counter() - started:.1f} s")
        return 0
    finally:
        for a in apps:
            a.close()
        close_all(proxy=proxy, orthanc=orthanc, tmp=tmp)


if __name__ == "__main__":
    raise SystemExit(main())
