"""A PACS backend on a plain folder of DICOM files (no Orthanc needed).

The folder is indexed into SQLite on start; every query first re-checks the
folder (at most every ``rescan_interval`` seconds, by file size and mtime) so
files copied in or deleted show up without a restart. Ids are Orthanc's
(:mod:`services.orthanc_ids`), so URLs are the same as with a real Orthanc.
Pixel data is decoded by pydicom with the pylibjpeg plugins (JPEG baseline and
lossless, JPEG-LS, JPEG 2000, RLE) and pydicom's own handlers.

# Developer notes
- One SQLite connection per call: cheap, and safe across threads and the
  processes of a gunicorn deployment that share one index file (WAL mode).
- When two files hold the same SOPInstanceUID, the first indexed wins, as
  Orthanc keeps the first copy it receives.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from . import imaging, orthanc_ids
from .imaging import ImageFormat, SliceKey
from .imaging import text as _text
from .models import (
    DecodeError,
    ImageRef,
    InstanceMeta,
    NotFound,
    SeriesSummary,
    StudySummary,
)
from .pacs import NON_IMAGE_MODALITIES, StudyQuery, series_sort_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, mtime REAL, size INTEGER, error TEXT,
    patient_id TEXT, patient_name TEXT, study_uid TEXT, study_id TEXT,
    study_date TEXT, study_description TEXT, accession TEXT,
    series_uid TEXT, series_id TEXT, series_number INTEGER,
    series_description TEXT, modality TEXT,
    sop_uid TEXT, instance_id TEXT, instance_number INTEGER,
    ipp TEXT, iop TEXT, frames INTEGER
);
CREATE INDEX IF NOT EXISTS files_study ON files(study_uid);
CREATE INDEX IF NOT EXISTS files_series ON files(series_uid);
CREATE INDEX IF NOT EXISTS files_instance ON files(instance_id);
"""
COLUMNS = (
    "path mtime size error patient_id patient_name study_uid study_id study_date "
    "study_description accession series_uid series_id series_number "
    "series_description modality sop_uid instance_id instance_number ipp iop frames"
).split()


def _index_row(path: Path, stat: os.stat_result) -> dict:
    """Read one file's header into an index row (``error`` set when unusable)."""
    row: dict = dict.fromkeys(COLUMNS)
    row.update(path=str(path), mtime=stat.st_mtime, size=stat.st_size)
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        row["error"] = f"not readable as DICOM: {exc}"
        return row
    uids = [
        _text(ds, k)
        for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ]
    if not all(uids):
        row["error"] = "missing Study/Series/SOP Instance UID"
        return row
    pid = _text(ds, "PatientID")  # leading spaces count in Orthanc ids
    study_uid, series_uid, sop_uid = uids
    modality = _text(ds, "Modality")
    # As Orthanc counts: by modality, so a file whose pixel data is cut off still
    # counts as an image (that fails to decode), not as nothing.
    has_pixels = modality not in NON_IMAGE_MODALITIES
    row.update(
        patient_id=pid,
        patient_name=_text(ds, "PatientName"),
        study_uid=study_uid,
        study_id=orthanc_ids.study_id(pid, study_uid),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        accession=_text(ds, "AccessionNumber"),
        series_uid=series_uid,
        series_id=orthanc_ids.series_id(pid, study_uid, series_uid),
        series_number=imaging.parse_int(ds.get("SeriesNumber")),
        series_description=_text(ds, "SeriesDescription"),
        modality=modality,
        sop_uid=sop_uid,
        instance_id=orthanc_ids.instance_id(pid, study_uid, series_uid, sop_uid),
        instance_number=imaging.parse_int(ds.get("InstanceNumber")),
        ipp="\\".join(str(v) for v in ds.get("ImagePositionPatient", []) or []),
        iop="\\".join(str(v) for v in ds.get("ImageOrientationPatient", []) or []),
        frames=(imaging.parse_int(ds.get("NumberOfFrames")) or 1) if has_pixels else 0,
    )
    return row


class EmbeddedStore:
    """A :class:`services.pacs.Pacs` on a folder of DICOM files.

    Parameters
    ----------
    dicom_dir
        Folder scanned recursively; hidden files and folders are skipped.
    index_path
        SQLite index file; a file in the system temp folder when omitted.
    rescan_interval
        Seconds between checks of the folder for changes.
    """

    name = "embedded"

    def __init__(
        self,
        dicom_dir: str | Path,
        *,
        index_path: str | Path | None = None,
        rescan_interval: float = 5.0,
    ) -> None:
        self.dicom_dir = Path(dicom_dir).resolve()
        self.dicom_dir.mkdir(parents=True, exist_ok=True)
        if index_path is None:
            index_path = Path(tempfile.gettempdir()) / f"embedded-{os.getpid()}.sqlite"
        self.index_path = Path(index_path)
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        self.rescan_interval = rescan_interval
        self._scan_lock = threading.Lock()
        self._last_scan = 0.0
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        self.rescan()

    # -- index -------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.index_path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def _walk(self) -> Iterator[os.DirEntry]:
        stack = [str(self.dicom_dir)]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=True):
                        yield entry

    def rescan(self) -> int:
        """Bring the index up to date with the folder; returns files (re)indexed."""
        with self._scan_lock, closing(self._connect()) as db:
            known = {
                r["path"]: (r["mtime"], r["size"])
                for r in db.execute("SELECT path, mtime, size FROM files")
            }
            changed = []
            for entry in self._walk():
                stat = entry.stat()
                if known.pop(entry.path, None) != (stat.st_mtime, stat.st_size):
                    changed.append(_index_row(Path(entry.path), stat))
            with db:
                db.executemany(
                    "DELETE FROM files WHERE path = ?", [(p,) for p in known]
                )
                db.executemany(
                    f"INSERT OR REPLACE INTO files VALUES ({','.join('?' * len(COLUMNS))})",
                    [tuple(r[c] for c in COLUMNS) for r in changed],
                )
            self._last_scan = time.monotonic()
            return len(changed)

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        if time.monotonic() - self._last_scan > self.rescan_interval:
            self.rescan()
        with closing(self._connect()) as db:
            return db.execute(sql, params).fetchall()

    def errors(self) -> dict[str, str]:
        """Files the index could not use, with the reason."""
        rows = self._query("SELECT path, error FROM files WHERE error IS NOT NULL")
        return {r["path"]: r["error"] for r in rows}

    # -- Pacs ----------------------------------------------------------------

    def ping(self) -> bool:
        return self.dicom_dir.is_dir()

    def find_studies(self, query: StudyQuery = StudyQuery()) -> list[StudySummary]:
        where, params = ["error IS NULL"], []
        if query.patient_name:
            pattern = query.patient_name.replace("%", r"\%").replace("_", r"\_")
            where.append(r"patient_name LIKE ? ESCAPE '\'")
            params.append(pattern.replace("*", "%").replace("?", "_"))
        for column, value in (
            ("patient_id", query.patient_id),
            ("accession", query.accession),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if query.date_from:
            where.append("study_date >= ?")
            params.append(query.date_from)
        if query.date_to:
            where.append("study_date <= ?")
            params.append(query.date_to)
        if query.modality:
            where.append(
                "study_uid IN (SELECT study_uid FROM files WHERE modality = ?)"
            )
            params.append(query.modality)
        rows = self._query(
            f"SELECT DISTINCT study_uid FROM files WHERE {' AND '.join(where)}"
            " ORDER BY study_date DESC, study_uid LIMIT ? OFFSET ?",
            (*params, query.limit, query.offset),
        )
        return [self.get_study(r["study_uid"]) for r in rows]

    def _instances(self, where: str, params: tuple) -> list[sqlite3.Row]:
        """One row per instance (the first file when a SOP UID is duplicated)."""
        return self._query(
            f"SELECT *, MIN(path) FROM files WHERE error IS NULL AND {where}"
            " GROUP BY instance_id ORDER BY path",
            params,
        )

    def get_study(self, study_uid: str) -> StudySummary:
        rows = self._instances("study_uid = ?", (study_uid,))
        if not rows:
            raise NotFound(f"study {study_uid} not found")
        first = rows[0]
        return StudySummary(
            study_uid=study_uid,
            study_id=first["study_id"],
            patient_name=first["patient_name"],
            patient_id=first["patient_id"],
            study_date=first["study_date"],
            study_description=first["study_description"],
            accession_number=first["accession"],
            modalities=tuple(sorted({r["modality"] for r in rows if r["modality"]})),
            series_count=len({r["series_uid"] for r in rows}),
            image_count=sum(r["frames"] for r in rows),
        )

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        rows = self._instances("study_uid = ?", (study_uid,))
        if not rows:
            raise NotFound(f"study {study_uid} not found")
        by_series: dict[str, list[sqlite3.Row]] = {}
        for r in rows:
            by_series.setdefault(r["series_uid"], []).append(r)
        series = [
            SeriesSummary(
                series_uid=uid,
                series_id=items[0]["series_id"],
                study_uid=study_uid,
                series_number=items[0]["series_number"],
                series_description=items[0]["series_description"],
                modality=items[0]["modality"],
                image_count=sum(r["frames"] for r in items),
                instance_count=len(items),
            )
            for uid, items in by_series.items()
        ]
        return sorted(series, key=series_sort_key)

    def list_images(self, study_uid: str, series_uid: str) -> list[ImageRef]:
        rows = self._instances(
            "study_uid = ? AND series_uid = ?", (study_uid, series_uid)
        )
        if not rows:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        return imaging.display_order(
            [
                SliceKey(
                    instance_id=r["instance_id"],
                    instance_uid=r["sop_uid"],
                    instance_number=r["instance_number"],
                    image_position=imaging.parse_floats(r["ipp"]),  # type: ignore[arg-type]
                    image_orientation=imaging.parse_floats(r["iop"]),
                    number_of_frames=r["frames"],
                )
                for r in rows
            ]
        )

    def series_images(self, study_uid: str) -> dict[str, list[ImageRef]]:
        return {
            s.series_uid: self.list_images(study_uid, s.series_uid)
            for s in self.list_series(study_uid)
        }

    def _path(self, instance_id: str) -> Path:
        rows = self._instances("instance_id = ?", (instance_id,))
        if not rows:
            raise NotFound(f"instance {instance_id} not found")
        return Path(rows[0]["path"])

    def get_instance_file(self, instance_id: str) -> bytes:
        return self._path(instance_id).read_bytes()

    def get_instance_meta(self, instance_id: str) -> InstanceMeta:
        path = self._path(instance_id)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return imaging.meta_from_tags(instance_id, ds)

    def get_frame(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        path = self._path(instance_id)
        try:
            return imaging.decode_frame(path, frame_index, f"instance {instance_id}")
        except DecodeError as exc:  # name the file (for logs; the API says less)
            raise DecodeError(f"{path} (instance {instance_id})", exc.reason) from exc

    def render_frame(
        self,
        instance_id: str,
        frame_index: int = 0,
        *,
        center: float | None = None,
        width: float | None = None,
        size: int | None = None,
        fmt: ImageFormat = "png",
        quality: int = 90,
    ) -> bytes:
        pixels = self.get_frame(instance_id, frame_index)
        meta = self.get_instance_meta(instance_id)
        return imaging.render(pixels, meta, center, width, fmt, size, quality)
