"""Soak: memory over extended use (PRD acceptance criterion 6, issue #9).

In real headless Chromium, over and over until the time is up: open a study
page (thumbnails, the page's background loading into IndexedDB), open some of
its series in the viewer, scroll with the wheel, jump to the end and back, play
cine, re-open a series seen before; then the next study. Every ``--every``
seconds a sampler thread records the browser's process memory (the page's
renderer USS, and PSS over every Chromium process) and the server's RSS (the
app runs in this process; the counting proxy runs in a child).

After the warm-up (the first ``--warmup`` fraction of the run), a least-squares
line through each series gives its slope in MB per minute: memory that levels
off has a slope near zero. A PNG of the curves goes to ``bench/soak.png``.

    .venv/bin/python -m bench.soak                  # 4 minutes
    .venv/bin/python -m bench.soak --minutes 20     # longer

Bounded in time (``--minutes``, plus setup); everything on 127.0.0.1.
"""

from __future__ import annotations

if not __package__:
    raise SystemExit("run from the project root as: .venv/bin/python -m bench.soak")

import argparse
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from bench._common import (
    ROOT,
    Proxy,
    Served,
    app_env,
    close_all,
    load_note,
    machine_note,
    make_study,
    start_orthanc,
    table,
    wait_loaded,
)
from bench.thumbnails import sign_in
from bench.viewer import process_memory, start_browser, until, viewport_rect, wheel

MB = 1e6


class Sampler(threading.Thread):
    """Memory samples every ``every`` seconds until stopped."""

    def __init__(self, driver, every: float) -> None:
        super().__init__(daemon=True)
        import psutil

        self.driver, self.every = driver, every
        self.me = psutil.Process(os.getpid())
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.stopped = threading.Event()
        self.activity = "setup"

    def run(self) -> None:
        while not self.stopped.is_set():
            proc = process_memory(self.driver)
            self.samples.append(
                dict(
                    t=time.monotonic() - self.t0,
                    renderer_uss=proc["renderer_uss"] / MB,
                    chromium_pss=proc["all_pss"] / MB,
                    server_rss=self.me.memory_info().rss / MB,
                    activity=self.activity,
                )
            )
            self.stopped.wait(self.every)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per minute."""
    n = len(points)
    if n < 3:
        return float("nan")
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    sxy = sum((t - mx) * (v - my) for t, v in points)
    return 60 * sxy / sxx if sxx else float("nan")


def thumbnails_shown(driver) -> bool:
    return driver.execute_script(
        "const t = [...document.querySelectorAll('#series-grid .thumb-img')];"
        "return t.length > 0 && t.every(i => i.complete && i.naturalWidth > 0);"
    )


def visit_study(driver, base: str, study, series_uids: list[str], sampler) -> int:
    """One round on one study; returns the number of viewer openings."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sampler.activity = "study page"
    driver.get(f"{base}/study/{study.study_uid}")
    deadline = time.monotonic() + 30
    while not thumbnails_shown(driver):
        if time.monotonic() > deadline:
            raise TimeoutError("thumbnails")
        time.sleep(0.1)
    time.sleep(2)  # the page's background loading goes on meanwhile
    opened = 0
    for uid in series_uids:
        sampler.activity = "viewer"
        driver.get(f"{base}/viewer/{study.study_uid}/{uid}")
        until(driver, "s.shown === s.n", 30, "the first image painted")
        opened += 1
        rect = viewport_rect(driver)
        for _ in range(30):
            wheel(driver, 100, rect)
        keys = driver.find_element(By.ID, "viewer-viewport")
        keys.send_keys(Keys.END)
        until(driver, "s.shown === s.total", 30, "the last image")
        keys.send_keys(Keys.HOME)
        until(driver, "s.shown === 1", 30, "the first image")
        sampler.activity = "cine"
        keys.send_keys(Keys.SPACE)
        time.sleep(2)
        keys.send_keys(Keys.SPACE)
    return opened


def plot(samples: list[dict], warm: float, path: Path, slopes: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    minutes = [s["t"] / 60 for s in samples]
    for key, label in (
        ("renderer_uss", "page renderer USS"),
        ("chromium_pss", "all Chromium PSS"),
        ("server_rss", "server RSS (app + bench)"),
    ):
        ax.plot(
            minutes,
            [s[key] for s in samples],
            label=f"{label} ({slopes[key]:+.1f} MB/min after warm-up)",
        )
    ax.axvspan(0, warm / 60, color="grey", alpha=0.15, label="warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak: studies, viewer, wheel, cine, re-opens (bench/soak.py)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--every", type=float, default=2.0, help="seconds per sample")
    parser.add_argument("--warmup", type=float, default=0.3, help="fraction of the run")
    parser.add_argument("--series", type=int, default=3, help="viewer opens per study")
    parser.add_argument("--png", default=str(ROOT / "bench" / "soak.png"))
    args = parser.parse_args(argv)
    if not 0.5 <= args.minutes <= 240 or not 0 < args.warmup < 0.9:
        parser.error("--minutes 0.5..240, --warmup 0..0.9")
    machine = machine_note()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    orthanc = proxy = served = driver = server = sampler = None
    try:
        studies = [
            make_study(tmp / "dicom", "demo"),
            make_study(tmp / "dicom", "twenty"),
        ]
        orthanc = start_orthanc(tmp / "orthanc", studies)
        proxy = Proxy(orthanc.url)
        os.environ.update(app_env(proxy.url, orthanc, tmp / "app"))
        import app as app_module

        server = app_module.create_dash_app().server
        served = Served(server)
        loader = server.extensions["loader"]
        loader.start()
        for study in studies:
            loader.prefetch(study.study_uid)
            wait_loaded(server, study.study_uid, 300)
        driver = start_browser(tmp / "chrome-profile", "1400,900")
        sign_in(driver, served.url)
        sampler = Sampler(driver, args.every)
        sampler.start()
        end = time.monotonic() + 60 * args.minutes
        rounds = opened = 0
        while time.monotonic() < end:
            study = studies[rounds % len(studies)]
            uids = [s.series_uid for s in study.series]
            # a different few each round, some seen before (re-opens)
            start = (rounds // len(studies)) % len(uids)
            picks = [uids[(start + k) % len(uids)] for k in range(args.series)]
            opened += visit_study(driver, served.url, study, picks, sampler)
            rounds += 1
        sampler.stopped.set()
        sampler.join()
        samples = sampler.samples
        warm = args.warmup * samples[-1]["t"]
        after = [s for s in samples if s["t"] >= warm]
        keys = ("renderer_uss", "chromium_pss", "server_rss")
        slopes = {k: slope_per_minute([(s["t"], s[k]) for s in after]) for k in keys}
        plot(samples, warm, Path(args.png), slopes)

        def at(rows: list[dict], key: str) -> float:
            return sorted(r[key] for r in rows)[len(rows) // 2]

        third = max(1, len(after) // 3)
        print(f"\n{machine}; load at the end {load_note()}")
        print(
            f"{args.minutes:g} min: {rounds} study rounds, {opened} viewer openings, "
            f"{len(samples)} samples every {args.every:g} s; warm-up {warm:.0f} s\n"
        )
        print(
            table(
                [
                    "memory (MB)",
                    "first sample",
                    "peak",
                    "median, first third after warm-up",
                    "median, last third",
                    "slope after warm-up, MB/min",
                ],
                [
                    [
                        k,
                        f"{samples[0][k]:.0f}",
                        f"{max(s[k] for s in samples):.0f}",
                        f"{at(after[:third], k):.0f}",
                        f"{at(after[-third:], k):.0f}",
                        f"{slopes[k]:+.2f}",
                    ]
                    for k in keys
                ],
            )
        )
        print(f"\nplot: {args.png}")
        return 0
    finally:
        if sampler is not None:
            sampler.stopped.set()
        close_all(
            driver=driver,
            server=server,
            served=served,
            proxy=proxy,
            orthanc=orthanc,
            tmp=tmp,
        )


if __name__ == "__main__":
    raise SystemExit(main())
