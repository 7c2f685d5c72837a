"""Throwaway Redis servers for development and tests.

``LocalRedis`` starts Debian's ``redis-server`` as a child process on
127.0.0.1 with a configuration of its own (a free port, no persistence, a work
directory of its own), so it never touches a system Redis::

    with LocalRedis() as server:
        os.environ["REDIS_URL"] = server.url

Command line (prints ``REDIS_URL=...`` and serves until interrupted)::

    python -m scripts.redis_local run [--port N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from scripts.orthanc_local import _services_denied

APT_PACKAGE = "redis-server"


class RedisError(RuntimeError):
    """redis-server could not be installed or started."""


def ensure_installed() -> str:
    """The redis-server binary, installed from Debian first if need be (root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise RedisError(
            "redis-server is not installed. As root, run: "
            f"apt-get install --no-install-recommends {APT_PACKAGE}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_denied():  # the package would start a system service
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", APT_PACKAGE],
            check=True,
            env=env,
        )
    found = shutil.which("redis-server")
    if not found:
        raise RedisError("apt-get install finished but redis-server is missing")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRedis:
    """A private redis-server on 127.0.0.1 (no persistence)."""

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="redis-"))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Self:
        binary = ensure_installed()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        # a fresh config of our own, nothing from /etc/redis
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        args += ["--daemonize", "no", "--protected-mode", "yes"]
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisError(
                        f"redis-server exited ({self.process.returncode}); "
                        f"see {self.workdir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    raise RedisError(f"redis-server did not answer in {timeout} s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """Stop it at once (SIGKILL): what it held is gone."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve a private Redis until interrupted")
    run.add_argument("--port", type=int)
    args = parser.parse_args()
    with LocalRedis(port=args.port) as server:
        print(f"REDIS_URL={server.url}", flush=True)
        try:
            server.process.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
