"""Every setting of the app, read from the environment in this one place.

Each variable is documented in ``.env.example``; ``tests/test_settings.py`` pins
the names, because deploy scripts and other clients rely on them. Services never
read the environment: they get plain values from here through constructors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
MAX_ORTHANC_IN_FLIGHT = 5
# the bulk loader's processes (services.loaderprocess); 0: in the web process
LOADER_PROCESSES = min(2, os.cpu_count() or 1)


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def parse_origins(value: str) -> tuple[str, ...]:
    """``CORS_ORIGINS``: comma-separated ``scheme://host[:port]``, exact origins
    only (no path, no wildcard: credentials go to these origins)."""
    origins = []
    for item in (v.strip().rstrip("/") for v in value.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username
            or any(c in item for c in "*?[]()^$\\ ")
        ):
            raise ValueError(
                f"CORS_ORIGINS: {item!r} is not an origin like https://app.example:8443"
            )
        origins.append(item.lower())
    return tuple(origins)


@dataclass(frozen=True)
class Settings:
    orthanc_url: str = ""
    orthanc_username: str = ""
    orthanc_password: str = ""
    orthanc_max_in_flight: int = MAX_ORTHANC_IN_FLIGHT
    dicom_dir: Path = ROOT / "var" / "dicom"
    demo_study: bool = True
    cache_dir: Path = ROOT / "var" / "cache"
    cache_size_mb: int = 2048
    loader_workers: int = 4
    loader_processes: int = LOADER_PROCESSES
    jwt_secret_key: str = ""
    admin_username: str = ""
    admin_password: str = ""
    users_db: Path = ROOT / "var" / "users.sqlite"
    access_token_minutes: int = 15
    refresh_token_days: int = 7
    login_rate_limit: str = "10 per minute"
    api_rate_limit: str = "6000 per minute"
    trusted_proxies: int = 0
    redis_url: str = ""
    cors_origins: tuple[str, ...] = ()
    app_env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8050

    @property
    def backend(self) -> str:
        return "orthanc" if self.orthanc_url else "embedded"

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def demo_mode(self) -> bool:
        """The embedded store outside production: a demo user may exist."""
        return not self.production and self.backend == "embedded"

    def pacs_kwargs(self) -> dict:
        """Arguments for :func:`services.pacs.open_pacs`."""
        return dict(
            orthanc_url=self.orthanc_url,
            orthanc_username=self.orthanc_username,
            orthanc_password=self.orthanc_password,
            dicom_dir=self.dicom_dir,
            cache_dir=self.cache_dir,
            max_in_flight=self.orthanc_max_in_flight,
        )

    def stack_kwargs(self) -> dict:
        """Arguments for :func:`services.stack.open_stack` (web and Celery workers)."""
        return dict(
            self.pacs_kwargs(),
            cache_size_mb=self.cache_size_mb,
            loader_workers=self.loader_workers,
            loader_processes=self.loader_processes,
            redis_url=self.redis_url,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        get = lambda name, default="": env.get(name, default).strip()  # noqa: E731
        max_in_flight = int(get("ORTHANC_MAX_IN_FLIGHT", str(MAX_ORTHANC_IN_FLIGHT)))
        if not 1 <= max_in_flight <= MAX_ORTHANC_IN_FLIGHT and not _bool(
            env.get("ORTHANC_ALLOW_MORE_THAN_5"), False
        ):
            raise ValueError(
                f"ORTHANC_MAX_IN_FLIGHT must be 1..{MAX_ORTHANC_IN_FLIGHT} "
                "(set ORTHANC_ALLOW_MORE_THAN_5=1 to go higher on purpose)"
            )
        return cls(
            orthanc_url=get("ORTHANC_URL").rstrip("/"),
            orthanc_username=get("ORTHANC_USERNAME"),
            orthanc_password=env.get("ORTHANC_PASSWORD", ""),
            orthanc_max_in_flight=max_in_flight,
            dicom_dir=Path(get("DICOM_DIR") or cls.dicom_dir),
            demo_study=_bool(env.get("DEMO_STUDY"), True),
            cache_dir=Path(get("CACHE_DIR") or cls.cache_dir),
            cache_size_mb=int(get("CACHE_SIZE_MB", "2048")),
            loader_workers=int(get("LOADER_WORKERS", "4")),
            loader_processes=int(get("LOADER_PROCESSES", str(LOADER_PROCESSES))),
            jwt_secret_key=env.get("JWT_SECRET_KEY", ""),
            admin_username=get("ADMIN_USERNAME"),
            admin_password=env.get("ADMIN_PASSWORD", ""),
            users_db=Path(get("USERS_DB") or cls.users_db),
            access_token_minutes=int(get("ACCESS_TOKEN_MINUTES", "15")),
            refresh_token_days=int(get("REFRESH_TOKEN_DAYS", "7")),
            login_rate_limit=get("LOGIN_RATE_LIMIT", cls.login_rate_limit),
            api_rate_limit=get("API_RATE_LIMIT", cls.api_rate_limit),
            trusted_proxies=int(get("TRUSTED_PROXIES", "0")),
            redis_url=get("REDIS_URL"),
            cors_origins=parse_origins(get("CORS_ORIGINS")),
            app_env=get("APP_ENV", "development").lower(),
            host=get("HOST", "127.0.0.1"),
            port=int(get("PORT", "8050")),
        )
