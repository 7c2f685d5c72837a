"""Users with salted password hashes, and the revoked-token list, in SQLite.

Passwords are hashed with scrypt (stdlib ``hashlib.scrypt``, a random 16-byte
salt per password) and compared in constant time. Revoked tokens are kept by
their ``jti`` until they would have expired anyway: in the SQLite file, or in
a shared state store (Redis, for several machines) when one is given.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
SCRYPT = dict(n=2**14, r=8, p=1, dklen=32)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


class UserError(ValueError):
    """A username or password that cannot be accepted (message says why)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hash_password(password, bytes.fromhex(salt)).split("$")[2]
    return hmac.compare_digest(candidate, digest)


# Checked against when the user does not exist, so both paths cost one scrypt.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class UserStore:
    """Users and revoked tokens in one SQLite file (shared by every worker)."""

    def __init__(self, path: str | Path, revocations: Any = None) -> None:
        self.path = Path(path)
        # a state store (services.coordination) for revoked tokens, if shared
        self.revocations = revocations
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Workers booting together: while one writes the schema (a RESERVED
        # lock), SQLite refuses another's switch to WAL at once, without
        # waiting for its busy timeout ("database is locked"); so wait here.
        deadline = time.monotonic() + 30
        while True:
            try:
                with closing(self._connect()) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for the two reads of every request
        (``exists``, ``is_revoked``): opening one per call cost more than
        the query. Each read sees every commit before it (WAL, autocommit);
        a forked process opens its own."""
        held = getattr(self._local, "db", None)
        if held is None or held[0] != os.getpid():
            held = self._local.db = (os.getpid(), self._connect())
        return held[1]

    def set_user(self, username: str, password: str) -> bool:
        """Create the user or change its password; True when it was created."""
        if not USERNAME_RE.match(username):
            raise UserError("username: 1-64 letters, digits or _ . @ -")
        if len(password) < MIN_PASSWORD:
            raise UserError(f"password: at least {MIN_PASSWORD} characters")
        with closing(self._connect()) as db, db:
            created = not db.execute(
                "SELECT 1 FROM users WHERE username = ?", (username,)
            ).fetchone()
            db.execute(
                "INSERT INTO users VALUES (?, ?, ?) ON CONFLICT(username)"
                " DO UPDATE SET password_hash = excluded.password_hash",
                (username, hash_password(password), time.time()),
            )
        return created

    def remove_user(self, username: str) -> bool:
        with closing(self._connect()) as db, db:
            return (
                db.execute("DELETE FROM users WHERE username = ?", (username,)).rowcount
                > 0
            )

    def users(self) -> list[str]:
        with closing(self._connect()) as db:
            return [
                r[0] for r in db.execute("SELECT username FROM users ORDER BY username")
            ]

    def exists(self, username: str) -> bool:
        return bool(
            self._reader()
            .execute("SELECT 1 FROM users WHERE username = ?", (username,))
            .fetchone()
        )

    def authenticate(self, username: str, password: str) -> bool:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT password_hash FROM users WHERE username = ?", (username,)
            ).fetchone()
        ok = check_password(password, row[0] if row else _DUMMY_HASH)
        return ok and row is not None

    def revoke(self, jti: str, expires: float) -> None:
        if self.revocations is not None:  # kept until it would have expired
            ttl = max(1.0, expires - time.time())
            self.revocations.set(f"revoked:{jti}", 1, expire=ttl)
            return
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR IGNORE INTO revoked_tokens VALUES (?, ?)", (jti, expires)
            )
            db.execute("DELETE FROM revoked_tokens WHERE expires < ?", (time.time(),))

    def is_revoked(self, jti: str) -> bool:
        if self.revocations is not None:
            return f"revoked:{jti}" in self.revocations
        return bool(
            self._reader()
            .execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,))
            .fetchone()
        )
