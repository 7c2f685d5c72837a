"""Where a bulk load's time goes: a timeline of the app's fetches and stack
samples of every thread, for the app talking to Orthanc directly (no proxy).

Diagnostic only (``bench.throughput`` gives the figures). Per study and
repetition, interleaved with the ratio's baseline (``direct /file x5
identity``), one app load (server caches emptied first) is recorded:

- when the prefetch request returned, when the first and the last instance
  file were asked for and answered, when the bench's poll saw ``complete``;
- how many fetches were in flight on average between the first start and the
  last end, and for how long fewer than the loader's workers were;
- stack samples (every ``--interval`` s) of the loader's threads, the request
  threads and the counters' flusher, inclusive (a function counts in every
  sample it is on the stack of), so that "the scheduler spends 80 % in X"
  reads directly.

The in-process sampler costs the GIL itself (the app runs ~2x slower under
it at 2 ms). For figures that hold, sample from outside with py-spy (a PyPI
wheel; not a project requirement), only the thread holding the GIL, and read
its raw output with ``--spy-report``: samples grouped by what the stack is
doing (a loader worker, the scheduler, a request thread, the bench's direct
client, its poll), per group inclusive % by function::

    .venv/bin/python -m bench.loader_profile --runs 3
    py-spy record --nonblocking --gil -r 250 --format raw -o /tmp/spy.txt -- \
        .venv/bin/python -m bench.loader_profile --runs 5 --no-sample
    .venv/bin/python -m bench.loader_profile --spy-report /tmp/spy.txt
"""

from __future__ import annotations

if not __package__:
    raise SystemExit(
        "run from the project root as: .venv/bin/python -m bench.loader_profile"
    )

import argparse
import collections
import logging
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import (
    ROOT,
    app_settings,
    close_all,
    machine_note,
    make_study,
    median,
    orthanc_frames,
    start_orthanc,
)
from bench.throughput import AppUnderTest, direct_fetch


class Sampler:
    """Inclusive stack samples per thread group, every ``interval`` s."""

    IDLE = {("thread.py", "_worker"), ("threading.py", "wait")}

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: collections.Counter[str] = collections.Counter()
        self.idle: collections.Counter[str] = collections.Counter()
        self.incl: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.leaf: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()

    @staticmethod
    def group(name: str) -> str | None:
        for prefix in ("bulk-fetch", "bulk-loader", "counters-flush"):
            if name.startswith(prefix):
                return prefix
        if name.startswith("Thread-") and "process_request_thread" in name:
            return "request"
        return None

    def _run(self) -> None:
        root = str(ROOT)
        while not self._stop.wait(self.interval):
            if not self.on.is_set():
                continue
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                group = self.group(names.get(ident, ""))
                if group is None:
                    continue
                self.samples[group] += 1
                code = frame.f_code
                if (Path(code.co_filename).name, code.co_name) in self.IDLE:
                    self.idle[group] += 1
                    continue
                self.leaf[group][
                    f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}"
                ] += 1
                seen = set()
                f = frame
                while f is not None:
                    fn = f.f_code.co_filename
                    if fn.startswith(root) and "/.venv/" not in fn:
                        label = f"{Path(fn).relative_to(ROOT)} {f.f_code.co_name}"
                    else:
                        label = f"{Path(fn).name} {f.f_code.co_name}"
                    if label not in seen:
                        seen.add(label)
                        self.incl[group][label] += 1
                    f = f.f_back

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def report(self, top: int) -> str:
        out = []
        for group, total in self.samples.most_common():
            busy = total - self.idle[group]
            out.append(
                f"threads {group}: {total} samples, idle {100 * self.idle[group] / total:.0f} %"
            )
            out.append("  inclusive, % of all samples of the group:")
            for key, n in self.incl[group].most_common(top):
                out.append(f"    {100 * n / total:5.1f} %  {key}")
            out.append("  innermost frame, % of busy samples:")
            for key, n in self.leaf[group].most_common(8):
                out.append(f"    {100 * n / max(busy, 1):5.1f} %  {key}")
        return "\n".join(out)


class Timeline:
    """Start and end of every instance-file fetch of the app (wrapping the
    Orthanc client's call on the live object; removed on exit)."""

    def __init__(self, server) -> None:
        self.inner = server.extensions["pacs"].inner
        self.events: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Timeline:
        original = self.inner.get_instance_file

        def timed(instance_id: str) -> bytes:
            t0 = time.perf_counter()
            try:
                return original(instance_id)
            finally:
                with self._lock:
                    self.events.append((t0, time.perf_counter()))

        self.inner.get_instance_file = timed
        return self

    def __exit__(self, *exc: object) -> None:
        del self.inner.get_instance_file

    def summary(self, t0: float, workers: int) -> dict[str, float]:
        ev = sorted(self.events)
        first, last = ev[0][0], max(e for _, e in ev)
        span = last - first
        busy = sum(e - s for s, e in ev)
        # time with fewer than ``workers`` fetches in flight
        points = sorted([(s, 1) for s, _ in ev] + [(e, -1) for _, e in ev])
        level, prev, under = 0, first, 0.0
        for t, d in points:
            if level < workers:
                under += t - prev
            level, prev = level + d, t
        return dict(
            fetches=len(ev),
            first_start=first - t0,
            last_end=last - t0,
            mean_in_flight=busy / span,
            under_workers=under,
            mean_fetch_ms=1000 * busy / len(ev),
        )


def spy_group(stack: str) -> str:
    """What a py-spy stack is doing, from the functions on it."""
    for marker, group in (
        ("BulkLoader._load ", "loader worker"),
        ("BulkLoader._run ", "loader scheduler"),
        ("process_request_thread", "app request thread"),
        ("direct_fetch.<locals>.get", "direct client (baseline)"),
        ("AppUnderTest.load", "bench poll (main thread)"),
        ("_Flusher._run", "counters flush"),
    ):
        if marker in stack:
            return group
    return "other (setup, Orthanc listing threads ...)"


def spy_report(path: str, top: int) -> str:
    """Summarise ``py-spy record --format raw`` output (see the module doc)."""
    groups: collections.Counter[str] = collections.Counter()
    incl: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n, group = int(count), spy_group(stack)
        groups[group] += n
        seen = set()
        for frame in stack.split(";")[1:]:
            name = re.sub(r":\d+\)", ")", frame)
            if name not in seen:
                seen.add(name)
                incl[group][name] += n
    total = sum(groups.values())
    out = [f"{total} samples"]
    out += [f"  {n:6d} {100 * n / total:5.1f} %  {g}" for g, n in groups.most_common()]
    app = sum(n for g, n in groups.items() if g.startswith(("loader", "app", "bench")))
    app += groups["counters flush"]
    direct = groups["direct client (baseline)"]
    out.append(
        f"app (loader, request threads, poll, flush) / direct client: {app} / "
        f"{direct} = {app / max(direct, 1):.2f} (each loads the same images)"
    )
    for group, n in groups.most_common():
        if group.startswith("other"):
            continue
        out.append(f"\n{group}: {n} samples, inclusive % of the group")
        for name, k in incl[group].most_common(top):
            if "threading.py" in name or "concurrent/futures" in name:
                continue
            out.append(f"  {100 * k / n:5.1f} %  {k:5d}  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loader_profile")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--studies", default="twenty,demo")
    parser.add_argument("--interval", type=float, default=0.002)
    parser.add_argument("--no-sample", action="store_true")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--spy-report", metavar="FILE", help="summarise py-spy raw")
    args = parser.parse_args(argv)
    if args.spy_report:
        print(spy_report(args.spy_report, args.top))
        return 0
    print(f"machine: {machine_note()}")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    names = [n.strip() for n in args.studies.split(",") if n.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-profile-"))
    orthanc = app = None
    sampler = None if args.no_sample else Sampler(args.interval)
    try:
        studies = {n: make_study(tmp / "dicom", n) for n in names}
        orthanc = start_orthanc(tmp / "orthanc", list(studies.values()))
        settings = app_settings(orthanc.url, orthanc, tmp / "app")
        app = AppUnderTest(settings, None)
        workers = settings.loader_workers
        original_prefetch = app.server.extensions["loader"].prefetch
        returned: list[float] = []

        def prefetch(study_uid: str):  # type: ignore[no-untyped-def]
            try:
                return original_prefetch(study_uid)
            finally:
                returned.append(time.perf_counter())

        app.server.extensions["loader"].prefetch = prefetch
        files = {
            n: sorted(
                {
                    f"/instances/{i}/file"
                    for i, _ in orthanc_frames(orthanc, s.study_uid)
                }
            )
            for n, s in studies.items()
        }
        identity = {"Accept-Encoding": "identity"}
        for n in names:  # warm-up
            direct_fetch(orthanc.url, orthanc.auth, files[n], headers=identity)
            app.load(studies[n].study_uid, 120)
        rows: dict[str, list[dict]] = collections.defaultdict(list)
        for rep in range(args.runs):
            for n in names:
                d = direct_fetch(orthanc.url, orthanc.auth, files[n], headers=identity)
                with Timeline(app.server) as timeline:
                    returned.clear()
                    if sampler:
                        sampler.on.set()
                    r = app.load(studies[n].study_uid, 120)
                    t0 = time.perf_counter() - r["s"]  # its clock: after clear_server
                    if sampler:
                        sampler.on.clear()
                s = timeline.summary(t0, workers)
                s.update(direct=d, app=r["s"], prefetch=returned[0] - t0)
                rows[n].append(s)
                print(
                    f"run {rep + 1} {n:6} direct {d:.3f} s, app {r['s']:.3f} s "
                    f"(ratio {d / r['s']:.2f}): prefetch returned {s['prefetch']:.3f}, "
                    f"first fetch {s['first_start']:.3f}, last answer {s['last_end']:.3f}, "
                    f"{s['fetches']} fetches, mean in flight {s['mean_in_flight']:.2f}, "
                    f"< {workers} in flight {s['under_workers']:.3f} s, "
                    f"mean fetch {s['mean_fetch_ms']:.1f} ms",
                    flush=True,
                )
        print()
        for n, rs in rows.items():
            keys = ["direct", "app", "prefetch", "first_start", "last_end"]
            keys += ["mean_in_flight", "under_workers", "mean_fetch_ms"]
            med = {k: median(r[k] for r in rs) for k in keys}
            print(
                f"{n}: medians "
                + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
                + f"; ratio {med['direct'] / med['app']:.2f}"
            )
        if sampler:
            print()
            print(sampler.report(args.top))
        return 0
    finally:
        if sampler:
            sampler.close()
        if app is not None:
            app.close()
        close_all(orthanc=orthanc, tmp=tmp)


if __name__ == "__main__":
    raise SystemExit(main())
