"""Helpers shared by pages (the Pages loader skips modules starting with ``_``)."""

from __future__ import annotations

import re

from flask import current_app

from services.imagecache import CachingPacs
from services.loader import BulkLoader, loader_stats

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def get_pacs() -> CachingPacs:
    """The PACS the running app was built with (cached; see ``app.create_server``)."""
    return current_app.extensions["pacs"]


def get_loader() -> BulkLoader:
    return current_app.extensions["loader"]


def valid_uid(value: str | None) -> bool:
    return bool(value) and len(value) <= 64 and bool(UID_RE.match(value))


def patient_name(value: str) -> str:
    """DICOM PN ``FAMILY^GIVEN^MIDDLE`` as ``FAMILY, GIVEN MIDDLE``."""
    parts = [p for p in value.split("^")] if value else []
    if not parts:
        return "(no name)"
    given = " ".join(p for p in parts[1:3] if p)
    return f"{parts[0]}, {given}" if given else parts[0]


def study_date(value: str) -> str:
    return (
        f"{value[:4]}-{value[4:6]}-{value[6:]}"
        if len(value) == 8
        else value or "no date"
    )


def get_stats() -> dict:
    """The live loader panel's figures (also ``GET /api/loader/stats``)."""
    ext = current_app.extensions
    return loader_stats(ext["pacs"], ext["loader"], ext.get("slots"))
