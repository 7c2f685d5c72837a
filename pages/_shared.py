"""Helpers shared by pages (the Pages loader skips modules starting with ``_``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import current_app

from services.imagecache import CachingPacs
from services.loader import BulkLoader, SeriesProgress, loader_stats
from services.models import ImageRef, SeriesSummary, StudySummary

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def get_pacs() -> CachingPacs:
    """The PACS the running app was built with (cached; see ``app.create_server``)."""
    return current_app.extensions["pacs"]


def get_loader() -> BulkLoader:
    return current_app.extensions["loader"]


@dataclass(frozen=True)
class StudyView:
    """What the study page shows: the study, its image series with their
    images (display order) and load progress, and the series without images."""

    study: StudySummary
    image_series: list[SeriesSummary]
    other_series: list[SeriesSummary]
    images: dict[str, list[ImageRef]]
    progress: dict[str, SeriesProgress]


def study_view(study_uid: str) -> StudyView:
    """Open a study: list it and queue its images for the bulk loader
    (``NotFound``, ``PacsUnavailable`` as the PACS says)."""
    pacs, loader = get_pacs(), get_loader()
    study = pacs.get_study(study_uid)
    series = pacs.list_series(study_uid)
    images = pacs.series_images(study_uid)
    progress = {p.series_uid: p for p in loader.prefetch(study_uid)}
    loader.touch(study_uid)
    return StudyView(
        study,
        [s for s in series if images.get(s.series_uid)],
        [s for s in series if not images.get(s.series_uid)],
        images,
        progress,
    )


def number_arg(value: str | None) -> float | None:
    """A number from the URL's query (``wc``, ``ww``), None when absent or absurd."""
    try:
        out = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return out if out is not None and abs(out) < 1e6 else None


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
