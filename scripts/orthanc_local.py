"""Throwaway Orthanc servers for development and tests.

``LocalOrthanc`` starts Debian's Orthanc binary as a child process with its own
configuration, storage and log in a work directory, HTTP on a loopback URL with
basic auth, the DICOMweb and GDCM plugins loaded, and no DICOM (C-STORE) port.

    with LocalOrthanc() as orthanc:
        orthanc.upload(Path("data").glob("*.dcm"))
        requests.get(f"{orthanc.url}/studies", auth=orthanc.auth)

Command line::

    python -m scripts.orthanc_local install
    python -m scripts.orthanc_local run [--port N] [--load DIR ...] [--password P]

Orthanc 1.10.1 has no option to choose the listening interface: the HTTP port is
bound on every interface, but ``RemoteAccessAllowed: false`` makes Orthanc refuse
any client that is not on the loopback, and every request needs the password.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import requests

ORTHANC_BIN = "/usr/sbin/Orthanc"
PLUGIN_DIR = "/usr/share/orthanc/plugins"
PLUGIN_FILES = ("libOrthancDicomWeb.so", "libOrthancGdcm.so")
APT_PACKAGES = ("orthanc", "orthanc-dicomweb", "orthanc-gdcm")
DEFAULT_PORT = 8042  # the system service's port, never used here unless asked
PORT_ATTEMPTS = 5
POLL_INTERVAL = 0.1  # seconds
_PORT_IN_USE = "already in use"  # Orthanc's error 2003 on a taken HTTP port

_apt_updated = False


class OrthancError(RuntimeError):
    """Orthanc could not be installed or started, or answered with an HTTP error."""


class _PortInUse(OrthancError):
    pass


def ensure_installed() -> str:
    """Return the Orthanc binary, installing the Debian packages first if needed (root only)."""
    global _apt_updated
    if os.access(ORTHANC_BIN, os.X_OK):
        return ORTHANC_BIN
    if os.geteuid() != 0:
        raise OrthancError(
            f"Orthanc is not installed ({ORTHANC_BIN} missing). As root, run: "
            f"apt-get install --no-install-recommends {' '.join(APT_PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_denied():
        if not _apt_updated:
            subprocess.run(["apt-get", "update"], check=True, env=env)
            _apt_updated = True
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
            check=True,
            env=env,
        )
    if not _port_is_free(DEFAULT_PORT):  # the package's service started anyway
        subprocess.run(["service", "orthanc", "stop"], check=False, env=env)
    if not os.access(ORTHANC_BIN, os.X_OK):
        raise OrthancError(
            f"apt-get install finished but {ORTHANC_BIN} is still missing"
        )
    return ORTHANC_BIN


@contextmanager
def _services_denied() -> Iterator[None]:
    """Forbid package scripts to start services (policy-rc.d), unless a policy exists."""
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        yield
    finally:
        if created:
            policy.unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # Orthanc binds every interface
        except OSError:
            return False
        return True


class LocalOrthanc:
    """An Orthanc child process with its own config, storage and log in ``workdir``."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        username: str = "orthanc",
        password: str | None = None,
        plugins: bool = True,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self._fixed_port = port
        self.port = port
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.plugins = plugins
        self.name = f"local-{secrets.token_hex(4)}"
        self.url = ""
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()
        self._session.auth = self.auth

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def env(self) -> dict[str, str]:
        """The settings the viewer reads to reach this server."""
        return {
            "ORTHANC_URL": self.url,
            "ORTHANC_USERNAME": self.username,
            "ORTHANC_PASSWORD": self.password,
        }

    def start(self, timeout: float = 20) -> Self:
        if self.running:
            return self
        ensure_installed()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-local-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else PORT_ATTEMPTS
        for attempt in range(attempts):
            self.port = self._fixed_port or _free_port()
            try:
                self._launch(timeout)
                return self
            except _PortInUse:
                if attempt == attempts - 1:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _config(self) -> dict:
        assert self.workdir is not None
        storage = self.workdir / "storage"
        plugins = (
            [f"{PLUGIN_DIR}/{name}" for name in PLUGIN_FILES] if self.plugins else []
        )
        return {
            "Name": self.name,
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "DicomServerEnabled": False,
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": plugins,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "Gdcm": {"Enable": True},
            "SaveJobs": False,
            "WebDavEnabled": False,
        }

    def _launch(self, timeout: float) -> None:
        assert self.workdir is not None
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2))
        self.log_path = self.workdir / "orthanc.log"
        self.url = f"http://127.0.0.1:{self.port}"
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [ORTHANC_BIN, str(config)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                tail = self.log_tail()
                error = _PortInUse if _PORT_IN_USE in tail else OrthancError
                raise error(f"Orthanc exited on port {self.port}:\n{tail}")
            if self._answers():
                return
            time.sleep(POLL_INTERVAL)
        raise OrthancError(
            f"Orthanc did not answer within {timeout}s:\n{self.log_tail()}"
        )

    def _answers(self) -> bool:
        try:
            answer = self._session.get(f"{self.url}/system", timeout=2)
        except requests.ConnectionError:
            return False
        if answer.status_code != 200:
            return False
        # The name tells our server from another one already on this port.
        return answer.json().get("Name") == self.name

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(
            self.log_path.read_text(errors="replace").splitlines()[-lines:]
        )

    def stop(self, timeout: float = 10) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._session.close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def upload(self, paths: Iterable[Path]) -> list[dict]:
        """POST each file to /instances; return Orthanc's answers (Status "Success" or "AlreadyStored")."""
        answers = []
        for path in paths:
            answer = self._session.post(
                f"{self.url}/instances",
                data=Path(path).read_bytes(),
                headers={"Content-Type": "application/dicom"},
                timeout=60,
            )
            if not answer.ok:
                body = " ".join(answer.text.split())
                raise OrthancError(
                    f"upload of {path}: HTTP {answer.status_code}: {body}"
                )
            answers.append(answer.json())
        return answers

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def is_dicom_file(path: Path) -> bool:
    """*.dcm, or any file with the 'DICM' magic after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def find_dicom_files(directories: Iterable[Path]) -> Iterator[Path]:
    for directory in directories:
        for path in sorted(Path(directory).rglob("*")):
            if path.is_file() and is_dicom_file(path):
                yield path


def _run(args: argparse.Namespace) -> int:
    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    orthanc = LocalOrthanc(port=args.port, password=args.password)
    try:
        orthanc.start()
        loaded = failed = 0
        for path in find_dicom_files(args.load):
            try:
                orthanc.upload([path])
                loaded += 1
            except OrthancError as error:
                failed += 1
                print(f"skipped: {error}", file=sys.stderr)
        if args.load:
            print(f"uploaded {loaded} files ({failed} rejected)")
        print(f"Orthanc {orthanc.url} (pid {orthanc.pid}, log {orthanc.log_path})")
        for key, value in orthanc.env().items():
            print(f"{key}={value}")
        print("Ctrl-C to stop", flush=True)
        while orthanc.running:
            time.sleep(0.5)
        print(f"Orthanc exited:\n{orthanc.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        orthanc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.orthanc_local",
        description="Throwaway local Orthanc servers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "install", help="install the Debian Orthanc packages if missing"
    )
    run = commands.add_parser("run", help="run a local Orthanc until Ctrl-C")
    run.add_argument("--port", type=int, help="HTTP port (default: a free random one)")
    run.add_argument(
        "--load",
        type=Path,
        nargs="+",
        action="extend",
        default=[],
        metavar="DIR",
        help="upload every DICOM file under these directories",
    )
    run.add_argument("--password", help="password of user 'orthanc' (default: random)")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            print(ensure_installed())
            return 0
        return _run(args)
    except OrthancError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
