"""Orthanc's resource ids, computed from DICOM UIDs without asking Orthanc.

Orthanc names every patient, study, series and instance by the SHA-1 of its
identifying UIDs joined with ``|``, written as five dash-separated groups of
eight hex digits. The embedded store uses the same ids, so a URL such as
``/api/pacs/instances/{orthancId}/frames/1`` means the same image whichever
backend serves it.
"""

from __future__ import annotations

import hashlib
import re

ORTHANC_ID_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


def _hash(*parts: str) -> str:
    # Orthanc drops trailing spaces and NULs (DICOM padding) but keeps leading ones.
    text = "|".join(p.rstrip(" \x00") for p in parts)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(digest[i : i + 8] for i in range(0, 40, 8))


def patient_id_hash(patient_id: str) -> str:
    return _hash(patient_id)


def study_id(patient_id: str, study_uid: str) -> str:
    return _hash(patient_id, study_uid)


def series_id(patient_id: str, study_uid: str, series_uid: str) -> str:
    return _hash(patient_id, study_uid, series_uid)


def instance_id(patient_id: str, study_uid: str, series_uid: str, sop_uid: str) -> str:
    return _hash(patient_id, study_uid, series_uid, sop_uid)


def is_orthanc_id(value: str) -> bool:
    return bool(ORTHANC_ID_RE.match(value))
