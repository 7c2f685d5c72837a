"""Shared plumbing for the benchmarks (not a benchmark itself).

- a private Orthanc (``scripts.orthanc_local.LocalOrthanc``) loaded with
  generated studies (``services.demo``);
- ``tests.proxy.CountingProxy`` between the app and Orthanc, by default in a
  child process so that forwarding ~100 MB through Python does not compete
  for the app's GIL (``--inproc-proxy`` puts it in this process, as the tests do);
- the real app served by werkzeug on 127.0.0.1 in a thread;
- clearing the server caches between repetitions;
- figures: median, p95 (nearest rank), and a small stack sampler that tells
  where threads of this process spend their time.

Every loop here is bounded in count and in time. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import collections
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402  (the real one: run the benches with ``-m``)

from tests.served import Served  # noqa: E402, F401  (re-exported for the benches)

ADMIN = ("bench", "bench-password-1")
PIXEL_MARKERS = ("/file", "/frames/", "/numpy", "/preview", "/rendered", "/image-")


# -- figures ---------------------------------------------------------------------


def p95(values: Iterable[float]) -> float:
    """Nearest-rank 95th percentile (the maximum when there are < 20 values)."""
    data = sorted(values)
    if not data:
        return float("nan")
    return data[max(0, math.ceil(0.95 * len(data)) - 1)]


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table (also readable on a terminal)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(r: list[str]) -> str:
        return (
            "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        )

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def is_pixel_path(path: str) -> bool:
    return any(m in path for m in PIXEL_MARKERS)


def machine_note() -> str:
    import platform

    return (
        f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}; "
        f"load average at start {load_note()}"
    )


def load_note() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews timings)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def wait_for(
    check: Callable[[], object], timeout: float, poll: float = 0.05, what: str = ""
) -> object:
    """Poll ``check`` until it returns a truthy value; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / poll) + 2):
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what or check}")


# -- studies and Orthanc ---------------------------------------------------------


def make_study(root: Path, which: str):
    """Generate ``twenty`` (20 series, 193 images) or ``demo`` (277 images)."""
    from services.demo import DEFAULT_DEMO, generate_study, many_series_specs

    if which == "twenty":
        return generate_study(
            root / "twenty",
            many_series_specs(20),
            patient_name="BENCH^TWENTY",
            patient_id="BENCH20",
            accession="BENCH20",
            seed=20,
        )
    if which == "demo":
        return generate_study(
            root / "demo",
            DEFAULT_DEMO,
            patient_name="BENCH^DEMO",
            patient_id="BENCHDEMO",
            accession="BENCHDEMO",
            seed=1,
        )
    raise ValueError(which)


def study_files(study) -> list[Path]:
    return [f for s in study.series for f in s.files]


def image_count(study) -> int:
    return sum(s.image_count for s in study.series)


def start_orthanc(workdir: Path, studies: list) -> object:
    """A started LocalOrthanc with the studies uploaded (caller stops it)."""
    from scripts.orthanc_local import LocalOrthanc

    orthanc = LocalOrthanc(workdir=workdir)
    orthanc.start()
    try:
        for study in studies:
            orthanc.upload(study_files(study))
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


def orthanc_study_id(orthanc, study_uid: str) -> str:
    s = requests.Session()
    s.trust_env = False
    s.auth = orthanc.auth
    answers = s.post(f"{orthanc.url}/tools/lookup", data=study_uid, timeout=10).json()
    return next(a["ID"] for a in answers if a["Type"] == "Study")


def orthanc_frames(orthanc, study_uid: str) -> list[tuple[str, int]]:
    """(instance id, frame index) of every image of the study, straight from Orthanc."""
    s = requests.Session()
    s.trust_env = False
    s.auth = orthanc.auth
    sid = orthanc_study_id(orthanc, study_uid)
    out = []
    for inst in s.get(f"{orthanc.url}/studies/{sid}/instances", timeout=30).json():
        frames = int(inst["MainDicomTags"].get("NumberOfFrames") or 1)
        out.extend((inst["ID"], k) for k in range(frames))
    return out


def proc_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def orthanc_cpu_seconds(orthanc) -> float:
    """User + system CPU seconds of the Orthanc process so far."""
    return proc_cpu_seconds(orthanc.pid)


# -- the counting proxy ----------------------------------------------------------


def _proxy_child(upstream: str, conn) -> None:  # runs in the child process
    import logging

    from tests.proxy import CountingProxy

    # "connection pool is full" when a naive client opens dozens of connections
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    with CountingProxy(upstream) as proxy:
        conn.send(proxy.url)
        for _ in range(1_000_000):  # bounded; exits on "stop", EOF or 10 idle minutes
            if not conn.poll(600):
                break
            try:
                command = conn.recv()
            except EOFError:
                break
            if command == "stop":
                break
            if command == "reset":
                proxy.reset()
                conn.send(None)
            elif command == "stats":
                with proxy.lock:
                    conn.send(
                        dict(
                            forwarded=proxy.forwarded,
                            max_in_flight=proxy.max_in_flight,
                            in_flight=proxy.in_flight,
                            paths=list(proxy.paths),
                        )
                    )


class Proxy:
    """CountingProxy in a child process (default) or in this one; same interface."""

    def __init__(self, upstream: str, inproc: bool = False) -> None:
        self.inproc = inproc
        if inproc:
            from tests.proxy import CountingProxy

            self._proxy = CountingProxy(upstream).__enter__()
            self.url = self._proxy.url
        else:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(
                target=_proxy_child, args=(upstream, child), daemon=True
            )
            self._proc.start()
            if not self._conn.poll(30):
                raise RuntimeError("the proxy process did not start")
            self.url = self._conn.recv()
        self._lock = threading.Lock()

    def _ask(self, command: str):
        with self._lock:
            self._conn.send(command)
            if not self._conn.poll(30):
                raise RuntimeError("the proxy process does not answer")
            return self._conn.recv()

    def cpu_seconds(self) -> float:
        """CPU seconds of the proxy's child process (nan when in-process)."""
        return float("nan") if self.inproc else proc_cpu_seconds(self._proc.pid)

    def reset(self) -> None:
        if self.inproc:
            self._proxy.reset()
        else:
            self._ask("reset")

    def stats(self) -> dict:
        """forwarded, max_in_flight, paths, and pixel / metadata counts."""
        if self.inproc:
            p = self._proxy
            with p.lock:
                out = dict(
                    forwarded=p.forwarded,
                    max_in_flight=p.max_in_flight,
                    in_flight=p.in_flight,
                    paths=list(p.paths),
                )
        else:
            out = self._ask("stats")
        pixel = sum(1 for path in out["paths"] if is_pixel_path(path))
        out.update(pixel=pixel, metadata=out["forwarded"] - pixel)
        return out

    def close(self) -> None:
        if self.inproc:
            self._proxy.__exit__(None, None, None)
            return
        try:
            with self._lock:
                self._conn.send("stop")
        except (OSError, ValueError):
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()  # our own child, by its handle
            self._proc.join(5)


# -- the app -----------------------------------------------------------------------


def app_settings(proxy_url: str, orthanc, root: Path):
    from settings import Settings

    return Settings(
        orthanc_url=proxy_url,
        orthanc_username=orthanc.auth[0],
        orthanc_password=orthanc.auth[1],
        cache_dir=root / "cache",
        users_db=root / "users.sqlite",
        admin_username=ADMIN[0],
        admin_password=ADMIN[1],
        login_rate_limit="1000 per minute",
        api_rate_limit="1000000 per minute",
    )


def app_env(proxy_url: str, orthanc, root: Path) -> dict[str, str]:
    """The same settings as environment variables (for ``app.create_dash_app()``)."""
    return dict(
        ORTHANC_URL=proxy_url,
        ORTHANC_USERNAME=orthanc.auth[0],
        ORTHANC_PASSWORD=orthanc.auth[1],
        CACHE_DIR=str(root / "cache"),
        USERS_DB=str(root / "users.sqlite"),
        ADMIN_USERNAME=ADMIN[0],
        ADMIN_PASSWORD=ADMIN[1],
        LOGIN_RATE_LIMIT="1000 per minute",
        API_RATE_LIMIT="1000000 per minute",
    )


def api_session(base_url: str, pool: int = 10) -> requests.Session:
    """A requests session signed in through POST /api/token/ (Bearer header)."""
    s = requests.Session()
    s.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool)
    s.mount("http://", adapter)
    answer = s.post(
        f"{base_url}/api/token/",
        json={"username": ADMIN[0], "password": ADMIN[1]},
        timeout=10,
    )
    answer.raise_for_status()
    s.headers["Authorization"] = f"Bearer {answer.json()['access']}"
    return s


def close_all(
    *, driver=None, server=None, served=None, proxy=None, orthanc=None, tmp=None
) -> None:
    """Stop what a bench started, the browser first, the files last (any may be None)."""
    if driver is not None:
        driver.quit()
    if server is not None:
        server.extensions["loader"].stop()
    if served is not None:
        served.close()
    if proxy is not None:
        proxy.close()
    if orthanc is not None:
        orthanc.stop()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


def clear_server(server, proxy: Proxy | None = None) -> None:
    """Empty every server-side cache and the loader's queue; restart the loader.

    Beyond the image cache and the shared state this also empties the Orthanc
    client's HTTP metadata cache (requests-cache, CACHE_DIR/orthanc-http) and its
    in-memory tag memo, so that "cold" means cold."""
    ext = server.extensions
    if ext["loader"].kick is None:  # else children load: stopping would end them
        ext["loader"].stop()
    ext["pacs"].images.clear()
    ext["state"].clear()
    inner = ext["pacs"].inner
    cache = getattr(getattr(inner, "session", None), "cache", None)
    if cache is not None:
        cache.clear()
    if hasattr(inner, "_meta"):
        inner._meta.clear()
    if proxy is not None:
        proxy.reset()
    ext["loader"].start()  # (nothing when children load)


def wait_loaded(server, study_uid: str, timeout: float) -> None:
    """Wait in-process until the loader says every series of the study is complete."""
    loader = server.extensions["loader"]
    wait_for(
        lambda: all(p.state == "complete" for p in loader.progress(study_uid)),
        timeout,
        poll=0.1,
        what="the bulk loader",
    )


# -- where the time goes -------------------------------------------------------------


class CallTimer:
    """Times calls by wrapping attributes of live objects (bench-side only: the
    app's code is untouched; the wrappers are removed on exit).

    ``targets`` maps a label to ``(owner, attribute name)``; the owner may be an
    instance (instance attribute lookups see the wrapper) or a module (for
    functions called as ``module.func``)."""

    def __init__(
        self, targets: dict[str, tuple[object, str]], split_loader: bool = False
    ) -> None:
        self.targets = targets
        self.split_loader = split_loader  # count the bulk loader's threads apart
        self.count: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()
        self._saved: list[tuple[object, str, object, bool]] = []
        self._lock = threading.Lock()

    def __enter__(self) -> CallTimer:
        for label, (owner, name) in self.targets.items():
            original = getattr(owner, name)
            had_own = isinstance(owner, type(sys)) or name in getattr(
                owner, "__dict__", {}
            )
            self._saved.append((owner, name, original, had_own))
            setattr(owner, name, self._wrap(label, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original, had_own in reversed(self._saved):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # back to the class's method
        self._saved.clear()

    def _wrap(self, label: str, fn):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                key = label
                if self.split_loader and threading.current_thread().name.startswith(
                    "bulk"
                ):
                    key = f"{label} [loader]"
                with self._lock:
                    self.count[key] += 1
                    self.total[key] += dt

        return timed

    def rows(self) -> list[list[object]]:
        labels = []
        for label in self.targets:
            labels.append(label)
            if self.split_loader:
                labels.append(f"{label} [loader]")
        return [
            [
                label,
                self.count[label],
                f"{self.total[label]:.3f}",
                f"{1000 * self.total[label] / self.count[label]:.2f}"
                if self.count[label]
                else "-",
            ]
            for label in labels
            if self.count[label] or not label.endswith("[loader]")
        ]


class StackSampler:
    """Samples the Python stacks of this process's threads whose name starts
    with one of ``prefixes`` every ``interval`` s. Per prefix it counts idle
    samples (a pool thread waiting for work, a thread in ``Event.wait``) and,
    for the others, the innermost frame and the innermost project frame.
    A thread waiting for the GIL is counted where it waits, so on a busy
    2-core machine "busy" includes waiting for the interpreter."""

    IDLE = {("thread.py", "_worker"), ("threading.py", "wait")}

    def __init__(self, prefixes: tuple[str, ...], interval: float = 0.005) -> None:
        self.prefixes, self.interval = prefixes, interval
        self.samples: collections.Counter[str] = collections.Counter()
        self.idle: collections.Counter[str] = collections.Counter()
        self.leaf: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.own: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        root = str(ROOT)
        skip = (str(ROOT / ".venv"), str(ROOT / "bench"))
        for _ in range(10_000_000):
            if self._stop.wait(self.interval):
                return
            groups = {}
            for t in threading.enumerate():
                for prefix in self.prefixes:
                    if t.name.startswith(prefix):
                        groups[t.ident] = prefix
                        break
            frames = sys._current_frames()
            for ident, group in groups.items():
                frame = frames.get(ident)
                if frame is None:
                    continue
                self.samples[group] += 1
                code = frame.f_code
                leaf = (Path(code.co_filename).name, code.co_name)
                if leaf in self.IDLE:
                    self.idle[group] += 1
                    continue
                self.leaf[group][f"{leaf[0]}:{frame.f_lineno} {leaf[1]}"] += 1
                f = frame
                for _depth in range(200):
                    if f is None:
                        break
                    name = f.f_code.co_filename
                    if name.startswith(root) and not name.startswith(skip):
                        rel = Path(name).relative_to(ROOT)
                        self.own[group][f"{rel}:{f.f_lineno} {f.f_code.co_name}"] += 1
                        break
                    f = f.f_back

    def report(self, top: int = 10) -> str:
        lines = []
        for group in self.prefixes:
            total = self.samples[group]
            if not total:
                continue
            busy = total - self.idle[group]
            lines.append(
                f"threads {group}*: {total} samples, idle {100 * self.idle[group] / total:.0f} %"
                f" (waiting for work or in Event.wait), busy {100 * busy / total:.0f} %"
            )
            for title, counter in (
                ("busy samples by innermost frame", self.leaf[group]),
                ("busy samples by innermost project frame", self.own[group]),
            ):
                lines.append(f"  {title} (% of busy):")
                for key, n in counter.most_common(top):
                    lines.append(f"    {100 * n / max(busy, 1):5.1f} %  {key}")
        return "\n".join(lines)
