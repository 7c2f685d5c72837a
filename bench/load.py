"""Load: N simulated users for M seconds against the real app under gunicorn,
on a private Orthanc (issue #7, PRD "Load testing ... with JWT authentication").

Each user is a thread with its own session, signed in twice: a JWT for the
API (``POST /api/token/``) and the login form's cookies for the pages. Until
the time is up it picks a request at random (seeded per user, weights in
``ACTIONS``): a new token, the series list, a page of the bulk listing, a raw
frame (the viewer's request, the most frequent), the load progress, and the
pages (``/``, ``/study/<uid>``, ``/viewer/<uid>/<series>``, HTML only: the
browser's follow-up requests are the API calls above). Per request kind it
records throughput, p50/p95 latency and the error rate (HTTP >= 400 or no
answer). The app runs as the ``Procfile`` runs it (``gunicorn app:server``)
in a child process, with its Orthanc behind the counting proxy (in its own
process), which reports the peak requests in flight to Orthanc.

Modes (``MODES``): ``single`` = 1 gunicorn worker, ``workers`` = 2 workers
sharing ``CACHE_DIR`` (no Redis), ``scaleout`` = 2 workers with a private
redis-server (``REDIS_URL``) and a Celery worker running the bulk loader.
``--mode single,scaleout`` runs several modes one after another in one run.

By default the study is loaded (prefetch, wait for complete) before the
clock starts, so modes compare on a warm server cache; ``--cold`` skips that.

Run from the project root (as a module)::

    .venv/bin/python -m bench.load                       # single, 20 users x 20 s
    .venv/bin/python -m bench.load --mode workers --users 20 --seconds 20

Every loop is bounded in time; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

if not __package__:  # run as a file, ``import requests`` would find bench/requests.py
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.load")

import argparse
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench._common import (
    ADMIN,
    ROOT,
    Proxy,
    app_env,
    close_all,
    image_count,
    load_note,
    machine_note,
    make_study,
    median,
    p95,
    start_orthanc,
    table,
    wait_for,
)


@dataclass(frozen=True)
class Mode:
    """How the app is run for one mode."""

    workers: int  # gunicorn worker processes
    threads: int = 8  # threads per worker
    env: dict[str, str] = field(default_factory=dict)  # extra environment
    needs: tuple[str, ...] = ()  # programs that must be installed
    about: str = ""
    redis: bool = False  # a private redis-server (REDIS_URL) and a Celery worker


MODES: dict[str, Mode] = {
    "single": Mode(1, about="1 gunicorn worker, 8 threads"),
    "workers": Mode(2, about="2 gunicorn workers x 8 threads, shared CACHE_DIR"),
    "scaleout": Mode(
        2,
        needs=("redis-server",),
        about="2 gunicorn workers x 8 threads + Redis + a Celery worker (loader)",
        redis=True,
    ),
}

# request kind -> weight (how often a user picks it)
ACTIONS = {
    "frame": 50,
    "bulk": 10,
    "series": 8,
    "progress": 8,
    "page /study": 8,
    "page /viewer": 5,
    "page /": 4,
    "token": 2,
}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class App:
    """``gunicorn app:server`` in a child process (stopped by its handle)."""

    def __init__(self, mode: Mode, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 (closed in close())
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "app:server",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(mode.workers),
            "--threads",
            str(mode.threads),
            "--timeout",
            "60",
            "--no-control-socket",  # its default path is shared by every gunicorn
        ]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, **mode.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited; see its log")
            try:
                return requests.get(f"{self.url}/healthz", timeout=5).ok
            except requests.RequestException:
                return False

        wait_for(ready, timeout, poll=0.2, what="gunicorn to answer")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


class Worker:
    """A Celery worker (the bulk loader in scale-out mode) in a child process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 (closed in close())
        celery = str(Path(sys.executable).parent / "celery")
        self.proc = subprocess.Popen(
            [celery, "-A", "worker:celery_app", "worker", "--concurrency", "2"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    close = App.close


def signed_in(base: str) -> requests.Session:
    """A session with a Bearer token (API) and the login cookies (pages)."""
    s = requests.Session()
    s.trust_env = False
    answer = s.post(
        f"{base}/api/token/",
        json={"username": ADMIN[0], "password": ADMIN[1]},
        timeout=30,
    )
    answer.raise_for_status()
    s.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    form = s.post(
        f"{base}/login",
        data={"username": ADMIN[0], "password": ADMIN[1], "next": "/"},
        timeout=30,
        allow_redirects=False,
    )
    assert form.status_code == 302 and "access_token_cookie" in s.cookies, form
    return s


@dataclass
class Target:
    study_uid: str
    series: list[str]
    frames: list[str]  # frame URLs


def discover(session: requests.Session, base: str, study_uid: str) -> Target:
    listing = session.get(f"{base}/api/pacs/studies/{study_uid}/series/", timeout=60)
    listing.raise_for_status()
    series = [s["seriesUid"] for s in listing.json()["series"]]
    frames = []
    for uid in series:
        bulk = session.get(
            f"{base}/api/pacs/studies/{study_uid}/series/{uid}/images/bulk?count=500",
            timeout=60,
        ).json()
        frames += [i["imageUrl"] for i in bulk["images"]]
    return Target(study_uid, series, frames)


def user(
    index: int,
    session: requests.Session,
    base: str,
    target: Target,
    deadline: float,
    seed: int,
    out: dict,
) -> None:
    """One user's loop until ``deadline``; appends (seconds, ok) per kind."""
    rng = random.Random(f"{seed}:{index}")
    kinds, weights = list(ACTIONS), list(ACTIONS.values())
    study = target.study_uid
    for _ in range(10_000_000):  # bounded; the deadline ends it
        if time.monotonic() >= deadline:
            return
        kind = rng.choices(kinds, weights)[0]
        series = rng.choice(target.series)
        method, kwargs = "GET", {}
        if kind == "frame":
            url = rng.choice(target.frames)
        elif kind == "bulk":
            url = (
                f"/api/pacs/studies/{study}/series/{series}/images/bulk"
                f"?start={rng.randrange(0, 40)}&count=50"
            )
        elif kind == "series":
            url = f"/api/pacs/studies/{study}/series/"
        elif kind == "progress":
            url = f"/api/pacs/studies/{study}/progress/"
        elif kind == "page /study":
            url = f"/study/{study}"
        elif kind == "page /viewer":
            url = f"/viewer/{study}/{series}"
        elif kind == "page /":
            url = "/"
        else:  # token
            method, url = "POST", "/api/token/"
            kwargs = {"json": {"username": ADMIN[0], "password": ADMIN[1]}}
        started = time.perf_counter()
        try:
            answer = session.request(method, base + url, timeout=30, **kwargs)
            ok = answer.status_code < 400
            answer.content  # noqa: B018 (read the whole body)
        except requests.RequestException:
            ok = False
        out[kind].append((time.perf_counter() - started, ok))


def run(args: argparse.Namespace) -> int:
    mode = MODES[args.mode]
    missing = [p for p in mode.needs if not shutil.which(p)]
    if missing:
        raise SystemExit(f"mode {args.mode} needs {', '.join(missing)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    orthanc = proxy = app = redis = worker = None
    try:
        study = make_study(tmp / "studies", args.study)
        orthanc = start_orthanc(tmp / "orthanc", [study])
        proxy = Proxy(orthanc.url, inproc=False)
        env = app_env(proxy.url, orthanc, tmp / "app")
        env.update(LOGIN_RATE_LIMIT="100000 per minute", APP_ENV="development")
        if mode.redis:
            from scripts.redis_local import LocalRedis

            redis = LocalRedis(workdir=tmp / "redis").start()
            env["REDIS_URL"] = redis.url
            worker = Worker(env, tmp / "celery.log")
        app = App(mode, env, tmp / "gunicorn.log")
        app.wait_ready()
        first = signed_in(app.url)
        uid = study.study_uid
        first.post(f"{app.url}/api/pacs/studies/{uid}/prefetch/", timeout=60)
        target = discover(first, app.url, uid)
        if not args.cold:
            wait_for(
                lambda: first.get(
                    f"{app.url}/api/pacs/studies/{uid}/progress/", timeout=30
                ).json()["complete"],
                180,
                poll=0.5,
                what="the study to load",
            )
        sessions = [signed_in(app.url) for _ in range(args.users)]
        proxy.reset()
        load_before = load_note()
        out: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        deadline = time.monotonic() + args.seconds
        started = time.monotonic()
        threads = [
            threading.Thread(
                target=user,
                args=(i, sessions[i], app.url, target, deadline, args.seed, out),
            )
            for i in range(args.users)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 60)
        elapsed = time.monotonic() - started
        stats = proxy.stats()
        report(args, mode, study, target, out, elapsed, stats, load_before)
        return 0
    finally:
        for part in (app, worker):
            if part is not None:
                part.close()
        if redis is not None:
            redis.stop()
        close_all(proxy=proxy, orthanc=orthanc, tmp=tmp)


def report(args, mode, study, target, out, elapsed, stats, load_before) -> None:
    rows, all_samples = [], []
    for kind in ACTIONS:
        samples = out.get(kind, [])
        all_samples += samples
        rows.append(figures(kind, samples, elapsed))
    rows.append(figures("**all**", all_samples, elapsed))
    command = "python -m bench.load " + " ".join(
        f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k}"
        for k, v in vars(args).items()
        if v is not False
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n### Load, mode `{args.mode}` ({mode.about}), {now}\n")
    print(f"`{command}`\n")
    print(
        f"{args.users} users for {args.seconds} s (measured {elapsed:.1f} s), study "
        f"`{args.study}` ({image_count(study)} images, {len(target.series)} series), "
        f"server cache {'cold' if args.cold else 'warm'}; Orthanc requests during the "
        f"run: {stats['forwarded']} (peak in flight {stats['max_in_flight']}).\n"
    )
    print(
        table(
            ["request", "count", "req/s", "p50 ms", "p95 ms", "errors"],
            rows,
        )
    )
    print(f"\nMachine: {machine_note()}; load average before the run {load_before}")


def figures(kind: str, samples: list[tuple[float, bool]], elapsed: float) -> list:
    if not samples:
        return [kind, 0, "0", "-", "-", "-"]
    times = [1000 * s for s, _ in samples]
    errors = sum(1 for _, ok in samples if not ok)
    return [
        kind,
        len(samples),
        f"{len(samples) / elapsed:.1f}",
        f"{median(times):.0f}",
        f"{p95(times):.0f}",
        f"{100 * errors / len(samples):.2f} %",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument(
        "--mode",
        default="single",
        help=f"one of {', '.join(MODES)}, or several separated by commas, "
        "run one after another in this run",
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--study", choices=("demo", "twenty"), default="demo")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cold", action="store_true", help="do not load the study first"
    )
    args = parser.parse_args(argv)
    if not (1 <= args.users <= 500 and 1 <= args.seconds <= 3600):
        parser.error("--users 1-500, --seconds 1-3600")
    modes = args.mode.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        parser.error(f"unknown mode {', '.join(unknown)}; modes: {', '.join(MODES)}")
    for name in modes:
        run(argparse.Namespace(**{**vars(args), "mode": name}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
